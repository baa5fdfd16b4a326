"""`marconi-plan inspect MODEL`: per-layer state sizes and FLOP costs."""

from __future__ import annotations

from marconi.cli.common import add_format_argument, add_model_argument

HELP = "per-layer state sizes and FLOP costs of a model"
DESCRIPTION = "Trace MODEL without allocating weights and print per-layer KV bytes per token, " \
              "fixed state bytes and FLOP polynomials."


def add_arguments(p):
    add_model_argument(p)
    add_format_argument(p)


def run(args) -> int:
    raise NotImplementedError("inspect: passes/ is not built yet")

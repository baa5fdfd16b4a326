"""`marconi-plan simulate`: replay a trace through cache policies."""

from __future__ import annotations

from marconi.cli.common import (add_capacity_argument, add_format_argument, add_model_argument,
                                add_trace_arguments)

HELP = "replay a trace through cache policies and report hit rates, FLOP savings and TTFT"
DESCRIPTION = HELP


def add_arguments(p):
    add_model_argument(p)
    add_trace_arguments(p, required=True)
    add_capacity_argument(p, required=True)
    add_format_argument(p)


def run(args) -> int:
    raise NotImplementedError("simulate: runtime/ is not built yet")

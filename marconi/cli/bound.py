"""`marconi-plan bound`: the offline optimum (upper bound on FLOP savings)."""

from __future__ import annotations

from marconi.cli.common import (add_capacity_argument, add_format_argument, add_model_argument,
                                add_trace_arguments)

HELP = "offline optimum: LP upper bound and a rounded feasible schedule"
DESCRIPTION = HELP


def add_arguments(p):
    add_model_argument(p)
    add_trace_arguments(p, required=True)
    add_capacity_argument(p, required=True)
    add_format_argument(p)


def run(args) -> int:
    raise NotImplementedError("bound: planner/ is not built yet")

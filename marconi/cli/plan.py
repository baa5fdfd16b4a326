"""`marconi-plan MODEL`: the main job: inspect, plan, simulate against baselines, write runtime.yaml."""

from __future__ import annotations

from marconi.cli.common import (add_capacity_argument, add_format_argument, add_model_argument,
                                add_trace_arguments)

HELP = "the main job: plan checkpoints, admission and eviction for MODEL (default subcommand)"
DESCRIPTION = HELP


def add_arguments(p):
    add_model_argument(p)
    add_trace_arguments(p, required=False)
    add_capacity_argument(p, required=False)
    p.add_argument("-o", "--output", default="runtime.yaml", help="where to write the plan")
    add_format_argument(p)


def run(args) -> int:
    from marconi.cli.common import load_source
    load_source(args)
    raise NotImplementedError("plan: planner/ is not built yet")

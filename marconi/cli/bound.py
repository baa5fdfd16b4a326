"""`marconi-plan bound`: the offline optimum (upper bound on FLOP savings)."""

from __future__ import annotations

from marconi.cli.common import (add_capacity_argument, add_format_argument, add_model_argument,
                                add_trace_arguments, add_warmup_argument, capacity_from,
                                dtypes_from, load_source, positive_seconds, trace_options,
                                warmup_note)

HELP = "offline optimum: LP upper bound and a rounded feasible schedule"
DESCRIPTION = (
    "Upper bound on the FLOP savings any prefix cache of CAPACITY bytes can reach on the "
    "trace (no policy in `simulate` can beat it), and the savings of a feasible offline "
    "schedule rounded from it. The bound is the LP relaxation of the exact interval ILP "
    "for small traces, or Lagrangian memory prices for long ones (see docs/planner.md).")


def add_arguments(p):
    add_model_argument(p)
    add_trace_arguments(p, required=True)
    add_capacity_argument(p, required=True)
    add_warmup_argument(p)
    p.add_argument("--method", choices=("auto", "lp", "lagrangian", "knapsack"),
                   default="auto",
                   help="bound to compute: lp (exact LP relaxation, small traces), lagrangian "
                        "(per-slot memory prices), knapsack (one price, fastest, loosest); "
                        "auto picks lp when the model is small enough")
    p.add_argument("--time-limit", type=positive_seconds, default=300.0, metavar="SECONDS",
                   help="solver time limit for the LP (a stop on it is an error, exit 1)")
    add_format_argument(p)


def run(args) -> int:
    import contextlib

    from marconi.cli.progress import progress_for
    from marconi.cli.render import emit_json, skipped_note, table
    from marconi.passes import build_cost_model
    from marconi.planner.offline import offline_bound
    from marconi.runtime.workload import load_trace
    from marconi.units import format_bytes

    capacity = capacity_from(args)
    source = load_source(args)
    workload = load_trace(args.trace, **trace_options(args))
    dtype, state_dtype = dtypes_from(args)
    cost = build_cost_model(source, dtype=dtype, state_dtype=state_dtype)
    progress = progress_for(args)
    with progress or contextlib.nullcontext():
        if progress is not None:
            progress(f"offline bound ({args.method})", 0, 0)     # one solve: elapsed time
        report = offline_bound(workload, cost, capacity, method=args.method,
                               time_limit=args.time_limit, warmup=args.warmup)
    if args.format == "json":
        emit_json({**report.to_dict(), "workload": workload.describe()})
        return 0
    rows = [["upper bound (" + report.method + ")", report.upper.flop_savings,
             report.upper.seconds],
            ["rounded feasible schedule", report.rounded.flop_savings, report.rounded.seconds]]
    print(table(["", "FLOP savings", "seconds"], rows,
                title=f"{cost.model} on {workload.name} ({len(workload.requests)} requests"
                      f"{skipped_note(workload)}), "
                      f"capacity {format_bytes(capacity.total_bytes)}"))
    note = warmup_note(report.to_dict()["warmup"], len(workload.requests))
    if note:
        print(note)
    return 0

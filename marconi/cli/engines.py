"""`marconi-plan engines`: each engine's defaults and best flags beside our plan and the bound.

    marconi-plan engines MODEL --trace T --capacity C [--engine vllm,sglang,trtllm] [--format json]

For each engine (`runtime/engines`): its defaults replayed, its flag space searched by
replay (`planner.engine_search`), the launch line of the best flags, the failure modes the
workload triggers, and what our plan needs that the flags cannot express, with the FLOP
savings that costs (`planner.engine_gaps`). See docs/engines.md.
"""

from __future__ import annotations

from marconi.cli.common import (add_capacity_argument, add_format_argument, add_model_argument,
                                add_ray_argument, add_trace_arguments, add_warmup_argument,
                                capacity_from, dtypes_from, executor_from, load_source,
                                positive_int, trace_options, warmup_note)

HELP = "search each engine's flags by replay and compare them with the plan and the bound"
DESCRIPTION = (
    "For each engine (vLLM, SGLang, TensorRT-LLM as modelled in runtime/engines), replay "
    "its defaults on the trace, search its flags by replay (a grid over the two flags that "
    "matter most, coordinate search over the rest; deterministic), and report defaults vs "
    "best flags vs marconi-plan's `planned` vs the offline bound (token hit rate, FLOP "
    "savings, TTFT P50/P95), the failure modes the workload triggers, the launch line to "
    "paste, and which of the plan's rules the engine's flags cannot express, with what "
    "they cost. See docs/engines.md.")


def add_arguments(p):
    add_model_argument(p)
    add_trace_arguments(p, required=True)
    add_capacity_argument(p, required=True)
    add_warmup_argument(p)
    p.add_argument("--engine", default="vllm,sglang,trtllm", metavar="E1,E2,…",
                   help="comma-separated engines (default: vllm,sglang,trtllm)")
    p.add_argument("--model-id", default=None, metavar="NAME",
                   help="the model name the launch lines serve (default: the spec's name)")
    p.add_argument("--limit", type=positive_int, default=None, metavar="N",
                   help="replay only the first N requests of the trace")
    p.add_argument("--jobs", type=positive_int, default=2,
                   help="worker processes for the search's replays (default 2)")
    add_ray_argument(p)
    add_format_argument(p)


def run(args) -> int:
    import contextlib

    from marconi.cli.progress import progress_for
    from marconi.cli.render import emit_json
    from marconi.passes import build_cost_model
    from marconi.planner.engine_search import compare_engines
    from marconi.runtime.config import CacheConfig
    from marconi.runtime.workload import load_trace

    models = engine_models(args.engine)
    capacity = capacity_from(args)
    config = CacheConfig(capacity, warmup=args.warmup)
    executor = executor_from(args)                    # Ray started or joined before work
    workload = load_trace(args.trace, **trace_options(args), limit=args.limit)
    dtype, state_dtype = dtypes_from(args)
    cost = build_cost_model(load_source(args), dtype=dtype, state_dtype=state_dtype)
    progress = progress_for(args)
    with progress or contextlib.nullcontext():
        report = compare_engines(models, workload, cost, config, model_name=args.model_id,
                                 executor=executor, progress=progress)
    if args.format == "json":
        emit_json(document(report, cost, workload, config))
    else:
        print(render(report, cost, workload, config))
    return 0


def engine_models(text: str, flag: str = "--engine") -> list:
    """The engine models `flag` names, in its order (exit 2 on an unknown one)."""
    from marconi.errors import UserError
    from marconi.runtime import engines
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise UserError(flag, f"{text!r}; expected one or more of "
                        f"{', '.join(engines.NAMES)}")
    for name in names:
        if name not in engines.NAMES:
            raise UserError(flag, f"unknown {name!r}; expected one or more of "
                            f"{', '.join(engines.NAMES)}")
    models = []
    for name in dict.fromkeys(names):
        try:
            models.append(engines.engine(name))
        except ModuleNotFoundError as e:
            raise UserError(flag, f"{name}: its engine model is not installed "
                            f"({e.name}); expected one of the installed engines") from e
    return models


def document(report, cost, workload, config) -> dict:
    from marconi.cli.render import ttft_profile
    bound = report.bound.to_dict()
    planned = report.planned.to_dict()
    n = len(workload.requests)
    return {"model": cost.model, "trace": workload.name, "workload": workload.describe(),
            "capacity_bytes": config.capacity.total_bytes,
            "ttft_profile": ttft_profile(config.device),
            "warmup": {"fraction": config.warmup, "requests": config.warmup_requests(n)},
            "planned": planned, "bound": bound,
            "rules": report.plan.plan.rules_dict(),
            "engines": [{**e.to_dict(), "planned": planned, "bound": bound}
                        for e in report.engines],
            "best_engine": best.engine if (best := report.best_engine()) else None,
            "seconds": report.seconds}


def render(report, cost, workload, config) -> str:
    from marconi.cli.render import flag_changes, hedge_note, table, trace_notes, ttft_note
    from marconi.units import format_bytes
    w = workload.describe()
    lines = [f"{cost.model} on {workload.name}: {w['requests']:,} requests"
             f"{trace_notes(w)}; capacity {format_bytes(config.capacity.total_bytes)}",
             ttft_note(config.device), ""]
    rows = []
    for e in report.engines:
        s = e.search
        if s is None:
            rows.append([e.engine, "refused", float("nan"), float("nan"), float("nan"),
                         float("nan"), ""])
            continue
        for label, fr in (("defaults", s.defaults), ("best", s.best)):
            r = fr.result
            rows.append([s.engine, label, r.token_hit_rate, r.flop_savings, r.ttft_p50_ms,
                         r.ttft_p95_ms, flag_changes(s.changed) if label == "best" else ""])
    p = report.planned
    rows.append(["marconi-plan", "planned", p.token_hit_rate, p.flop_savings,
                 p.ttft_p50_ms, p.ttft_p95_ms, ""])
    rows.append([f"upper bound ({report.bound.method})", "", float("nan"),
                 report.bound.upper.flop_savings, float("nan"), float("nan"), ""])
    lines.append(table(["engine", "flags", "token hit rate", "FLOP savings", "TTFT P50 ms",
                        "TTFT P95 ms", "best flags changed"], rows))
    if (hedged := hedge_note(p.params)):
        lines.append(f"planned: hedged by ghosts (docs/planner.md §11): {hedged}")
    lines += [n for n in [warmup_note({"fraction": config.warmup,
                                       "requests": config.warmup_requests(w["requests"])},
                                      w["requests"])] if n]
    for e in report.engines:
        s, g = e.search, e.gaps
        if s is None:
            lines += ["", f"{e.engine} {e.version}: not replayed: {e.refused}"]
            continue
        lines += ["", f"{s.engine} {s.version}: {len(s.trials)} replays in {s.seconds:.1f} s "
                  f"(grid over {', '.join(s.grid_flags) or 'no two flags'}"
                  + (f", {s.refused} settings refused" if s.refused else "") + ")",
                  f"  launch: {s.best.command}"]
        modes = s.failure_modes_best or s.failure_modes_defaults
        which = "best flags" if s.failure_modes_best else "defaults"
        lines += [f"  failure ({which}): {m}" for m in modes]
        gaps = [x for x in g.gaps if x.used]
        lines.append(f"  what the plan needs that {s.engine} cannot express "
                     f"(checkpoint grid {g.grid_tokens or 'exact'} tokens): "
                     + ("nothing the plan uses" if not gaps else
                        f"{g.total_cost:+.4f} FLOP savings all together "
                        f"(the rules alone {g.planned_flop_savings:.4f} → "
                        f"{g.expressible_flop_savings:.4f})"))
        if gaps:
            lines.append(table(["  rule", "why not", "FLOP savings cost"],
                               [[f"  {x.rule}", x.how, x.cost] for x in gaps]))
    best = report.best_engine()
    if best is not None:
        lines += ["", f"Best engine configuration: {best.search.engine} "
                  f"({best.search.best.result.flop_savings:.4f} FLOP savings; planned "
                  f"{p.flop_savings:.4f})", f"  {best.search.best.command}"]
    lines.append(f"Took {report.seconds:.1f} s.")
    return "\n".join(lines)


# ---------------------------------------------------------------- the main job's part

def best_flags(report) -> tuple:
    """runtime.yaml's ``engines:`` section: each searched engine's best flags."""
    from marconi.runtime.plan.engine_flags import EngineFlags
    if report is None:
        return ()
    return tuple(EngineFlags(engine=e.engine, version=e.version, flags=e.search.best.flags,
                             command=e.search.best.command,
                             flop_savings=e.search.best.result.flop_savings)
                 for e in report.engines if e.search is not None)


def job_document(report) -> dict:
    """The main job's JSON ``engines`` entry (`marconi-plan MODEL --engines …`)."""
    best = report.best_engine()
    return {"best_engine": best.engine if best else None,
            "engines": [e.to_dict() for e in report.engines]}


def job_lines(report, planned_flop_savings: float) -> list[str]:
    """The main job's text lines on the engines: the best configuration beside planned."""
    from marconi.cli.render import flag_changes
    lines = ["", "Engines (flags searched by replay on the whole workload):"]
    for e in report.engines:
        if e.search is None:
            lines.append(f"  {e.engine} {e.version}: not replayed: {e.refused}")
            continue
        s = e.search
        lines.append(f"  {s.engine} {s.version}: defaults {s.defaults.result.flop_savings:.4f}"
                     f", best {s.best.result.flop_savings:.4f} FLOP savings "
                     f"({flag_changes(s.changed)})")
    best = report.best_engine()
    if best is not None:
        lines += [f"  best engine configuration: {best.engine} "
                  f"({best.search.best.result.flop_savings:.4f} FLOP savings beside planned's "
                  f"{planned_flop_savings:.4f}): {best.search.best.command}"]
    return lines

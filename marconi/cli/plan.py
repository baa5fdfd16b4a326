"""`marconi-plan MODEL`, the main job: plan, simulate against baselines, write runtime.yaml."""

from __future__ import annotations

from marconi.cli.common import (add_capacity_argument, add_format_argument, add_model_argument,
                                add_ray_argument, add_trace_arguments, add_warmup_argument,
                                capacity_from, dtypes_from, executor_from, load_source,
                                positive_int, trace_options, warmup_note)

HELP = "the main job: plan checkpoints, admission and eviction for MODEL (default subcommand)"
DESCRIPTION = (
    "Analyse MODEL, load the workload (the built-in default without --trace), compute the "
    "offline optimum, derive admission and eviction rules from it, tune them by replay, "
    "then replay the plan against every baseline policy and the upper bound, write "
    "runtime.yaml and print a report. The report also shows a plan fitted on the first "
    "half of the workload and scored on the second half.")


def add_arguments(p):
    add_model_argument(p)
    add_trace_arguments(p, required=False)
    add_capacity_argument(p, required=False)
    add_warmup_argument(p)
    p.add_argument("-o", "--output", default="runtime.yaml",
                   help="where to write the plan (written atomically, only on success)")
    add_format_argument(p)
    p.add_argument("--plot", default=None, metavar="PNG",
                   help="also draw token hit rate and FLOP savings against capacity for "
                        "every policy (¼× to 4× the capacity) into this PNG")
    p.add_argument("--no-held-out", action="store_true",
                   help="skip the check that fits on the first half and scores the second")
    p.add_argument("--jobs", type=positive_int, default=2,
                   help="worker processes for replaying the baselines (default 2)")
    add_ray_argument(p)
    p.add_argument("--engines", default=None, metavar="E1,E2,…",
                   help="also search these engines' flags by replay (vllm, sglang, trtllm), "
                        "name the best configuration beside the plan and write each one's "
                        "best flags into runtime.yaml's engines: section (default: none; "
                        "`marconi-plan engines` reports more)")


def run(args) -> int:
    import contextlib

    from marconi.cli.outputs import atomic_output, check_writable
    from marconi.cli.progress import progress_for
    from marconi.cli.render import emit_json
    from marconi.passes import build_cost_model
    from marconi.planner.capacity_search import capacity_for_share
    from marconi.planner.job import run_plan_job
    from marconi.runtime.plan.plan_file import write_plan
    from marconi.runtime.sim.generators import default_workload
    from marconi.runtime.workload import load_trace
    from marconi.units import format_bytes

    from marconi.cli.engines import best_flags, engine_models
    capacity = capacity_from(args)
    models = engine_models(args.engines, "--engines") if args.engines else []
    check_writable(args.output, "-o", "runtime.yaml")
    if args.plot:
        _check_plot_path(args.plot)
    executor = executor_from(args)                    # Ray started or joined before work
    source = load_source(args)
    dtype, state_dtype = dtypes_from(args)
    cost = build_cost_model(source, dtype=dtype, state_dtype=state_dtype)
    if args.trace:
        workload = load_trace(args.trace, **trace_options(args))
    else:
        workload = default_workload()
    if capacity is None:
        point = capacity_for_share(workload, cost, 0.5, warmup=args.warmup)
        capacity = point.capacity
        size = format_bytes(capacity.total_bytes)
        how = (f"default: {size}, where the sglang baseline reaches "
               f"{100 * point.share:.0f} % of an unbounded cache's FLOP savings"
               if point.share == point.share else
               f"default: {size}, one request's; no request reuses an "
               "earlier prefix, so no capacity saves anything")
    else:
        how = "given"
    factors = (0.25, 0.5, 1.0, 2.0, 4.0) if args.plot else ()
    progress = progress_for(args)
    with progress or contextlib.nullcontext():
        job = run_plan_job(workload, cost, capacity, capacity_source=how,
                           held_out=not args.no_held_out, sweep_factors=factors,
                           executor=executor, progress=progress,
                           warmup=args.warmup, engines=models)
    # both outputs are atomic; the plot is drawn first and renamed last, so a failure in
    # either leaves neither file changed
    with (atomic_output(args.plot, "--plot") if args.plot else contextlib.nullcontext()) \
            as plot_tmp:
        if plot_tmp is not None:
            _plot(job, plot_tmp, cost.model, workload.name)
        write_plan(job.plan.plan, args.output, engines=best_flags(job.engines))
    readers = used_by_commands(args, job)
    if args.format == "json":
        emit_json(_document(job, cost, workload, args.output, readers))
    else:
        print(_text(job, cost, workload, args.output, readers))
    return 0


def used_by_commands(args, job) -> tuple[str, ...]:
    """What reads the written runtime.yaml, as commands to copy (this run's model, workload
    and capacity filled in)."""
    import shlex

    from marconi.runtime.plan.plan_file import used_by
    workload = f"--trace {shlex.quote(args.trace)}" if args.trace else ""
    return used_by(shlex.quote(args.output), model=shlex.quote(args.model),
                   workload=workload, capacity=str(job.capacity.total_bytes))


PLOT_FORMATS = (".png", ".pdf", ".svg")


def _check_plot_path(path: str) -> None:
    from pathlib import Path

    from marconi.errors import UserError
    if Path(path).suffix.lower() not in PLOT_FORMATS:
        raise UserError("--plot", f"{path!r}: unknown image format; expected a file name "
                        f"ending in {', '.join(PLOT_FORMATS)}")
    from marconi.cli.outputs import check_writable
    check_writable(path, "--plot", "capacity.png")


# ---------------------------------------------------------------- rendering

def _job_device() -> str:
    """The TTFT profile of the job's replays: `planner.job.evaluate` uses CacheConfig's
    default."""
    from marconi.runtime.config import CacheConfig
    return CacheConfig.device


def _bound_dict(ev) -> dict:
    return ev.bound.to_dict()


def _warmup(job, ev) -> dict:
    return {"fraction": job.warmup, "requests": ev.warmup_requests}


def _document(job, cost, workload, output, readers) -> dict:
    from marconi.cli.render import ttft_profile
    doc = {"model": cost.model, "trace": workload.name,
           "skipped_lines": workload.skipped_lines, "workload": workload.describe(),
           "capacity_bytes": job.capacity.total_bytes, "capacity_source": job.capacity_source,
           "ttft_profile": ttft_profile(_job_device()),
           "warmup": _warmup(job, job.whole),
           "results": [r.to_dict() for r in job.whole.results],
           "bound": _bound_dict(job.whole),
           "rules": job.plan.plan.rules_dict(),
           "offline_schedule": job.plan.insights.to_dict(),
           "runtime_yaml": str(output), "runtime_yaml_used_by": list(readers),
           "seconds": job.seconds}
    if job.held_out is not None:
        doc["held_out"] = {"fitted_on": "first half", "scored_on": job.held_out.workload,
                           "results": [r.to_dict() for r in job.held_out.results],
                           "bound": _bound_dict(job.held_out),
                           "rules": job.held_out_plan.plan.rules_dict(),
                           "warmup": _warmup(job, job.held_out)}
    if job.sweep:
        doc["sweep"] = [{"capacity_bytes": cap.total_bytes, "upper_bound_flop_savings": ub,
                         "results": [{"policy": r.policy, "token_hit_rate": r.token_hit_rate,
                                      "flop_savings": r.flop_savings} for r in results]}
                        for cap, results, ub in job.sweep]
    if job.engines is not None:
        from marconi.cli.engines import job_document
        doc.update(job_document(job.engines))
    return doc


def _policy_table(ev, title: str) -> str:
    from marconi.cli.render import hedge_note, table
    rows = [[r.policy, r.token_hit_rate, r.flop_savings, r.ttft_p50_ms, r.ttft_p95_ms,
             "unbounded" if r.policy == "infinite" else ev.share_of_bound(r)]
            for r in ev.results]
    rows.append([f"upper bound ({ev.bound.method})", float("nan"),
                 ev.bound.upper.flop_savings, float("nan"), float("nan"),
                 1.0 if ev.bound.upper.flop_savings > 0 else float("nan")])
    out = table(["policy", "token hit rate", "FLOP savings", "TTFT P50 ms", "TTFT P95 ms",
                 "share of bound"], rows, title=title)
    notes = [f"{r.policy}: hedged by ghosts (docs/planner.md §11): {note}"
             for r in ev.results if (note := hedge_note(r.params))]
    return "\n".join([out, *notes])


def _text(job, cost, workload, output, readers) -> str:
    from marconi.cli.render import skipped_note, ttft_note
    from marconi.units import format_bytes
    plan = job.plan.plan
    lines = [f"marconi-plan: {cost.model} on {workload.name} ({len(workload.requests)} "
             f"requests{skipped_note(workload)}), capacity "
             f"{format_bytes(job.capacity.total_bytes)} ({job.capacity_source})",
             ttft_note(_job_device()),
             "", _policy_table(job.whole, "Whole workload, plan fitted on it:")]
    lines += [n for n in [warmup_note(_warmup(job, job.whole), job.whole.requests)] if n]
    if job.held_out is not None:
        lines += ["", _policy_table(job.held_out, f"Held out: plan fitted on the first half, "
                                    f"scored on the second ({job.held_out.workload}):")]
        lines += [n for n in [warmup_note(_warmup(job, job.held_out), job.held_out.requests)]
                  if n]
    if job.engines is not None:
        from marconi.cli.engines import job_lines
        planned = next(r for r in job.whole.results if r.policy == "planned")
        lines += job_lines(job.engines, planned.flop_savings)
    adm, ins = plan.admission, job.plan.insights
    share = ", ".join(f"{k} {100 * v:.0f} %" for k, v in ins.value_share)
    offsets = ", ".join(f"{c} {v / 1000:+.0f} s" if abs(v) < 1e12 else f"{c} first"
                        for c, v in plan.eviction.offsets_ms if v)
    lines += ["", "Rules chosen:",
              f"  offline optimum's hits by the rule that could first checkpoint them: {share}",
              f"  checkpoints: input end {'on' if adm.input_end else 'off'}, output end "
              f"{'on' if adm.output_end else 'off'}, branch points "
              + (f"from sighting {adm.branch_sighting + 1}" if adm.branch_sighting else "off")
              + (f", stride {adm.stride_tokens} tokens" if adm.stride_tokens else "")
              + f"; none below {adm.min_prefix_tokens} tokens",
              f"  fresh requests (< {100 * adm.fresh_threshold:.0f} % seen before): "
              + ("admitted" if adm.admit_fresh else "not checkpointed"),
              f"  eviction: class-offset LRU, offsets {offsets or 'none (plain LRU)'}",
              *([f"  eviction refined by reuse odds among its first "
                 f"{plan.reuse_odds.candidates} victims"] if plan.reuse_odds is not None
                else []),
              f"  memory: {plan.memory.pools} pool"
              + (f", {100 * plan.memory.state_fraction:.0f} % for states"
                 if plan.memory.pools == 'split' else ""),
              f"  pinned prefixes: {len(plan.pinned)}",
              *([f"  hedged by sglang, vllm-align and marconi at the fitted α "
                 f"{plan.marconi_alpha}"] if plan.marconi_alpha is not None else []),
              f"  tuned by {len(job.plan.trials)} replays in {job.plan.seconds:.1f} s",
              "", f"Wrote {output}. Job took {job.seconds:.1f} s. It is read by:",
              *(f"  {r}" for r in readers)]
    return "\n".join(lines)


def _plot(job, path: str, model: str, trace: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError("--plot needs matplotlib: pip install matplotlib") from e
    caps = [cap.total_bytes / 2**30 for cap, _, _ in job.sweep]
    policies = [r.policy for r in job.sweep[0][1]]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, name in enumerate(policies):
        hit = [results[i].token_hit_rate * 100 for _, results, _ in job.sweep]
        flops = [results[i].flop_savings * 100 for _, results, _ in job.sweep]
        style = dict(marker="o", linewidth=2.5 if name == "planned" else 1.2)
        ax1.plot(caps, hit, label=name, **style)
        ax2.plot(caps, flops, label=name, **style)
    ax2.plot(caps, [ub * 100 for _, _, ub in job.sweep], "k--", label="upper bound")
    for ax, what in ((ax1, "token hit rate (%)"), (ax2, "FLOP savings (%)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("cache capacity (GiB)")
        ax.set_ylabel(what)
        ax.grid(alpha=0.3)
    ax2.legend(fontsize=8)
    fig.suptitle(f"{model} on {trace}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

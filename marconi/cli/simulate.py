"""`marconi-plan simulate`: replay a trace through cache policies.

    marconi-plan simulate MODEL --trace T --capacity C --policy p1,p2,… [--format json]

Without --trace the built-in default workload is replayed (``--trace builtin:NAME`` picks
another built-in one). Policies run one after another, in `--jobs` processes, or as Ray
tasks (`--ray`).
"""

from __future__ import annotations

import contextlib

from marconi.cli.common import (add_capacity_argument, add_format_argument, add_model_argument,
                                add_ray_argument, add_trace_arguments, add_warmup_argument,
                                capacity_from, dtypes_from, executor_from, load_source,
                                positive_int, trace_options, warmup_note)
from marconi.cli.progress import progress_for
from marconi.cli.render import emit_json, hedge_note, table, trace_notes, ttft_note, ttft_profile
from marconi.units import format_bytes

HELP = "replay a trace through cache policies and report hit rates, FLOP savings and TTFT"
DESCRIPTION = ("Replay a trace (or the built-in workload) through prefix-cache policies for "
               "MODEL at a given capacity, and report per policy: token and request hit "
               "rates, FLOP savings, peak occupancy, checkpoints admitted/evicted and TTFT "
               "percentiles from a latency model. See docs/simulator.md.")
DEFAULT_POLICIES = "vllm-all,vllm-align,sglang,marconi,infinite"


def add_arguments(p):
    add_model_argument(p)
    add_trace_arguments(p, required=False)
    add_capacity_argument(p, required=True)
    add_warmup_argument(p)
    p.add_argument("--policy", default=DEFAULT_POLICIES, metavar="P1,P2,…",
                   help=f"comma-separated policies (default: {DEFAULT_POLICIES}); known: "
                        "vllm-all, vllm-align, sglang, marconi, marconi-static, infinite, and "
                        "any policy registered later (planned)")
    p.add_argument("--jobs", type=positive_int, default=1,
                   help="run policies in this many processes; with one policy at a time, "
                        "Marconi's α replays use them (default 1)")
    add_ray_argument(p)
    p.add_argument("--chunk-size", type=positive_int, default=None, metavar="TOKENS",
                   help="engine checkpoint grid: states only at multiples of TOKENS (default: "
                        "exact positions)")
    p.add_argument("--vllm-block-size", type=positive_int, default=None, metavar="TOKENS",
                   help="block of vllm-all / vllm-align (default: the trace's block, or 32 "
                        "tokens for token traces)")
    p.add_argument("--state-fraction", type=float, default=None, metavar="F",
                   help="give states their own pool of F·capacity and KV the rest (default: "
                        "one shared pool)")
    p.add_argument("--device", default="jamba-1.5-mini-4xa100",
                   help="latency profile for TTFT (jamba-1.5-mini-4xa100, h100)")
    p.add_argument("--bootstrap-multiplier", type=positive_int, default=5,
                   help="Marconi's α-tuning window in multiples of the requests seen before "
                        "the first eviction (default 5)")
    p.add_argument("--recency", choices=("linear", "inverse"), default="linear",
                   help="Marconi's recency term: last-access time (default) or the "
                        "artifact's 1/(now - last access)")
    p.add_argument("--seed", type=int, default=0, help="seed of a built-in workload")
    p.add_argument("--limit", type=positive_int, default=None, metavar="N",
                   help="replay only the first N requests of the trace")
    add_format_argument(p)
    p.add_argument("--plan", default=None, metavar="RUNTIME_YAML",
                   help="replay the `planned` policy with this saved plan (a runtime.yaml made "
                        "by `marconi-plan MODEL -o …` for the same model) instead of planning "
                        "online; adds `planned` to --policy if missing")


def run(args) -> int:
    from marconi.passes import build_cost_model
    from marconi.planner.plan import planned_policies
    from marconi.runtime.cache.policies import get_policy
    from marconi.runtime.config import CacheConfig, MarconiParams, VllmParams
    from marconi.runtime.sim.latency import get_device
    from marconi.runtime.sim.simulator import simulate

    policies = [p.strip() for p in args.policy.split(",") if p.strip()]
    for name in policies:
        get_policy(name)                              # unknown → exit 2 before any work
    get_device(args.device)
    capacity = capacity_from(args)
    config = CacheConfig(capacity, chunk_tokens=args.chunk_size, warmup=args.warmup,
                         device=args.device,
                         marconi=MarconiParams(recency=args.recency,
                                               bootstrap_multiplier=args.bootstrap_multiplier),
                         vllm=VllmParams(block_tokens=args.vllm_block_size))
    executor = executor_from(args)                    # Ray started or joined before work
    workload = load_workload(args)
    dtype, state_dtype = dtypes_from(args)
    cost = build_cost_model(load_source(args), dtype=dtype, state_dtype=state_dtype)
    bound = planned_policies()                        # `planned` plans online
    if args.plan is not None:
        from marconi.planner.plan import planned_policy
        from marconi.runtime.plan.plan_file import load_plan
        bound = {"planned": planned_policy(load_plan(args.plan, cost))}
        if "planned" not in policies:
            policies.append("planned")
    progress = progress_for(args)
    with progress or contextlib.nullcontext():
        if progress is not None and executor.workers > 1 and len(policies) > 1:
            # parallel replays report nothing until they end: show the elapsed time
            progress(f"{len(policies)} policies on {executor.workers} workers", 0, 0)
        report = simulate(workload, cost, config, policies, executor=executor,
                          progress=progress, bound=bound)
    if args.format == "json":
        emit_json({**report.to_dict(), "ttft_profile": ttft_profile(args.device)})
    else:
        print(render(report))
    return 0


def load_workload(args):
    from marconi.runtime.sim.generators import default_workload, named_workload
    from marconi.runtime.workload import load_trace
    if args.trace is None:
        workload = default_workload(args.seed)
    elif args.trace.startswith("builtin:"):
        workload = named_workload(args.trace.split(":", 1)[1], args.seed)
    else:
        workload = load_trace(args.trace, **trace_options(args), limit=args.limit)
    if args.limit is not None and len(workload.requests) > args.limit:
        import dataclasses
        workload = dataclasses.replace(workload, requests=workload.requests[:args.limit])
    return workload


def render(report) -> str:
    w = report.workload
    title = (f"{report.model} on {report.trace}: {w['requests']:,} requests, "
             f"{w['input_tokens']:,} input tokens"
             + (f", {w['block_size']}-token blocks" if w["block_size"] > 1 else "")
             + (f" (inferred)" if w.get("block_size_inferred") else "")
             + trace_notes(w)
             + f"; capacity {format_bytes(report.capacity_bytes)}"
             + (f" ({report.config['state_bytes'] / report.capacity_bytes:.0%} for states)"
                if report.config.get("state_bytes") else ""))
    headers = ["policy", "token hit", "request hit", "FLOP savings", "peak occ.",
               "TTFT p50 ms", "TTFT p95 ms", "ckpts in", "ckpts out", "seconds", "notes"]
    rows = [[r.policy, r.token_hit_rate, r.request_hit_rate, r.flop_savings,
             r.peak_occupancy, r.ttft_p50_ms, r.ttft_p95_ms, r.checkpoints_admitted,
             r.checkpoints_evicted, r.seconds, _notes(r)] for r in report.results]
    footer = ("Output tokens of a block-hash trace are unknown ids: they are cached as fresh "
              "ids that no later input can hit." if w["kind"] == "block" else "")
    footer = "\n".join(x for x in (warmup_note(report.warmup, w["requests"]), footer) if x)
    device = ttft_note(report.config["device"])
    return (table(headers, rows, title=title) + "\n" + device
            + ("\n" + footer if footer else ""))


def _notes(r) -> str:
    notes = []
    if "alpha" in r.params:
        notes.append(f"alpha={r.params['alpha']}")
        if r.params.get("tuned_at_request"):
            notes.append(f"tuned at request {r.params['tuned_at_request']:,}")
        elif "tuned_at_request" in r.params:
            notes.append("not tuned (trace too short)")
    hedged = hedge_note(r.params)
    if hedged:
        notes.append(hedged)
    if r.rejected_inserts:
        notes.append(f"{r.rejected_inserts} inserts did not fit")
    if r.policy == "infinite":
        notes.append("unbounded")
    return ", ".join(notes)


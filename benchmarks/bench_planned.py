"""`planned` held out against the best baseline, the decomposition of the gap, and the
online cost per request (issue #14, "Done when").

    python -m benchmarks.bench_planned [--full] [--fractions 1/128,...] [--workloads a,b]
                                       [--jobs N] [--out FILE] [--sustained] [--z Z]
                                       [--warm | --cold]
    python -m benchmarks.bench_planned --tables A.json,B.json   # tables of saved rows

For every workload of ``benchmarks.run --suite paper`` (the quick form unless ``--full``;
the Mooncake traces from ../shared/traces, left out with a reason when absent), split in
halves (`Workload.split`): the plan is fitted on the first half (`derive_plan` at the
capacity) and everything is scored on the second, at each capacity (fractions of the
scored half's reference footprint, the unbounded `sglang` peak bytes, as
`benchmarks.bench_next_use`; default: the suite's sweep fractions). FLOP savings of:

- the baselines (`BASELINES`); ``best`` is the best of them, ``marconi-static`` (α chosen
  in hindsight on the scored half) included, and ``best online`` the best without it;
- ``rules``: the fitted plan's rules alone (`planned_policy(plan, hedged=False)`; its
  ghost inside the hedged policy replays the same);
- ``planned``: what marconi-plan runs, the rules hedged by ghosts of the baselines
  (`planned_policy(plan)`, `runtime.cache.policies.hedged`);
- the decomposition of issue #14 item 4 (align-style admission throughout): ``vllm-align``
  (LRU), ``align+true`` (eviction by the true next use, clairvoyant), ``align+pred``
  (eviction by the next use predicted by `planner.next_use` fitted on the first half),
  and the rounded offline schedule ``offline`` and upper ``bound`` of the scored half;
- ``closure`` = (planned − best) / (offline − best); the predictor's Spearman ρ.
- ``odds K``: the victims the plan's reuse odds compare (`runtime.plan.reuse_odds`; 1: the
  tuner kept the class-offset order as it is).

Online cost of `planned`: the wall time its `after_request` spends stepping the ghosts
(and the plan's own bookkeeping) per request, against the prefill time the latency model
(runtime/sim/latency.py) gives the same request with nothing cached, and against its TTFT
at the hit the hedged cache got (Σ cost / Σ time, and the median of the per-request ratios).
Prints Markdown tables (docs/planner.md §12); rows go to stderr as they finish.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TRACES = REPO.parent / "shared" / "traces"
BASELINES = ("vllm-all", "vllm-align", "sglang", "marconi", "marconi-static")
# the gap-closure target's workloads and capacities (issue #14)
CLOSURE_WORKLOADS = ("mooncake-conversation", "mooncake-synthetic", "swebench-like")
CLOSURE_FRACTIONS = (1 / 32, 1 / 16, 1 / 8)


def _task(item) -> dict:
    """One (workload, fraction) row; run in an executor (the workload reaches it by fork)."""
    from marconi.planner import next_use as nu
    from marconi.planner.offline import offline_bound
    from marconi.planner.plan import derive_plan, planned_policy
    from marconi.runtime.cache.policies import get_policy
    from marconi.runtime.capacity import Capacity
    from marconi.runtime.config import CacheConfig
    from marconi.runtime.sim.latency import get_device
    from marconi.runtime.sim.replay import Replay
    from marconi.runtime.sim.simulator import replay_policy, summarize

    key, first, second, cost, footprint, f, predictor, rho, (sustained, z, warm) = item
    cap = Capacity.shared(max(1, int(footprint * f)))
    t0 = time.perf_counter()
    fitted = derive_plan(first, cost, cap)
    plan_s = time.perf_counter() - t0
    config = CacheConfig(capacity=cap, chunk_tokens=fitted.plan.chunk_tokens)
    scores = {p: replay_policy(get_policy(p), second, cost, config).flop_savings
              for p in BASELINES}
    align = get_policy("vllm-align")
    for name, cls in (("align+true", nu.clairvoyant(align)),
                      ("align+pred", nu.predicted(align, predictor))):
        scores[name] = replay_policy(cls, second, cost, config).flop_savings
    scores["rules"] = replay_policy(planned_policy(fitted.plan, hedged=False), second, cost,
                                    config).flop_savings
    hedged = planned_policy(fitted.plan)
    if sustained or z is not None or warm is not None:   # the variants of planner.md §12
        hedged = hedged.with_params(sustained=sustained or None, z=z, warm=warm)
    policy = hedged(cost, config, second)
    t0 = time.perf_counter()
    run = Replay(second, cost, policy)
    run.run()
    hedged_s = time.perf_counter() - t0
    planned = summarize("planned", run, cost, config, policy.describe())
    scores["planned"] = planned.flop_savings
    bound = offline_bound(second, cost, cap)
    scores["offline"], scores["bound"] = bound.rounded.flop_savings, bound.upper.flop_savings

    device = get_device(config.device)
    L = np.array([r.input_tokens for r in second.requests], dtype=np.float64)
    h = np.asarray(run.hits, dtype=np.float64)
    prefill_us = 1e3 * device.ttft_ms(cost, L, np.zeros_like(L))
    ttft_us = 1e3 * device.ttft_ms(cost, L - h, h)
    cost_us = 1e6 * np.asarray(policy.ghost_times)
    tuning_us = 1e6 * sum(getattr(p, "tuning_seconds", 0.0) for p in policy.ghost_policies)
    run.discard()

    best = max(BASELINES, key=lambda p: scores[p])
    online = [p for p in BASELINES if p != "marconi-static"]
    best_online = max(online, key=lambda p: scores[p])
    gap = scores["offline"] - scores[best]
    hedge = planned.params["hedge"]
    return {"workload": key, "requests": len(second.requests), "fraction": f,
            "capacity_bytes": cap.total_bytes, **scores,
            "best_baseline": best, "best_online": best_online,
            "margin_points": 100 * (scores["planned"] - scores[best]),
            "margin_online_points": 100 * (scores["planned"] - scores[best_online]),
            "closure": (scores["planned"] - scores[best]) / gap if gap > 1e-9 else None,
            "spearman": rho, "switches": hedge["switches"],
            # victims the reuse odds compare (1: the class-offset order as it is)
            "reuse_odds_candidates": (fitted.plan.reuse_odds.candidates
                                      if fitted.plan.reuse_odds is not None else 1),
            "leader_share": hedge["leader_share"],
            "cost_us_mean": float(cost_us.mean()), "cost_us_median": float(np.median(cost_us)),
            "cost_us_mean_untuned": float((cost_us.sum() - tuning_us) / len(cost_us)),
            "cost_over_prefill_total": float(cost_us.sum() / prefill_us.sum()),
            "cost_over_prefill_untuned": float((cost_us.sum() - tuning_us) / prefill_us.sum()),
            "cost_over_prefill_median": float(np.median(cost_us / prefill_us)),
            "cost_over_ttft_total": float(cost_us.sum() / ttft_us.sum()),
            "plan_seconds": plan_s, "planned_seconds": hedged_s}


def rows(quick: bool, fractions, only, jobs: int, sustained: bool = False,
         z: float | None = None, warm: bool | None = None) -> tuple[list[dict], list[str]]:
    from marconi.passes import build_cost_model
    from marconi.planner import next_use as nu
    from marconi.runtime.cache.policies import get_policy
    from marconi.runtime.capacity import Capacity
    from marconi.runtime.config import CacheConfig
    from marconi.runtime.sim.executor import executor_for
    from marconi.runtime.sim.simulator import replay_policy
    from marconi.spec import load_model

    from benchmarks.suites import get_suite, load_workloads

    suite = get_suite("paper", quick=quick)
    fractions = tuple(fractions or suite.fractions)
    cost = build_cost_model(load_model(REPO / "examples" / "models" /
                                       f"{suite.base_model}.yaml"))
    items = []
    loaded, skipped = load_workloads(suite, TRACES, only)
    for key, workload in loaded:
        first, second = workload.split()
        footprint = replay_policy(get_policy("sglang"), second, cost,
                                  CacheConfig(capacity=Capacity.unbounded())).peak_bytes
        predictor = nu.fit_on(first)
        rho = nu.predictor_quality(predictor, second)
        items += [(key, first, second, cost, footprint, f, predictor, rho,
                   (sustained, z, warm))
                  for f in fractions]

    def done(i, row):
        print(json.dumps(row), file=sys.stderr, flush=True)

    return executor_for(jobs).map(_task, items, done), skipped


def _frac(f: float) -> str:
    return "1" if f >= 1 else f"1/{round(1 / f)}"


def markdown(found: list[dict], skipped: list[str]) -> str:
    cols = (*BASELINES, "rules", "planned")
    head = ("| workload | capacity | " + " | ".join(cols) +
            " | vs best (points) | vs best online | switches | odds K |")
    lines = ["Held out (plan fitted on the first half, FLOP savings % of the second):", "",
             head, "|" + "---|" * (head.count("|") - 1)]
    for r in found:
        cells = [r["workload"], _frac(r["fraction"])] + [f"{100 * r[c]:.1f}" for c in cols]
        cells += [f"{r['margin_points']:+.2f} ({r['best_baseline']})",
                  f"{r['margin_online_points']:+.2f} ({r['best_online']})", str(r["switches"]),
                  str(r.get("reuse_odds_candidates", "—"))]      # rows saved before it: —
        lines.append("| " + " | ".join(cells) + " |")
    met = sum(r["margin_points"] >= -0.5 for r in found)
    met_online = sum(r["margin_online_points"] >= -0.5 for r in found)
    lines += ["", f"planned ≥ best baseline − 0.5 points at {met} of {len(found)} points "
              f"(best online baseline: {met_online} of {len(found)}).", ""]

    head = ("| workload | capacity | vllm-align | align+true | align+pred | rules | planned |"
            " offline | bound | closure | Spearman |")
    lines += ["Decomposition (FLOP savings %; closure = (planned − best) / (offline − best)):",
              "", head, "|" + "---|" * (head.count("|") - 1)]
    for r in found:
        c = "—" if r["closure"] is None else f"{r['closure']:.2f}"
        lines.append("| " + " | ".join(
            [r["workload"], _frac(r["fraction"])] +
            [f"{100 * r[k]:.1f}" for k in ("vllm-align", "align+true", "align+pred", "rules",
                                           "planned", "offline", "bound")] +
            [c, f"{r['spearman']:.2f}"]) + " |")
    target = [r for r in found if r["workload"] in CLOSURE_WORKLOADS and
              any(abs(r["fraction"] - f) < 1e-12 for f in CLOSURE_FRACTIONS) and
              r["closure"] is not None]
    if target:
        mean = sum(r["closure"] for r in target) / len(target)
        lines += ["", f"mean gap closure over {', '.join(CLOSURE_WORKLOADS)} at 1/32, 1/16, "
                  f"1/8: {mean:.2f} ({len(target)} points)."]

    head = ("| workload | capacity | cost µs / req (mean, w/o α search, median) |"
            " cost / prefill (Σ, w/o α search, median) | cost / TTFT (Σ) |")
    lines += ["", "Online cost of `planned` (ghost steps and the plan's bookkeeping):", "",
              head, "|" + "---|" * (head.count("|") - 1)]
    for r in found:
        lines.append("| " + " | ".join([
            r["workload"], _frac(r["fraction"]),
            f"{r['cost_us_mean']:.0f}, {r['cost_us_mean_untuned']:.0f}, "
            f"{r['cost_us_median']:.0f}",
            f"{100 * r['cost_over_prefill_total']:.2f} %, "
            f"{100 * r['cost_over_prefill_untuned']:.2f} %, "
            f"{100 * r['cost_over_prefill_median']:.2f} %",
            f"{100 * r['cost_over_ttft_total']:.2f} %"]) + " |")
    lines += [f"left out: {s}" for s in skipped]
    return "\n".join(lines)


def _fractions(text: str | None):
    if not text:
        return None
    try:
        return tuple(float(Fraction(x)) for x in text.split(","))
    except (ValueError, ZeroDivisionError):
        raise SystemExit(f"--fractions: {text!r}; expected e.g. 1/32,1/16,1/8") from None


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="the full paper suite (slow)")
    ap.add_argument("--fractions", default=None,
                    help="capacities as fractions of the footprint (default: the suite's)")
    ap.add_argument("--workloads", default=None, help="comma-separated suite keys")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    ap.add_argument("--sustained", action="store_true",
                    help="hedge with the sustained leader rule (Hedged.with_params)")
    ap.add_argument("--z", type=float, default=None,
                    help="hedge with this significance z of a lead (Hedged.with_params)")
    switch = ap.add_mutually_exclusive_group()
    switch.add_argument("--warm", dest="warm", action="store_const", const=True,
                        default=None, help="hedge with warm switches (Hedged.with_params)")
    switch.add_argument("--cold", dest="warm", action="store_const", const=False,
                        help="hedge with cold switches (Hedged.with_params)")
    ap.add_argument("--tables", default=None, metavar="A.json,B.json",
                    help="print the tables of rows saved by --out (no replays)")
    args = ap.parse_args(argv)
    if args.tables:
        found, skipped = [], []
        for path in args.tables.split(","):
            saved = json.loads(Path(path).read_text())
            found += saved["rows"]
            skipped += saved["skipped"]
        print(markdown(found, skipped))
        return
    only = set(args.workloads.split(",")) if args.workloads else None
    found, skipped = rows(not args.full, _fractions(args.fractions), only, args.jobs,
                          args.sustained, args.z, args.warm)
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": found, "skipped": skipped}, indent=1))
    print(markdown(found, skipped))


if __name__ == "__main__":
    main()

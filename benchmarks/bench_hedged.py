"""`planned-hedged` against the baselines, and what its ghosts cost per request.

    python -m benchmarks.bench_hedged [--full] [--model M] [--workloads a,b] [--out FILE]

For every workload of ``benchmarks.run --suite paper`` (the quick form unless ``--full``;
the Mooncake traces from ../shared/traces, left out with a reason when absent) and every
capacity of its sweep (fractions of the `sglang` unbounded footprint, as the sweep), the
FLOP savings of each baseline and of `planned-hedged` over the counted requests of the
whole trace (the hedged policy fits no plan, so nothing is held out). `margin` = hedged −
best baseline, in points. The ghosts' cost: the wall time `Hedged.after_request` spends
stepping the ghosts and choosing the leader, per request (mean, median, P99), against the
TTFT the latency model (runtime/sim/latency.py) gives the same request at the hedged real
cache's hit: the mean ratio Σ ghost / Σ TTFT and the median of the per-request ratios.
Prints a Markdown table (docs/planner.md, "Never below the best baseline").
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TRACES = REPO.parent / "shared" / "traces"
BASELINES = ("vllm-all", "vllm-align", "sglang", "marconi", "marconi-static")


def rows(quick: bool, model: str | None, only: set[str] | None,
         experts: tuple[str, ...] | None = None) -> tuple[list[dict], list[str]]:
    from marconi.passes import build_cost_model
    from marconi.runtime.capacity import Capacity
    from marconi.runtime.cache.policies.hedged import Hedged
    from marconi.runtime.config import CacheConfig
    from marconi.runtime.sim.latency import get_device
    from marconi.runtime.sim.replay import Replay
    from marconi.runtime.sim.simulator import run_policy, summarize
    from marconi.spec import load_model

    from benchmarks.suites import get_suite, load_workloads

    suite = get_suite("paper", quick=quick)
    model = model or suite.base_model
    cost = build_cost_model(load_model(REPO / "examples" / "models" / f"{model}.yaml"))
    out = []
    loaded, skipped = load_workloads(suite, TRACES, only)
    for key, wl in loaded:
        footprint = run_policy("sglang", wl, cost,
                               CacheConfig(capacity=Capacity.unbounded())).peak_bytes
        for f in suite.fractions:
            cap = max(1, int(footprint * f))
            cfg = CacheConfig(capacity=Capacity.shared(cap))
            scores = {p: run_policy(p, wl, cost, cfg).flop_savings for p in BASELINES}
            t0 = time.perf_counter()
            policy = Hedged.with_params(experts=experts)(cost, cfg, wl)
            run = Replay(wl, cost, policy)
            run.run()
            seconds = time.perf_counter() - t0
            hedged = summarize("planned-hedged", run, cost, cfg, policy.describe())
            L = np.array([r.input_tokens for r in wl.requests], dtype=np.float64)
            h = np.asarray(run.hits, dtype=np.float64)
            ttft_us = 1e3 * get_device(cfg.device).ttft_ms(cost, L - h, h)
            ghost_us = 1e6 * np.asarray(policy.ghost_times)
            tuning_us = 1e6 * sum(getattr(p, "tuning_seconds", 0.0)
                                  for p in policy.ghost_policies)
            best = max(scores, key=scores.get)
            online = {p: s for p, s in scores.items() if p != "marconi-static"}
            best_online = max(online, key=online.get)
            row = {"workload": key, "requests": len(wl.requests), "fraction": f,
                   "capacity_bytes": cap, **scores, "planned-hedged": hedged.flop_savings,
                   "best_baseline": best,
                   "margin_points": 100 * (hedged.flop_savings - scores[best]),
                   "best_online": best_online,
                   "margin_online_points": 100 * (hedged.flop_savings - online[best_online]),
                   "switches": policy.rule.switches,
                   "leader_share": hedged.params["leader_share"],
                   "ghost_us_mean": float(ghost_us.mean()),
                   "ghost_us_median": float(np.median(ghost_us)),
                   "ghost_us_mean_untuned": float((ghost_us.sum() - tuning_us) / len(ghost_us)),
                   "ghost_over_ttft_untuned": float((ghost_us.sum() - tuning_us)
                                                    / ttft_us.sum()),
                   "ghost_us_p99": float(np.percentile(ghost_us, 99)),
                   "ttft_us_median": float(np.median(ttft_us)),
                   "ghost_over_ttft_total": float(ghost_us.sum() / ttft_us.sum()),
                   "ghost_over_ttft_median": float(np.median(ghost_us / ttft_us)),
                   "hedged_seconds": seconds}
            run.discard()
            out.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    return out, skipped


def markdown(rows: list[dict], skipped: list[str]) -> str:
    head = ("| workload | capacity | " + " | ".join(BASELINES) +
            " | planned-hedged | vs best (points) | vs best online | switches |"
            " ghost µs / req (mean, w/o α tuning, median) |"
            " ghost / TTFT (Σ, w/o α tuning, median) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        cells = [r["workload"], f"1/{round(1 / r['fraction'])}" if r["fraction"] < 1 else "1"]
        cells += [f"{r[p]:.3f}" for p in BASELINES]
        cells += [f"{r['planned-hedged']:.3f}",
                  f"{r['margin_points']:+.2f} ({r['best_baseline']})",
                  f"{r['margin_online_points']:+.2f} ({r['best_online']})",
                  str(r["switches"]),
                  f"{r['ghost_us_mean']:.0f}, {r['ghost_us_mean_untuned']:.0f}, "
                  f"{r['ghost_us_median']:.0f}",
                  f"{100 * r['ghost_over_ttft_total']:.2f} %, "
                  f"{100 * r['ghost_over_ttft_untuned']:.2f} %, "
                  f"{100 * r['ghost_over_ttft_median']:.2f} %"]
        lines.append("| " + " | ".join(cells) + " |")
    met = sum(r["margin_points"] >= -0.5 for r in rows)
    lines.append("")
    lines.append(f"hedged ≥ best baseline − 0.5 points at {met} of {len(rows)} points "
                 f"(online baselines only: "
                 f"{sum(r['margin_online_points'] >= -0.5 for r in rows)}).")
    for s in skipped:
        lines.append(f"left out: {s}")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="the full paper suite (slow)")
    ap.add_argument("--model", default=None)
    ap.add_argument("--workloads", default=None, help="comma-separated suite keys")
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    ap.add_argument("--experts", default=None,
                    help="comma-separated experts (default: the policy's)")
    args = ap.parse_args(argv)
    only = set(args.workloads.split(",")) if args.workloads else None
    experts = tuple(args.experts.split(",")) if args.experts else None
    found, skipped = rows(not args.full, args.model, only, experts)
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": found, "skipped": skipped}, indent=1))
    print(markdown(found, skipped))


if __name__ == "__main__":
    main()

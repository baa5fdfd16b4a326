"""Eviction by next use (issue #14, item 1): how much of the gap between vLLM's align mode
and the offline optimum is eviction order, and how much a fitted predictor recovers.

Per workload and capacity (fractions of the reference footprint of `benchmarks.suites`, the unbounded
`sglang` policy's peak bytes, on the scored
half), on the second half of the workload (predictor and plan fitted on the first,
`Workload.split`), FLOP savings of:

- ``vllm-align``: LRU eviction, align-style admission;
- ``align+true``: the same admission, eviction by the true next use (clairvoyant Belady,
  `planner.next_use.TrueNextUse`);
- ``align+pred``: the same admission, eviction by the predicted next use
  (`runtime.plan.next_use.NextUsePredictor` fitted on the first half);
- ``planned``: the plan `derive_plan` fits on the first half (``--with-plan``), its
  class-offset eviction; ``planned+pred``: the same plan evicting by the predicted next
  use; ``kept``: whether `derive_plan(next_use=True)` kept the predictor (its replay on
  the first half beat the offsets by 0.5 points);
- ``offline``: the rounded offline schedule and the upper bound of the scored half
  (``--with-plan``);

and the predictor's quality: Spearman rank correlation of predicted vs true gaps to the
next use over every pass of the scored half. Returns rows; ``main`` prints a markdown table.

    python -m benchmarks.bench_next_use [--quick] [--with-plan] [--workloads a,b]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

from benchmarks import workloads as wl
from benchmarks.suites import BASE_MODEL
from benchmarks.sweep import EXAMPLES
from marconi.passes import build_cost_model
from marconi.planner import next_use as nu
from marconi.planner.offline import offline_bound
from marconi.planner.plan import derive_plan
from marconi.runtime.cache.policies import get_policy
from marconi.runtime.cache.policies.planned import Planned
from marconi.runtime.capacity import Capacity
from marconi.runtime.config import CacheConfig
from marconi.runtime.sim.simulator import replay_policy
from marconi.spec import load_model

FRACTIONS = (1 / 32, 1 / 16, 1 / 8)


def sources(quick: bool) -> list[wl.WorkloadSource]:
    if quick:
        return [wl.mooncake("conversation", limit=1500), wl.mooncake("synthetic", limit=600),
                wl.lmsys(sessions=16), wl.sharegpt(sessions=16),
                wl.swebench(sessions=6, rounds=(8, 24))]
    return [wl.mooncake("conversation"), wl.mooncake("synthetic"), wl.lmsys(),
            wl.sharegpt(), wl.swebench(sessions=50)]


def bench_workload(workload, cost, fractions=FRACTIONS, with_plan: bool = False) -> list[dict]:
    first, second = workload.split()
    t0 = time.perf_counter()
    predictor = nu.fit_on(first)
    fit_s = time.perf_counter() - t0
    rho = nu.predictor_quality(predictor, second)
    align = get_policy("vllm-align")
    unbounded = replay_policy(get_policy("sglang"), second, cost,
                              CacheConfig(capacity=Capacity.unbounded())).peak_bytes
    rows = []
    for f in fractions:
        cap = Capacity.shared(int(unbounded * f))
        config = CacheConfig(capacity=cap)
        row = {"workload": workload.name, "fraction": f, "capacity_bytes": cap.total_bytes,
               "spearman": rho, "fit_s": fit_s}
        for name, cls in (("vllm-align", align), ("align+true", nu.clairvoyant(align)),
                          ("align+pred", nu.predicted(align, predictor))):
            t = time.perf_counter()
            row[name] = replay_policy(cls, second, cost, config).flop_savings
            row[f"{name}_s"] = time.perf_counter() - t
        if with_plan:
            plan = derive_plan(first, cost, cap, next_use=True).plan
            row["predictor_kept"] = plan.next_use is not None
            base = dataclasses.replace(plan, next_use=None)
            row["planned"] = replay_policy(Planned.with_plan(base), second, cost,
                                           config).flop_savings
            row["planned+pred"] = replay_policy(
                Planned.with_plan(dataclasses.replace(base, next_use=predictor)), second, cost,
                config).flop_savings
            bound = offline_bound(second, cost, cap)
            row["offline"] = bound.rounded.flop_savings
            row["bound"] = bound.upper.flop_savings
        rows.append(row)
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--with-plan", action="store_true")
    ap.add_argument("--workloads", default=None, help="comma-separated keys")
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args(argv)
    cost = build_cost_model(load_model(EXAMPLES / f"{BASE_MODEL}.yaml"))
    keep = None if args.workloads is None else set(args.workloads.split(","))
    rows = []
    for src in sources(args.quick):
        if (keep and src.key not in keep) or not src.available(wl.DEFAULT_TRACES_DIR):
            continue
        rows += bench_workload(src.load(wl.DEFAULT_TRACES_DIR, seed=0), cost,
                               with_plan=args.with_plan)
    cols = ["vllm-align", "align+true", "align+pred"] + \
        (["planned", "planned+pred", "offline", "bound"] if args.with_plan else [])
    tail = " | kept |" if args.with_plan else " |"
    print("| workload | capacity | " + " | ".join(cols) + " | recovered | Spearman" + tail)
    print("|---|---|" + "---|" * (len(cols) + 2 + args.with_plan))
    for r in rows:
        gap = r["align+true"] - r["vllm-align"]
        rec = (r["align+pred"] - r["vllm-align"]) / gap if gap > 1e-9 else float("nan")
        kept = f" | {'yes' if r['predictor_kept'] else 'no'}" if args.with_plan else ""
        print(f"| {r['workload']} | 1/{round(1 / r['fraction'])} | " +
              " | ".join(f"{100 * r[c]:.1f}" for c in cols) +
              f" | {rec:.2f} | {r['spearman']:.2f}{kept} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()

"""Engines on the paper suite's workloads: defaults vs best flags vs `planned` vs the bound.

    python -m benchmarks.bench_engines [--quick] [--jobs N] [--out results/engines]

For every workload of the `paper` suite (both Mooncake traces and the LMSys-, ShareGPT-
and SWE-bench-like generators; `--quick`: the quick suite's slices) at three capacities
(1/64, 1/8 and 1 × the workload's reference footprint: the peak bytes of an unbounded
`sglang` cache, as the suite measures it), `planner.engine_search.compare_engines` replays
each engine model's defaults, searches its flags, and fits and replays `planned` on the same
workload (in-sample, as `marconi-plan engines` does). Writes ``engines.json`` (one entry per
cell, the comparison's fields) and prints a markdown table of FLOP savings (%) to stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from marconi.passes import build_cost_model
from marconi.planner.engine_search import compare_engines
from marconi.runtime.capacity import Capacity
from marconi.runtime.config import CacheConfig
from marconi.runtime.engines import NAMES, engine
from marconi.runtime.sim.executor import executor_for
from marconi.runtime.sim.simulator import run_policy
from marconi.spec import load_model

from benchmarks.suites import BASE_MODEL, paper
from benchmarks.sweep import FOOTPRINT_POLICY
from benchmarks.workloads import DEFAULT_TRACES_DIR, REPO

FRACTIONS = (2.0 ** -6, 2.0 ** -3, 1.0)
LABELS = {2.0 ** -6: "1/64", 2.0 ** -3: "1/8", 1.0: "1"}


def footprint(workload, cost) -> int:
    """The reference footprint, as the suite measures it: peak bytes of an unbounded
    FOOTPRINT_POLICY cache."""
    return run_policy(FOOTPRINT_POLICY, workload, cost,
                      CacheConfig(capacity=Capacity.unbounded())).peak_bytes


def cell(comparison, workload: str, fraction: float, capacity: int) -> dict:
    out = {"workload": workload, "fraction": fraction, "capacity_bytes": capacity,
           "planned": comparison.planned.flop_savings,
           "bound": comparison.bound.upper.flop_savings,
           "rounded": comparison.bound.rounded.flop_savings,
           "seconds": comparison.seconds, "engines": {}}
    for e in comparison.engines:
        if e.search is None:
            out["engines"][e.engine] = {"refused": e.refused}
            continue
        out["engines"][e.engine] = {
            "defaults": e.search.defaults.result.flop_savings,
            "best": e.search.best.result.flop_savings,
            "changed": {k: str(v) for k, v in e.search.changed.items()}}
    return out


def markdown(cells: list[dict]) -> str:
    head = ("| workload | capacity | " + " | ".join(f"{n} defaults | {n} best" for n in NAMES)
            + " | planned | bound |")
    rows = [head, "|" + "---|" * (2 + 2 * len(NAMES) + 2)]
    for c in cells:
        parts = [c["workload"], LABELS.get(c["fraction"], f"{c['fraction']:g}")]
        for n in NAMES:
            e = c["engines"].get(n, {})
            if "refused" in e or not e:
                parts += ["refused", "refused"]
            else:
                parts += [f"{100 * e['defaults']:.1f}", f"{100 * e['best']:.1f}"]
        parts += [f"{100 * c['planned']:.1f}", f"{100 * c['bound']:.1f}"]
        rows.append("| " + " | ".join(parts) + " |")
    return "\n".join(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="the quick suite's workload slices")
    p.add_argument("--jobs", type=int, default=1, help="parallel replays (processes)")
    p.add_argument("--workloads", default=None, help="comma-separated keys (default: all)")
    p.add_argument("--traces", type=Path, default=DEFAULT_TRACES_DIR)
    p.add_argument("--out", type=Path, default=REPO / "out" / "engines")
    args = p.parse_args(argv)
    suite = paper(args.quick)
    cost = build_cost_model(load_model(REPO / "examples" / "models" / f"{BASE_MODEL}.yaml"))
    models = [engine(n) for n in NAMES]
    keep = None if args.workloads is None else set(args.workloads.split(","))
    executor = executor_for(args.jobs)
    cells = []
    for source in suite.workloads:
        if keep is not None and source.key not in keep:
            continue
        if not source.available(args.traces):
            print(f"{source.key}: {source.path(args.traces)} not found; left out",
                  file=sys.stderr)
            continue
        workload = source.load(args.traces, suite.seed)
        full = footprint(workload, cost)
        for f in FRACTIONS:
            t0 = time.perf_counter()
            cap = max(1, int(full * f))
            config = CacheConfig(capacity=Capacity.shared(cap))
            comparison = compare_engines(models, workload, cost, config,
                                         model_name=BASE_MODEL, executor=executor, gaps=False)
            cells.append(cell(comparison, source.key, f, cap))
            print(f"{source.key} {LABELS[f]}: {time.perf_counter() - t0:.0f} s",
                  file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "engines.json").write_text(json.dumps(cells, indent=1) + "\n")
    print(markdown(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())

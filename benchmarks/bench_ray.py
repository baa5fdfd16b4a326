"""The replay executor on Ray against the local process pool, same cores (README, "Sweeps
on Ray").

    python -m benchmarks.bench_ray [--cpus 2] [--runs 3] [--scale 4] [--skip-suite | --skip-scaled]

Two sweeps, each run `--runs` times on `ProcessExecutor(cpus)` and on a local Ray instance
of `cpus` CPUs (`RayExecutor(num_cpus=cpus)`), started once before the timed runs (its
start-up is reported apart):

- ``suite``: the paper suite's ``--quick`` form (benchmarks.sweep.run_suite: the reference
  replays, then every policy and bound at every capacity), inputs built once;
- ``scaled``: `simulate` of sglang, vllm-all, marconi and marconi-static on the built-in
  default workload with every shape's count ×`scale` (runtime/sim/generators.py), at a
  tenth of its unbounded sglang footprint.

For each: the median wall time, the overhead per task ((Ray − processes) / tasks), and the
peak resident memory of the busiest worker (``ru_maxrss`` read in the worker after each of
its tasks). Both executors' results are checked equal (timings aside) before any figure is
printed. The first Ray run includes its workers' imports (torch through marconi.passes):
the runs are listed one by one so that cost is visible.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import statistics
import sys
import time
from functools import partial
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from marconi.passes import build_cost_model                           # noqa: E402
from marconi.runtime.capacity import Capacity                          # noqa: E402
from marconi.runtime.config import CacheConfig                         # noqa: E402
from marconi.runtime.sim.executor import ProcessExecutor               # noqa: E402
from marconi.runtime.sim.generators import _NAMED, generate            # noqa: E402
from marconi.runtime.sim.ray_executor import RayExecutor               # noqa: E402
from marconi.runtime.sim.simulator import run_policy, simulate         # noqa: E402
from marconi.spec import load_model                                    # noqa: E402

from benchmarks.suites import get_suite                                # noqa: E402
from benchmarks.sweep import run_suite                                 # noqa: E402
from benchmarks.workloads import DEFAULT_TRACES_DIR                    # noqa: E402

MODEL = Path(__file__).resolve().parents[1] / "examples/models/marconi-7b-hybrid.yaml"
SCALED_POLICIES = ("sglang", "vllm-all", "marconi", "marconi-static")
COUNT_FIELDS = ("sessions", "requests_total", "documents")   # the generators' shape counts


class Measured:
    """An executor wrapper that counts tasks and keeps each worker's peak RSS (by pid)."""

    def __init__(self, inner):
        self.inner = inner
        self.workers = inner.workers
        self.tasks = 0
        self.peak_rss_kib: dict[int, int] = {}

    def map(self, fn, items, done=None):
        items = list(items)
        self.tasks += len(items)

        def record(i, r):
            result, pid, rss = r
            self.peak_rss_kib[pid] = max(self.peak_rss_kib.get(pid, 0), rss)
            if done is not None:
                done(i, result)
        return [r[0] for r in self.inner.map(partial(_with_rss, fn), items, done=record)]


def _with_rss(fn, item):
    result = fn(item)
    return result, os.getpid(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def is_timing(key: str) -> bool:
    """A measured time (seconds, or planned-hedged's ghost_us_per_request), which no two
    runs share; the modelled TTFT (…_ms) is a result and kept."""
    return "seconds" in key or "_us" in key


def _untimed(obj):
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _untimed(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {k: _untimed(v) for k, v in obj.items() if not is_timing(k)}
    if isinstance(obj, (list, tuple)):
        return [_untimed(v) for v in obj]
    return obj


def scaled_workload(scale: int, seed: int = 0):
    specs = []
    for spec in _NAMED["default"]:
        counts = {f: getattr(spec, f) * scale for f in COUNT_FIELDS if hasattr(spec, f)}
        specs.append(dataclasses.replace(spec, **counts))
    return generate(specs, seed=seed, name=f"default×{scale}")


def sweep_suite(executor):
    suite = get_suite("paper", quick=True)
    result = run_suite(suite, DEFAULT_TRACES_DIR, allow_missing=True, executor=executor)
    return {"references": result.references, "records": result.records}


def sweep_scaled(workload, cost, config, executor):
    return simulate(workload, cost, config, list(SCALED_POLICIES), executor=executor).results


def measure(name, run, make_executors, runs):
    rows, outputs = [], {}
    for label, inner in make_executors:
        walls, peaks, tasks = [], [], 0
        for _ in range(runs):
            ex = Measured(inner)
            t0 = time.perf_counter()
            out = run(ex)
            walls.append(time.perf_counter() - t0)
            peaks.append(max(ex.peak_rss_kib.values(), default=0))
            tasks = ex.tasks
            outputs.setdefault(label, _untimed(out))
        rows.append((label, walls, tasks, max(peaks)))
    a, b = outputs.values()
    return rows, _first_difference(a, b)


def _first_difference(a, b, path="") -> str | None:
    """Where two untimed outputs first differ ("" path: equal), for the report."""
    if type(a) is not type(b):
        return f"{path}: {a!r} vs {b!r}"
    if isinstance(a, dict):
        for k in sorted(set(a) | set(b), key=str):
            d = _first_difference(a.get(k), b.get(k), f"{path}.{k}")
            if d:
                return d
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} vs {len(b)} items"
        for i, (x, y) in enumerate(zip(a, b)):
            d = _first_difference(x, y, f"{path}[{i}]")
            if d:
                return d
        return None
    return None if a == b else f"{path}: {a!r} vs {b!r}"


def report(name, measured, out=sys.stdout):
    rows, difference = measured
    (_, base_walls, _, _), (_, ray_walls, tasks, _) = rows
    base, ray = statistics.median(base_walls), statistics.median(ray_walls)
    print(f"\n{name}: {tasks} tasks per sweep, {len(base_walls)} run(s) each", file=out)
    print(f"{'executor':<22} {'median wall s':>13} {'runs (s)':<28} {'peak RSS/worker':>16}",
          file=out)
    for label, walls, _, peak in rows:
        runs = ", ".join(f"{w:.1f}" for w in walls)
        print(f"{label:<22} {statistics.median(walls):>13.1f} {runs:<28} "
              f"{peak / 1024:>12.0f} MiB", file=out)
    print(f"overhead per task (Ray − processes, medians): {1000 * (ray - base) / tasks:+.0f} ms",
          file=out)
    print("results equal (timings aside)" if difference is None else
          f"RESULTS DIFFER at {difference}", file=out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_ray", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpus", type=int, default=2, help="cores for both executors (default 2)")
    p.add_argument("--runs", type=int, default=3, help="timed runs per executor (default 3)")
    p.add_argument("--scale", type=int, default=4, help="synthetic trace scale (default 4)")
    p.add_argument("--skip-suite", action="store_true", help="only the scaled trace")
    p.add_argument("--skip-scaled", action="store_true", help="only the paper suite")
    args = p.parse_args(argv)

    import ray
    t0 = time.perf_counter()
    ray.init(num_cpus=args.cpus, logging_level="ERROR", log_to_driver=False)
    print(f"local Ray instance of {args.cpus} CPUs started in "
          f"{time.perf_counter() - t0:.1f} s (not in the figures below)")
    executors = [(f"processes ({args.cpus})", ProcessExecutor(args.cpus)),
                 (f"Ray local ({args.cpus} CPUs)", RayExecutor(num_cpus=args.cpus))]
    if not args.skip_suite:
        report("paper suite --quick", measure("suite", sweep_suite, executors, args.runs))
    if args.skip_scaled:
        ray.shutdown()
        return 0
    workload = scaled_workload(args.scale)
    cost = build_cost_model(load_model(MODEL))
    unbounded = run_policy("sglang", workload, cost, CacheConfig(Capacity.unbounded()))
    config = CacheConfig(Capacity.shared(max(1, int(unbounded.peak_bytes) // 10)))
    name = (f"simulate {','.join(SCALED_POLICIES)} on {workload.name} "
            f"({len(workload.requests):,} requests, {workload.total_input_tokens:,} tokens)")
    report(name, measure("scaled", partial(sweep_scaled, workload, cost, config), executors,
                         args.runs))
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

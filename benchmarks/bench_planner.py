"""Planner benchmarks: end-to-end planning time, and planned vs baselines vs the bound.

    python benchmarks/bench_planner.py timing            # `marconi-plan` on Mooncake conversation
    python benchmarks/bench_planner.py table [--workloads a,b] [--model M]
    python benchmarks/bench_planner.py bounds            # LP vs Lagrangian vs knapsack, sizes, times
    python benchmarks/bench_planner.py diagnose          # what knowing the future is worth

`table`: for each workload, the three capacities at which `sglang` reaches 25 / 50 / 75 %
of `infinite`'s FLOP savings (on the whole workload, as the simulator's README table).
At each, a plan is derived on the first half and every policy is scored on the second
half (the honest figure), and on the first half too (the fitted figure); the upper bound
is computed on the half being scored. Prints a Markdown table (docs/planner.md).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRACES = REPO.parent / "shared" / "traces"
BASELINES = ("vllm-all", "vllm-align", "sglang", "marconi", "marconi-static")
DEFAULT_WORKLOADS = ("mooncake_conversation", "mooncake_synthetic", "builtin:default",
                     "builtin:chat", "builtin:agent", "builtin:shared-prompts")


def load(name: str):
    from marconi.runtime.sim.generators import named_workload
    from marconi.runtime.workload import load_trace
    if name.startswith("builtin:"):
        return named_workload(name.split(":", 1)[1])
    return load_trace(TRACES / f"{name}.jsonl")


def table(workloads, model: str, shares=(0.25, 0.5, 0.75)) -> list[dict]:
    from marconi.passes import build_cost_model
    from marconi.planner.capacity_search import capacity_for_share
    from marconi.planner.offline import offline_bound
    from marconi.planner.plan import derive_plan
    from marconi.runtime.capacity import Capacity
    from marconi.runtime.config import CacheConfig
    from marconi.runtime.cache.policies.planned import Planned
    from marconi.runtime.sim.simulator import replay_policy, run_policy
    from marconi.spec import load_model

    cost = build_cost_model(load_model(model))
    rows = []
    for name in workloads:
        wl = load(name)
        first, second = wl.split()
        for share in shares:
            point = capacity_for_share(wl, cost, share)
            cap = point.capacity.total_bytes
            t0 = time.perf_counter()
            result = derive_plan(first, cost, Capacity.shared(cap))
            plan_s = time.perf_counter() - t0
            cfg = CacheConfig(capacity=Capacity.shared(cap))
            for half, part in (("first (fitted)", first), ("second (held out)", second)):
                scores = {p: run_policy(p, part, cost, cfg).flop_savings for p in BASELINES}
                planned = replay_policy(Planned.with_plan(result.plan), part, cost,
                                        cfg).flop_savings
                bound = offline_bound(part, cost, Capacity.shared(cap)).upper
                best = max(scores, key=scores.get)
                rows.append({"workload": name, "share": share, "capacity_bytes": cap,
                             "sglang_share": point.share, "half": half, **scores,
                             "planned": planned, "best_baseline": best,
                             "gain_vs_best": planned / scores[best] - 1 if scores[best] else
                             float("nan"),
                             "bound": bound.flop_savings, "bound_method": bound.method,
                             "share_of_bound": planned / bound.flop_savings
                             if bound.flop_savings else float("nan"),
                             "plan_seconds": plan_s})
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    """The table of docs/planner.md. `headroom` = bound / best baseline − 1: no policy,
    online or not, can beat the best baseline by more than that."""
    from marconi.units import format_bytes
    head = ("| workload | capacity | half | " + " | ".join(BASELINES) +
            " | planned | gain vs best | headroom | bound | planned / bound |")
    out = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        best = r[r["best_baseline"]]
        cells = [r["workload"], f"{format_bytes(r['capacity_bytes'])} "
                 f"(sglang {100 * r['sglang_share']:.0f} %)", r["half"].split()[0]]
        cells += [f"{r[p]:.3f}" for p in BASELINES]
        cells += [f"**{r['planned']:.3f}**", f"{100 * r['gain_vs_best']:+.1f} % "
                  f"({r['best_baseline']})", f"{100 * (r['bound'] / best - 1):+.1f} %",
                  f"{r['bound']:.3f} ({r['bound_method']})",
                  f"{100 * r['share_of_bound']:.0f} %"]
        out.append("| " + " | ".join(cells) + " |")
    held = [r for r in rows if r["half"].startswith("second")]
    if held:
        out += ["", "Held-out halves (plan fitted on the first half), means over the three "
                "capacities:", "",
                "| workload | gain vs best baseline | headroom | planned / bound |",
                "|---|---|---|---|"]
        groups: dict[str, list[dict]] = {}
        for r in held:
            groups.setdefault(r["workload"], []).append(r)
        groups["all"] = held
        for name, rs in groups.items():
            gain = sum(r["gain_vs_best"] for r in rs) / len(rs)
            room = sum(r["bound"] / r[r["best_baseline"]] - 1 for r in rs) / len(rs)
            frac = sum(r["share_of_bound"] for r in rs) / len(rs)
            out.append(f"| {name} | {100 * gain:+.1f} % | {100 * room:+.1f} % | "
                       f"{100 * frac:.0f} % |")
    return "\n".join(out)


def bounds(model: str) -> str:
    """Exact LP vs the relaxations on prefixes of the Mooncake traces (where the LP fits)."""
    from marconi.passes import build_cost_model
    from marconi.planner import ilp
    from marconi.planner.candidates import build_problem
    from marconi.planner.offline import offline_bound
    from marconi.runtime.capacity import Capacity
    from marconi.runtime.workload import load_trace
    from marconi.spec import load_model

    cost = build_cost_model(load_model(model))
    out = ["| trace | requests | capacity | y + w + (C3) rows | LP | Lagrangian | knapsack | "
           "rounded | LP s | Lagrangian s |", "|" + "---|" * 10]
    for name in ("mooncake_conversation", "mooncake_synthetic"):
        for n in (600, 1500):
            wl = load_trace(TRACES / f"{name}.jsonl", limit=n)
            for gib in (16, 64):
                cap = gib * 2**30
                problem = build_problem(wl, cost, Capacity.shared(cap))
                size = ilp.model_size(problem)
                res = {m: offline_bound(wl, cost, Capacity.shared(cap), method=m, problem=problem)
                       for m in ("lp", "lagrangian", "knapsack")}
                best = max(r.rounded.flop_savings for r in res.values())
                out.append(f"| {name} | {n} | {gib} GiB | "
                           f"{size['y'] + size['w'] + size['precedence_rows']:,} | "
                           f"{res['lp'].upper.flop_savings:.4f} | "
                           f"{res['lagrangian'].upper.flop_savings:.4f} | "
                           f"{res['knapsack'].upper.flop_savings:.4f} | {best:.4f} | "
                           f"{res['lp'].seconds:.1f} | {res['lagrangian'].seconds:.1f} |")
                print(out[-1], file=sys.stderr, flush=True)
    return "\n".join(out)


def _reuse_labels(workload):
    """Per request: is its input end (last full block) passed by a later request? Plus
    the online features `planned` could see at its arrival."""
    import math

    import numpy as np

    from marconi.planner.prefix_tree import build_prefix_tree
    tree = build_prefix_tree(workload)
    reqs = workload.requests
    arrival = np.array([r.arrival_ms for r in reqs])
    label = np.zeros(len(reqs))
    feats = []
    for r, req in enumerate(reqs):
        path = tree.input_path(r)
        seen, prev, passes = 0, None, 0
        for k in path:
            t = tree.touches(k)
            i = int(np.searchsorted(t, r))
            if i:
                seen, prev, passes = int(tree.depth[k]), int(t[i - 1]), i
        b = req.block_size
        end = len(req.input_ids) if b == 1 else req.input_tokens // b
        below = [k for k in path if tree.depth[k] >= end]
        if end and below:
            t = tree.touches(int(below[0]))
            label[r] = int(np.searchsorted(t, r)) + 1 < len(t)
        seen_t = req.prefix_tokens(seen)
        since = (arrival[r] - arrival[prev]) / 1000 if prev is not None else 1e6
        feats.append([math.log(req.input_tokens), seen_t / req.input_tokens,
                      math.log1p(req.input_tokens - seen_t), math.log1p(req.output_tokens),
                      math.log1p(passes), math.log1p(since)])
    return label, np.array(feats)


def _logistic_auc(x_fit, y_fit, x_test, y_test) -> float:
    import numpy as np
    mu, sd = x_fit.mean(0), x_fit.std(0) + 1e-9

    def design(x):
        return np.c_[np.ones(len(x)), (x - mu) / sd]

    z, w = design(x_fit), np.zeros(x_fit.shape[1] + 1)
    for _ in range(50):                                   # Newton steps, small L2
        p = 1 / (1 + np.exp(-z @ w))
        h = (z * (p * (1 - p))[:, None]).T @ z + 1e-2 * np.eye(len(w))
        w -= np.linalg.solve(h, z.T @ (p - y_fit) + 1e-2 * w)
    score = design(x_test) @ w
    ranks = np.empty(len(score))
    ranks[np.argsort(score)] = np.arange(len(score))
    pos = y_test == 1
    n1, n0 = pos.sum(), len(y_test) - pos.sum()
    return float((ranks[pos].sum() - n1 * (n1 - 1) / 2) / (n1 * n0))


def diagnose(model: str) -> str:
    """Held-out second halves of the Mooncake traces: vLLM-align, `planned` (fitted on the
    first half) and a diagnostic oracle that knows which input ends will be reused (plain
    LRU, align-like admission): the value of predicting reuse. Plus the held-out AUC of a
    logistic model of reuse on the online features."""
    from marconi.passes import build_cost_model
    from marconi.planner.plan import derive_plan
    from marconi.runtime.capacity import Capacity
    from marconi.runtime.config import CacheConfig
    from marconi.runtime.cache.eviction import StateAndLeafLRU
    from marconi.runtime.cache.policies.base import Admission, Policy
    from marconi.runtime.cache.policies.planned import Planned
    from marconi.runtime.sim.simulator import replay_policy, run_policy
    from marconi.spec import load_model

    cost = build_cost_model(load_model(model))
    out = ["| trace (second half) | capacity | vllm-align | planned | oracle reuse admission "
           "| logistic AUC |", "|---|---|---|---|---|---|"]
    for name in ("mooncake_conversation", "mooncake_synthetic"):
        first, second = load(name).split()
        label, _ = _reuse_labels(second)
        auc = _logistic_auc(*_reuse_labels(first)[::-1], *_reuse_labels(second)[::-1])

        class Oracle(Policy):
            refresh = "path"

            def __init__(self, cost, config, workload):
                super().__init__(cost, config, workload)
                self.i = 0

            def make_index(self):
                return StateAndLeafLRU()

            def admit(self, seq, m):
                ck = set()
                end = seq.floor_grid(seq.n_input, seq.block)
                if label[self.i] and end > m.hit_depth:
                    ck.add(end)
                if m.partial is not None and m.depth > m.hit_depth:
                    ck.add(m.depth)
                self.i += 1
                return Admission(max(ck) if ck else 0, tuple(sorted(ck)))

        Oracle.name = "oracle-reuse"
        for gib in (160, 320, 640):
            cap = gib * 2**30
            cfg = CacheConfig(capacity=Capacity.shared(cap))
            plan = derive_plan(first, cost, Capacity.shared(cap)).plan
            align = run_policy("vllm-align", second, cost, cfg).flop_savings
            planned = replay_policy(Planned.with_plan(plan), second, cost, cfg).flop_savings
            oracle = replay_policy(Oracle, second, cost, cfg).flop_savings
            out.append(f"| {name} | {gib} GiB | {align:.3f} | {planned:.3f} | {oracle:.3f} | "
                       f"{auc:.2f} |")
            print(out[-1], file=sys.stderr, flush=True)
    return "\n".join(out)


def timing(model: str) -> None:
    """Wall and CPU seconds of the whole main job (cost model, default capacity, plan,
    every baseline on the whole trace and on the held-out half, bounds, runtime.yaml)."""
    import os
    import resource
    trace = TRACES / "mooncake_conversation.jsonl"
    cmd = [sys.executable, "-m", "marconi.cli", model, "--trace", str(trace),
           "-o", "/tmp/bench_planner_runtime.yaml", "--format", "json", "--jobs", "2"]
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode:
        sys.exit(out.stderr)
    doc = json.loads(out.stdout)
    print(f"marconi-plan on {trace.name} ({doc['capacity_source']}): {wall:.1f} s wall, "
          f"{usage.ru_utime + usage.ru_stime:.1f} s CPU over all processes, "
          f"{os.cpu_count()} CPUs, load average {load0:.1f} at start")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=("timing", "table", "bounds", "diagnose"))
    p.add_argument("--model", default=str(REPO / "examples" / "models" /
                                          "marconi-7b-hybrid.yaml"))
    p.add_argument("--workloads", default=",".join(DEFAULT_WORKLOADS))
    p.add_argument("--json", help="also write the rows as JSON here")
    p.add_argument("--from-json", help="table: only render rows saved by an earlier --json")
    args = p.parse_args()
    if args.what == "timing":
        timing(args.model)
        return
    if args.what == "bounds":
        print(bounds(args.model))
        return
    if args.what == "diagnose":
        print(diagnose(args.model))
        return
    if args.from_json:
        print(markdown(json.loads(Path(args.from_json).read_text())))
        return
    rows = table(args.workloads.split(","), args.model)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    print(markdown(rows))


if __name__ == "__main__":
    main()

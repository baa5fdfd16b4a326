"""Planner benchmarks: end-to-end planning time, and planned vs baselines vs the bound.

    python benchmarks/bench_planner.py timing            # `marconi-plan` on Mooncake conversation
    python benchmarks/bench_planner.py table [--workloads a,b] [--model M]

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
    from marconi.runtime.generators import named_workload
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
    from marconi.runtime.policies.planned import Planned
    from marconi.runtime.simulator import run_policy
    from marconi.spec import load_model

    cost = build_cost_model(load_model(model))
    rows = []
    for name in workloads:
        wl = load(name)
        first, second = wl.split()
        for share in shares:
            point = capacity_for_share(wl, cost, share)
            cap = point.capacity_bytes
            t0 = time.perf_counter()
            result = derive_plan(first, cost, cap)
            plan_s = time.perf_counter() - t0
            cfg = CacheConfig(capacity=Capacity.shared(cap))
            for half, part in (("first (fitted)", first), ("second (held out)", second)):
                scores = {p: run_policy(p, part, cost, cfg).flop_savings for p in BASELINES}
                planned = Planned.with_plan(result.plan).run(part, cost, cfg).flop_savings
                bound = offline_bound(part, cost, cap).upper
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
    from marconi.units import format_bytes
    head = ("| workload | capacity | half | " + " | ".join(BASELINES) +
            " | planned | gain vs best | bound | planned / bound |")
    out = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        cells = [r["workload"], f"{format_bytes(r['capacity_bytes'])} "
                 f"(sglang {100 * r['sglang_share']:.0f} %)", r["half"]]
        cells += [f"{r[p]:.4f}" for p in BASELINES]
        cells += [f"**{r['planned']:.4f}**", f"{100 * r['gain_vs_best']:+.1f} % "
                  f"({r['best_baseline']})", f"{r['bound']:.4f} ({r['bound_method']})",
                  f"{100 * r['share_of_bound']:.0f} %"]
        out.append("| " + " | ".join(cells) + " |")
    held = [r for r in rows if r["half"].startswith("second")]
    if held:
        gain = sum(r["gain_vs_best"] for r in held) / len(held)
        frac = sum(r["share_of_bound"] for r in held) / len(held)
        out.append("")
        out.append(f"Held-out halves: mean gain over the best baseline {100 * gain:+.1f} %, "
                   f"mean share of the bound {100 * frac:.0f} % ({len(held)} cases).")
    return "\n".join(out)


def timing(model: str) -> None:
    trace = TRACES / "mooncake_conversation.jsonl"
    cmd = [sys.executable, "-m", "marconi.cli", model, "--trace", str(trace),
           "-o", "/tmp/bench_planner_runtime.yaml", "--format", "json"]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode:
        sys.exit(out.stderr)
    print(f"marconi-plan on {trace.name}: {wall:.1f} s wall (exit {out.returncode})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=("timing", "table"))
    p.add_argument("--model", default=str(REPO / "examples" / "models" /
                                          "marconi-7b-hybrid.yaml"))
    p.add_argument("--workloads", default=",".join(DEFAULT_WORKLOADS))
    p.add_argument("--json", help="also write the rows as JSON here")
    args = p.parse_args()
    if args.what == "timing":
        timing(args.model)
        return
    rows = table(args.workloads.split(","), args.model)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    print(markdown(rows))


if __name__ == "__main__":
    main()

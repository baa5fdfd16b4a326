"""The simulator's policy table: token hit rate and FLOP savings of every policy on the
Mooncake traces, at the capacities where LRU (`sglang`) reaches about 25 %, 50 % and 75 %
of `infinite`'s token hit rate.

    python benchmarks/simulator_table.py                       # both traces, 7B + Nemotron-H
    python benchmarks/simulator_table.py --models marconi-7b-hybrid --traces synthetic
    python benchmarks/simulator_table.py --json table.json

Cost models come from `build_cost_model(load_model(examples/models/NAME.yaml))`. The
capacities are found by bisection on a log scale (sglang's hit rate grows with capacity),
to within 1 % of the target hit rate or 16 steps, and rounded to 3 significant digits.
Where sglang cannot reach a target (its admission caps its hit rate below infinite's),
the search ends at the capacity that holds the whole trace; each column header states the
ratio actually reached. Prints a Markdown table per (model, trace) for docs/simulator.md;
cells are "token hit rate / FLOP savings".
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from marconi.passes import build_cost_model
from marconi.runtime.capacity import Capacity
from marconi.planner.plan import planned_policies
from marconi.runtime.config import CacheConfig
from marconi.runtime.cache.policies import policy_names
from marconi.runtime.sim.simulator import run_policy
from marconi.runtime.workload import load_trace
from marconi.spec import load_model

REPO = Path(__file__).resolve().parents[1]
TRACES = REPO.parent / "shared" / "traces"
FRACTIONS = (0.25, 0.50, 0.75)


def hit_at(workload, cost, capacity: int) -> float:
    return run_policy("sglang", workload, cost,
                      CacheConfig(Capacity.shared(capacity))).token_hit_rate


def find_capacity(workload, cost, target: float, lo: float, hi: float) -> int:
    """Capacity (bytes) at which sglang's token hit rate is about `target`."""
    best = None
    for _ in range(16):
        mid = math.sqrt(lo * hi)
        rate = hit_at(workload, cost, int(mid))
        if best is None or abs(rate - target) < abs(best[1] - target):
            best = (mid, rate)
        if abs(rate - target) <= 0.01 * target:
            break
        lo, hi = (mid, hi) if rate < target else (lo, mid)
    return int(float(f"{best[0]:.3g}"))


def run(models, traces, policies, out=sys.stdout):
    rows = []
    for model in models:
        cost = build_cost_model(load_model(REPO / "examples" / "models" / f"{model}.yaml"))
        for trace in traces:
            workload = load_trace(TRACES / f"mooncake_{trace}.jsonl")
            inf = run_policy("infinite", workload, cost, CacheConfig(Capacity.shared(1)))
            hi = float(inf.peak_bytes)
            caps = [find_capacity(workload, cost, f * inf.token_hit_rate, cost.state_bytes(),
                                  hi) for f in FRACTIONS]
            results = {}
            for cap in caps:
                cfg = CacheConfig(Capacity.shared(cap))
                for name in policies:
                    t0 = time.perf_counter()
                    r = run_policy(name, workload, cost, cfg, bound=planned_policies())
                    results[cap, name] = r
                    rows.append({"model": model, "trace": trace, "capacity_bytes": cap,
                                 "policy": name, "token_hit_rate": r.token_hit_rate,
                                 "flop_savings": r.flop_savings, "seconds":
                                 time.perf_counter() - t0, "params": r.params})
            print(markdown(model, trace, cost, inf, caps, policies, results), file=out)
            out.flush()
    return rows


def markdown(model, trace, cost, inf, caps, policies, results) -> str:
    head = [f"\n**{model}** on **{trace}** (KV {cost.kv_bytes_per_token:,} B/token, "
            f"state {cost.state_bytes() / 2**20:.1f} MiB = KV of "
            f"{cost.checkpoint_break_even_tokens:,.0f} tokens; infinite: token hit "
            f"{inf.token_hit_rate:.1%}, FLOP savings {inf.flop_savings:.1%})\n"]
    cols = [f"{c / 1e9:,.0f} GB" if c >= 1e10 else f"{c / 1e9:.3g} GB" for c in caps]
    lru = [results[cap, "sglang"].token_hit_rate / inf.token_hit_rate
           if (cap, "sglang") in results else f for cap, f in zip(caps, FRACTIONS)]
    head.append("| policy | " + " | ".join(f"{c} (LRU {x:.0%} of ∞)" for c, x in zip(cols, lru))
                + " |")
    head.append("|---|" + "---:|" * len(caps))
    for name in policies:
        cells = []
        for cap in caps:
            r = results[cap, name]
            cell = f"{r.token_hit_rate:.1%} / {r.flop_savings:.1%}"
            if "alpha" in r.params:
                cell += f" (α={r.params['alpha']})"
            cells.append(cell)
        head.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(head)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="marconi-7b-hybrid,nemotron-h-8b")
    p.add_argument("--traces", default="conversation,synthetic")
    p.add_argument("--policies", default=None,
                   help="default: every registered policy but infinite")
    p.add_argument("--json", default=None, help="also write the rows here")
    args = p.parse_args(argv)
    policies = (args.policies.split(",") if args.policies else
                [n for n in policy_names() if n != "infinite"])
    rows = run(args.models.split(","), args.traces.split(","), policies)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Continuous re-planning (issue #14 item 2): `planned` planning online once against
re-planning on a sliding window, on a workload that drifts and on the Mooncake traces.

    python -m benchmarks.bench_replan [--quick] [--out FILE]

`planned` without a saved plan plans online from the requests it has served (never a
future one). Rows, per workload and capacity (fractions of the reference footprint, the
unbounded `sglang` peak bytes), FLOP savings of the whole trace:

- baselines ``vllm-align``, ``sglang``, ``marconi``;
- ``defaults``: the default rules, never planned (`Planned` without a re-planner);
- ``once``: planned once, as soon as the cache has evicted and 200 requests were served,
  from everything served so far (``replan_every`` infinite);
- ``re-planned``: the default schedule, first plan as ``once`` and then every 2,000
  requests from the last 2,000 (`Planned.replan_every`, `Planned.replan_window`);
- ``re-planned+hedge``: the same, hedged by ghosts of the baselines (what `simulate
  --policy planned` runs); its number of online plans and seconds.

The drifting workload is the built-in agents workload followed by the built-in chat
workload (`drifting`): rules planned on the agents are wrong for the chat.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRACES = REPO.parent / "shared" / "traces"
FRACTIONS = (1 / 32, 1 / 8, 1 / 2)


def drifting(quick: bool):
    """Agents, then chat: the second workload's arrivals start after the first's end."""
    from marconi.runtime.sim.generators import AgentSpec, ChatSpec, generate
    from marconi.runtime.workload import Workload
    agents = generate([AgentSpec(sessions=12 if quick else 60)], seed=1)
    chat = generate([ChatSpec(sessions=40 if quick else 200)], seed=2)
    shift = agents.requests[-1].arrival_ms + 1.0
    n = len(agents.requests)
    tail = [dataclasses.replace(r, index=n + r.index, arrival_ms=r.arrival_ms + shift)
            for r in chat.requests]
    return Workload(name="agents-then-chat", requests=agents.requests + tuple(tail),
                    block_size=1, kind=agents.kind)


def policies():
    from marconi.planner.plan import planned_policy, replan_online
    from marconi.runtime.cache.policies.hedged import Hedged
    from marconi.runtime.cache.policies.planned import Planned

    class Once(Planned.with_planner(replan_online)):
        replan_every = 10 ** 12

    return {"defaults": Planned, "once": Once,
            "re-planned": planned_policy(hedged=False),
            "re-planned+hedge": Hedged.around(Planned.with_planner(replan_online))}


def rows(quick: bool) -> list[dict]:
    from marconi.passes import build_cost_model
    from marconi.runtime.capacity import Capacity
    from marconi.runtime.config import CacheConfig
    from marconi.runtime.sim.simulator import run_policy, replay_policy
    from marconi.runtime.workload import load_trace
    from marconi.spec import load_model

    from benchmarks.suites import BASE_MODEL

    cost = build_cost_model(load_model(REPO / "examples" / "models" / f"{BASE_MODEL}.yaml"))
    workloads = [drifting(quick)]
    path = TRACES / "mooncake_conversation.jsonl"
    if path.exists():
        workloads.append(load_trace(str(path), limit=3000 if quick else None))
    else:
        print(f"left out: {path} not found", file=sys.stderr)
    out = []
    for w in workloads:
        footprint = run_policy("sglang", w, cost,
                               CacheConfig(capacity=Capacity.unbounded())).peak_bytes
        for f in FRACTIONS:
            config = CacheConfig(capacity=Capacity.shared(max(1, int(footprint * f))))
            row = {"workload": w.name, "requests": len(w.requests), "fraction": f}
            for p in ("vllm-align", "sglang", "marconi"):
                row[p] = run_policy(p, w, cost, config).flop_savings
            for name, cls in policies().items():
                t0 = time.perf_counter()
                r = replay_policy(cls, w, cost, config)
                row[name] = r.flop_savings
                row[f"{name}_s"] = time.perf_counter() - t0
                row[f"{name}_plans"] = len(r.params.get("replanned_at_requests") or [])
            out.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    return out


def markdown(found: list[dict]) -> str:
    cols = ("vllm-align", "sglang", "marconi", "defaults", "once", "re-planned",
            "re-planned+hedge")
    head = ("| workload | capacity | " + " | ".join(cols) +
            " | online plans | seconds (once, re-planned, +hedge) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in found:
        f = r["fraction"]
        lines.append("| " + " | ".join(
            [r["workload"], "1" if f >= 1 else f"1/{round(1 / f)}"] +
            [f"{100 * r[c]:.1f}" for c in cols] +
            [str(r["re-planned_plans"]),
             f"{r['once_s']:.0f}, {r['re-planned_s']:.0f}, {r['re-planned+hedge_s']:.0f}"])
            + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    args = ap.parse_args(argv)
    found = rows(args.quick)
    if args.out:
        Path(args.out).write_text(json.dumps(found, indent=1))
    print(markdown(found))


if __name__ == "__main__":
    main()

"""Simulator speed (figures go in docs/simulator.md). Single process, single thread.

    python benchmarks/bench_simulator.py mooncake [--capacities 8.5e11,2.2e12,6e12]
    python benchmarks/bench_simulator.py large [--requests 50000 --blocks 12000000]

`mooncake`: the Mooncake conversation trace (12,031 requests, 288,500 blocks) under every
registered policy, Marconi's α tuning and the static-α sweep included, with the paper's
7B hybrid (examples/models/marconi-7b-hybrid.yaml), by default at 850 / 2,200 / 6,000 GB
(where the static-α sweep is slowest); the policy table's capacities
(benchmarks/simulator_table.py) are ``--capacities 3.33e11,1.09e12,7.55e12``. Target:
under 10 s per policy on one core.

`large`: a synthetic block trace of 50,000 requests and ~12M blocks (512 tokens each),
built here (`synthetic_trace`), same model, at capacities where the cache holds 2 % and
10 % of the trace's distinct blocks' KV. Target: under 60 s per policy.

Times are CPU seconds of this process (`time.process_time`) and wall seconds; on a shared
machine the CPU figure is the one to compare.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from marconi.passes import build_cost_model            # noqa: E402
from marconi.runtime.capacity import Capacity          # noqa: E402
from marconi.runtime.config import CacheConfig         # noqa: E402
from marconi.planner.plan import planned_policies  # noqa: E402
from marconi.runtime.cache.policies import get_policy, policy_names  # noqa: E402
from marconi.runtime.sim.simulator import replay_policy  # noqa: E402
from marconi.runtime.workload import Request, Workload, load_trace  # noqa: E402
from marconi.spec import load_model                    # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TRACE = REPO.parent / "shared" / "traces" / "mooncake_conversation.jsonl"
BLOCK = 512


def synthetic_trace(requests: int = 50_000, blocks: int = 12_000_000,
                    seed: int = 0) -> Workload:
    """Mooncake-like chat with long contexts, in chained block ids.

    Sessions pick one of 16 system prompts (8 blocks, Zipf), attach a context of
    log-normal length (the size is scaled so the trace has about `blocks` input blocks),
    then take turns: each turn's input is everything before plus a few new full blocks
    (the last turn's output and the new user message) and a partial last block, as in the
    Mooncake traces (a partial block's id never recurs). Sessions start as a Poisson
    process; a session's turns are an exponential 60 s apart.
    """
    rng = random.Random(seed)
    ids = itertools.count()
    prompts = [tuple(itertools.islice(ids, 8)) for _ in range(16)]
    weights = [1 / (k + 1) for k in range(16)]
    turns_mean, grow = 8, 6
    # an average request holds 8 prompt blocks, ~36 history blocks (6.5 earlier turns of
    # ~5.6 blocks) and 1 partial block besides its context
    mean_context = max(1.0, blocks / requests - 45.5)
    raw = []
    start = 0.0
    while len(raw) < requests:
        start += rng.expovariate(1 / 2000.0)
        prompt = rng.choices(prompts, weights)[0]
        context = tuple(itertools.islice(
            ids, max(1, int(rng.lognormvariate(math.log(mean_context) - 0.125, 0.5)))))
        history = prompt + context
        t = start
        for _ in range(1 + min(40, int(rng.expovariate(1 / (turns_mean - 1))))):
            inp = history + (next(ids),)
            length = (len(inp) - 1) * BLOCK + rng.randint(1, BLOCK)
            raw.append((t, inp, length, rng.randint(50, 800)))
            history += tuple(itertools.islice(ids, max(1, int(rng.expovariate(1 / grow)))))
            t += rng.expovariate(1 / 60_000.0)
    raw.sort(key=lambda r: r[0])
    reqs = tuple(Request(index=i, arrival_ms=t, input_ids=inp, input_tokens=length,
                         output_tokens=out, block_size=BLOCK)
                 for i, (t, inp, length, out) in enumerate(raw[:requests]))
    return Workload(name=f"synthetic-{requests}", requests=reqs, block_size=BLOCK,
                    kind="block", source=f"bench_simulator.synthetic_trace(seed={seed})")


def time_policies(workload, cost, capacity: int, policies) -> list[dict]:
    rows = []
    bound = planned_policies()                  # `planned` plans online
    for name in policies:
        cls = bound.get(name) or get_policy(name)
        config = CacheConfig(Capacity.shared(capacity))
        c0, w0 = time.process_time(), time.perf_counter()
        r = replay_policy(cls, workload, cost, config)
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        rows.append({"policy": name, "capacity": capacity, "cpu_s": cpu, "wall_s": wall,
                     "token_hit_rate": r.token_hit_rate, "params": r.params})
        extra = ""
        if "alpha" in r.params:
            extra = f" alpha={r.params['alpha']}"
            if r.params.get("tuning_seconds"):
                extra += (f" (tuned at request {r.params['tuned_at_request']:,}, "
                          f"tuning {r.params['tuning_seconds']:.1f} s)")
        print(f"  {name:15s} capacity {capacity / 1e9:>9,.1f} GB  cpu {cpu:6.2f} s  "
              f"wall {wall:6.2f} s  token hit {r.token_hit_rate:6.2%}{extra}", flush=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=("mooncake", "large"))
    p.add_argument("--model", default="marconi-7b-hybrid")
    p.add_argument("--capacities", default=None,
                   help="comma-separated byte counts (default: see the module docstring)")
    p.add_argument("--policies", default=None, help="default: every registered policy")
    p.add_argument("--requests", type=int, default=50_000)
    p.add_argument("--blocks", type=int, default=12_000_000)
    args = p.parse_args(argv)
    cost = build_cost_model(load_model(REPO / "examples" / "models" / f"{args.model}.yaml"))
    policies = args.policies.split(",") if args.policies else policy_names()
    if args.what == "mooncake":
        workload = load_trace(TRACE)
        caps = [int(float(c)) for c in (args.capacities or "8.5e11,2.2e12,6e12").split(",")]
    else:
        t0 = time.perf_counter()
        workload = synthetic_trace(args.requests, args.blocks)
        distinct = len({i for r in workload.requests for i in r.input_ids})
        n_blocks = sum(len(r.input_ids) for r in workload.requests)
        print(f"generated {len(workload.requests):,} requests, {n_blocks:,} blocks "
              f"({distinct:,} distinct) in {time.perf_counter() - t0:.1f} s")
        full = distinct * BLOCK * cost.kv_bytes_per_token
        caps = ([int(float(c)) for c in args.capacities.split(",")] if args.capacities
                else [int(0.02 * full), int(0.10 * full)])
    print(f"{workload.name}: {len(workload.requests):,} requests, model {cost.model}")
    for cap in caps:
        time_policies(workload, cost, cap, policies)
    return 0


if __name__ == "__main__":
    sys.exit(main())

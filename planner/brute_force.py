"""Brute-force offline optimum for tiny workloads: the obviously-correct slow path.

It enumerates every combination of per-request hits and keeps the best one whose cheapest
cache fits at every slot. It works on raw id prefixes (tuples) and sets, sharing no code with
the prefix tree, the ILP or the vectorised evaluator it checks.

- ``positions="keys"``: a request may resume only at the depths the ILP's candidates allow
  (checks the ILP: same optimum).
- ``positions="all"``: at any depth some earlier sequence reached (checks that the key-only
  LP and the relaxation bounds are upper bounds on every schedule, interior positions
  included).
"""

from __future__ import annotations

import itertools
import time

from marconi.passes.cost_model import CostModel
from marconi.planner.schedule import OfflineResult
from marconi.runtime.capacity import Capacity
from marconi.runtime.workload import Workload


def brute_force(workload: Workload, cost: CostModel, capacity: Capacity,
                positions: str = "all", key_depths: list[set[int]] | None = None,
                max_combinations: int = 2_000_000) -> OfflineResult:
    """Best schedule by enumeration. `key_depths[r]`: allowed depths when positions="keys"."""
    t0 = time.perf_counter()
    capacity_bytes = capacity.one_pool_bytes("brute force")
    reqs = workload.requests
    seqs = [tuple(r.input_ids) + tuple(r.output_ids or ()) for r in reqs]
    choices: list[list[int]] = []
    for r, req in enumerate(reqs):
        depths = [0]
        for d in range(1, len(req.input_ids) + 1):
            if _prev(seqs, r, req.input_ids[:d]) is None:
                break
            if positions == "all" or d in key_depths[r]:
                depths.append(d)
        choices.append(depths)
    n = 1
    for c in choices:
        n *= len(c)
    if n > max_combinations:
        raise ValueError(f"brute force: {n} combinations; expected at most {max_combinations}")

    best, best_hits = 0.0, tuple(0 for _ in reqs)
    for combo in itertools.product(*choices):
        value = sum(_saved(cost, req, d) for req, d in zip(reqs, combo))
        if value <= best:
            continue
        if max(slow_occupancy(workload, cost, combo)) <= capacity_bytes:
            best, best_hits = value, combo
    total = sum(cost.prefill_flops(r.input_tokens, 0) for r in reqs)
    return OfflineResult(method=f"brute-force-{positions}", saved_flops=best,
                         flop_savings=best / total if total else 0.0, is_upper_bound=False,
                         seconds=time.perf_counter() - t0,
                         details=(("hit_depths", best_hits),))


def slow_occupancy(workload: Workload, cost: CostModel, depths) -> list[float]:
    """Bytes at each slot of the cheapest cache giving request r a hit of `depths[r]` ids."""
    reqs = workload.requests
    seqs = [tuple(r.input_ids) + tuple(r.output_ids or ()) for r in reqs]
    held: list[tuple[int, int, tuple, int]] = []          # (first slot, last slot, prefix, r)
    for r, d in enumerate(depths):
        if d:
            prefix = tuple(reqs[r].input_ids[:d])
            held.append((_prev(seqs, r, prefix) + 1, r, prefix, r))
    out = []
    for t in range(len(reqs)):
        checkpoints, kv = set(), {}
        for first, last, prefix, r in held:
            if first <= t <= last:
                checkpoints.add(prefix)
                for j in range(1, len(prefix) + 1):
                    kv[prefix[:j]] = reqs[r]
        kv_bytes = sum(cost.kv_bytes(req.prefix_tokens(len(q)))
                       - cost.kv_bytes(req.prefix_tokens(len(q) - 1)) for q, req in kv.items())
        out.append(len(checkpoints) * cost.state_bytes() + kv_bytes)
    return out


def _prev(seqs, r: int, prefix: tuple) -> int | None:
    """Last request before r whose sequence starts with `prefix`."""
    for q in range(r - 1, -1, -1):
        if seqs[q][:len(prefix)] == tuple(prefix):
            return q
    return None


def _saved(cost: CostModel, req, d: int) -> float:
    if d == 0:
        return 0.0
    h = req.prefix_tokens(d)
    return cost.saved_flops(h, req.input_tokens - h)

"""Capacities worth studying: where a reference policy reaches a share of `infinite`.

The simulator's README table and `marconi-plan`'s default capacity use the capacities at
which LRU (the `sglang` baseline) reaches about 25 %, 50 % and 75 % of the FLOP savings of
an unbounded cache. Savings grow with capacity (not strictly: a policy's admission can
make them wiggle), so a bisection in log-capacity finds such a point in a dozen replays.
With a `warmup` fraction every share is measured on the counted requests. When an
unbounded cache saves nothing (no request reuses an earlier prefix), every capacity is
alike: the smallest considered is returned, with share NaN.
"""

from __future__ import annotations

import dataclasses
import math

from marconi.passes.cost_model import CostModel
from marconi.runtime.capacity import Capacity
from marconi.runtime.config import CacheConfig
from marconi.runtime.sim.simulator import run_policy
from marconi.runtime.workload import Workload


@dataclasses.dataclass(frozen=True)
class CapacityPoint:
    capacity: Capacity            # one shared pool
    share: float                  # reached share of the infinite cache's FLOP savings
                                  # (NaN: the infinite cache saves nothing)
    target: float


def capacity_for_share(workload: Workload, cost: CostModel, target: float,
                       policy: str = "sglang", config: CacheConfig | None = None,
                       iterations: int = 12, tolerance: float = 0.02,
                       warmup: float = 0.0) -> CapacityPoint:
    """The capacity at which `policy` reaches `target` × infinite's FLOP savings
    (within `tolerance`, or the closest met in `iterations` replays)."""
    base = dataclasses.replace(config or CacheConfig(capacity=Capacity.shared(1)),
                               warmup=warmup)
    ideal = run_policy("infinite", workload, cost, base).flop_savings
    total_tokens = sum(r.input_tokens + r.output_tokens for r in workload.requests)
    hi = cost.kv_bytes(total_tokens) + cost.state_bytes() * len(workload.requests)
    lo = max(cost.state_bytes() + cost.kv_bytes(max(r.input_tokens
                                                    for r in workload.requests)), 1)
    if not ideal:
        return CapacityPoint(Capacity.shared(lo), float("nan"), target)
    best = None

    def share_at(cap: int) -> float:
        cfg = dataclasses.replace(base, capacity=Capacity.shared(cap))
        return run_policy(policy, workload, cost, cfg).flop_savings / ideal

    for _ in range(iterations):
        mid = int(math.exp(0.5 * (math.log(lo) + math.log(hi))))
        s = share_at(mid)
        if best is None or abs(s - target) < abs(best.share - target):
            best = CapacityPoint(Capacity.shared(mid), s, target)
        if abs(s - target) <= tolerance:
            break
        if s < target:
            lo = mid
        else:
            hi = mid
    return best

"""The offline bound is an upper bound on every policy the simulator can run.

Random small traces (token traces with known outputs, block traces with partial blocks
and unknown outputs), several capacities, every registered policy except `infinite`
(which ignores the capacity by definition), every bound method; for a hybrid and a
state-free model (whose policies hit any cached KV prefix), without and with a warm-up
(policies and bound then count only the requests after it; the bound's cache may still be
filled by the warm-up requests).
"""

from __future__ import annotations

import pytest

from marconi.planner.candidates import build_problem
from marconi.planner.offline import offline_bound
from marconi.planner.plan import derive_plan, planned_policies
from helpers import causal_toy_cost, random_workload
from marconi.runtime.capacity import Capacity
from marconi.runtime.config import CacheConfig, MarconiParams
from marconi.runtime.cache.policies import policy_names
from marconi.runtime.cache.policies.planned import Planned
from marconi.runtime.sim.simulator import replay_policy, run_policy

POLICIES = [p for p in policy_names() if p != "infinite"]
CASES = [pytest.param(seed, block, 200, 0.0,
                      id=f"{'block' if block > 1 else 'token'}-seed{seed}")
         for seed in range(6) for block in (1, 4)]
CASES += [pytest.param(seed, block, state, warmup,
                       id=f"{'block' if block > 1 else 'token'}-seed{seed}-"
                          f"{'state-free' if not state else 'hybrid'}-warmup{warmup}")
          for seed in range(3) for block in (1, 4) for state, warmup in
          ((0, 0.0), (0, 0.5), (200, 0.5))]


@pytest.mark.parametrize("capacity", [600, 1500, 4000], ids=lambda c: f"C{c}")
@pytest.mark.parametrize("seed,block,state,warmup", CASES)
def test_bound_holds_for_every_policy(seed, block, state, warmup, capacity):
    workload = random_workload(seed, n=24, vocab=3, max_len=8, block_size=block)
    cost = causal_toy_cost(kv=40 if block == 1 else 10, state=state)
    config = CacheConfig(capacity=Capacity.shared(capacity), warmup=warmup,
                         marconi=MarconiParams(bootstrap_multiplier=1))
    problem = build_problem(workload, cost, Capacity.shared(capacity), warmup=warmup)
    bounds = {m: offline_bound(workload, cost, Capacity.shared(capacity), method=m, problem=problem,
                               warmup=warmup)
              for m in ("lp", "lagrangian", "knapsack")}
    results = {name: run_policy(name, workload, cost, config, bound=planned_policies())
               for name in POLICIES}
    plan = derive_plan(workload, cost, Capacity.shared(capacity), tune_replays=8,
                       warmup=warmup).plan
    results["planned(tuned)"] = replay_policy(Planned.with_plan(plan), workload, cost, config)
    for name, result in results.items():
        assert result.peak_occupancy <= 1.0 + 1e-12, name
        assert result.warmup_requests == int(warmup * len(workload.requests)), name
        for method, report in bounds.items():
            assert result.flop_savings <= report.upper.flop_savings + 1e-9, (name, method)
            assert report.rounded.flop_savings <= report.upper.flop_savings + 1e-9


@pytest.mark.parametrize("state", [200, 0], ids=["hybrid", "state-free"])
def test_warmup_bound_is_the_counted_part_of_a_schedule(state):
    """Every rounded schedule is feasible, so its counted savings (requests after the
    warm-up) are at most the warm-up bound; and with room for everything the warm-up bound
    is `infinite`'s counted savings exactly."""
    workload = random_workload(4, n=20, vocab=3, max_len=8)
    cost = causal_toy_cost(state=state)
    ample = 10**9
    ideal = run_policy("infinite", workload, cost,
                       CacheConfig(capacity=Capacity.shared(ample), warmup=0.5)).flop_savings
    report = offline_bound(workload, cost, Capacity.shared(ample), method="lp", warmup=0.5)
    assert report.warmup_requests == 10
    assert report.upper.flop_savings == pytest.approx(ideal, rel=1e-9)
    assert report.rounded.flop_savings == pytest.approx(ideal, rel=1e-9)
    whole = offline_bound(workload, cost, Capacity.shared(ample), method="lp")
    assert whole.upper.flop_savings != pytest.approx(ideal, rel=1e-6)   # another window


@pytest.mark.parametrize("state", [300, 0], ids=["hybrid", "state-free"])
def test_bound_reaches_infinite_when_capacity_is_ample(state):
    """With room for everything the bound equals an unbounded cache's savings."""
    workload = random_workload(3, n=20, vocab=3, max_len=8)
    cost = causal_toy_cost(state=state)
    ample = 10**9
    ideal = run_policy("infinite", workload, cost,
                       CacheConfig(capacity=Capacity.shared(ample))).flop_savings
    report = offline_bound(workload, cost, Capacity.shared(ample), method="lp")
    assert report.upper.flop_savings == pytest.approx(ideal, rel=1e-9)
    assert report.rounded.flop_savings == pytest.approx(ideal, rel=1e-9)

"""Offline optimum: ILP = brute force, LP ≥ ILP ≥ rounded, every bound ≥ every schedule."""

from __future__ import annotations

import numpy as np
import pulp
import pytest

from marconi.errors import SolverError
from marconi.planner import ilp
from marconi.planner.brute_force import brute_force, slow_occupancy
from marconi.planner.candidates import build_problem
from marconi.planner.offline import offline_bound
from marconi.planner.prefix_tree import build_prefix_tree
from marconi.planner.schedule import MISS, occupancy, saved_flops
from helpers import causal_toy_cost, random_workload
from marconi.runtime.capacity import Capacity
from marconi.runtime.workload import Request, Workload

TOL = 1e-6

# (seed, block size): token traces with known outputs and block traces with partial blocks
CASES = [pytest.param(seed, block, id=f"{'block' if block > 1 else 'token'}-seed{seed}")
         for seed in range(8) for block in (1, 4)]
CAPACITIES = [pytest.param(c, id=f"C{c}") for c in (400, 700, 1600)]


def _key_depths(problem):
    depths = [set() for _ in range(problem.n_requests)]
    for o in range(problem.n_options):
        depths[problem.opt_req[o]].add(int(problem.tree.depth[problem.opt_key[o]]))
    return depths


@pytest.mark.parametrize("capacity", CAPACITIES)
@pytest.mark.parametrize("seed,block", CASES)
def test_ilp_equals_brute_force_and_bounds_hold(seed, block, capacity):
    workload = random_workload(seed, n=6, block_size=block)
    cost = causal_toy_cost(kv=100 if block == 1 else 25)
    problem = build_problem(workload, cost, Capacity.shared(capacity))
    exact = ilp.solve_ilp(problem)
    keys = brute_force(workload, cost, Capacity.shared(capacity), positions="keys",
                       key_depths=_key_depths(problem))
    every = brute_force(workload, cost, Capacity.shared(capacity), positions="all")
    assert exact.saved_flops == pytest.approx(keys.saved_flops, abs=TOL)
    assert exact.peak_occupancy_bytes <= capacity
    for method in ("lp", "lagrangian", "knapsack"):
        report = offline_bound(workload, cost, Capacity.shared(capacity), method=method, problem=problem)
        assert report.upper.is_upper_bound and not report.rounded.is_upper_bound
        # the key-only bounds hold against schedules that may resume anywhere
        assert report.upper.saved_flops >= every.saved_flops - TOL, method
        assert report.upper.saved_flops >= exact.saved_flops - TOL, method
        assert exact.saved_flops >= report.rounded.saved_flops - TOL, method
        assert report.rounded.peak_occupancy_bytes <= capacity


@pytest.mark.parametrize("seed,block", CASES)
def test_lp_is_at_least_as_tight_as_the_relaxations(seed, block):
    workload = random_workload(seed, n=8, block_size=block)
    cost = causal_toy_cost()
    problem = build_problem(workload, cost, Capacity.shared(700))
    lp = offline_bound(workload, cost, Capacity.shared(700), method="lp", problem=problem).upper
    lag = offline_bound(workload, cost, Capacity.shared(700), method="lagrangian", problem=problem).upper
    knap = offline_bound(workload, cost, Capacity.shared(700), method="knapsack", problem=problem).upper
    assert lp.saved_flops <= lag.saved_flops + TOL <= knap.saved_flops + 2 * TOL


@pytest.mark.parametrize("seed,block", CASES)
def test_vectorised_occupancy_matches_the_slow_one(seed, block):
    workload = random_workload(seed, n=8, block_size=block)
    cost = causal_toy_cost()
    problem = build_problem(workload, cost, Capacity.shared(10**9))
    rng = np.random.default_rng(seed)
    for _ in range(5):
        hits = np.full(problem.n_requests, MISS)
        depths = [0] * problem.n_requests
        for r in range(problem.n_requests):
            opts = problem.options(r)
            if len(opts) and rng.random() < 0.8:
                o = int(rng.choice(list(opts)))
                hits[r] = o
                depths[r] = int(problem.tree.depth[problem.opt_key[o]])
        fast = occupancy(problem, hits)
        slow = slow_occupancy(workload, cost, depths)
        np.testing.assert_allclose(fast, slow)
        expected = sum(cost.saved_flops(req.prefix_tokens(d), req.input_tokens
                                        - req.prefix_tokens(d))
                       for req, d in zip(workload.requests, depths) if d)
        assert saved_flops(problem, hits) == pytest.approx(expected)


def _req(i, ids, out=()):
    return Request(index=i, arrival_ms=float(i), input_ids=tuple(ids), input_tokens=len(ids),
                   output_tokens=len(out), output_ids=tuple(out))


def test_hand_worked_chat_example():
    """Two turns of one chat and an unrelated request in between.

    r0 = [1 2 3] → output [4]; r1 = [9]; r2 = [1 2 3 4 5]. r2 can resume at depth 3
    (r0's input end) or 4 (r0's output end, a key). Depth 4 needs S + 4 tokens of KV held
    over slots 1..2: 300 + 400 = 700 bytes; depth 3 needs 600. So C = 700 saves
    saved(4, 1), C = 600 saves saved(3, 2) and C = 599 nothing.
    """
    cost = causal_toy_cost(kv=100, state=300)
    wl = Workload(name="chat", requests=(_req(0, [1, 2, 3], [4]), _req(1, [9]),
                                         _req(2, [1, 2, 3, 4, 5])))
    tree = build_prefix_tree(wl)
    assert sorted(tree.depth[tree.input_path(2)].tolist()) == [3, 4, 5]
    for capacity, depth in ((700, 4), (600, 3), (599, 0)):
        result = ilp.solve_ilp(build_problem(wl, cost, Capacity.shared(capacity)))
        expected = cost.saved_flops(depth, 5 - depth) if depth else 0.0
        assert result.saved_flops == pytest.approx(expected), capacity


def test_solver_status_is_checked(monkeypatch):
    """A stop on a time limit comes back from pulp as status Optimal; it must not pass."""
    workload = random_workload(0, n=6)
    model = ilp.build(build_problem(workload, causal_toy_cost(), Capacity.shared(700)))

    def fake_solve(solver):
        model.prob.status = pulp.LpStatusOptimal
        model.prob.sol_status = pulp.LpSolutionIntegerFeasible
        return model.prob.status

    monkeypatch.setattr(model.prob, "solve", fake_solve)
    with pytest.raises(SolverError, match="not proven optimal"):
        ilp.solve(model)


def test_the_planner_takes_one_bounded_shared_pool():
    """The offline planner models one shared pool: two pools or no bound are refused by
    name, before any work; a shared pool's bytes reach the problem unchanged."""
    from marconi.errors import CapacityError
    workload, cost = random_workload(0, n=6), causal_toy_cost()
    assert build_problem(workload, cost, Capacity.shared(700)).capacity_bytes == 700
    for capacity, says in ((Capacity.split(1000, 0.25), "two pools"),
                           (Capacity.unbounded(), "unbounded")):
        with pytest.raises(CapacityError, match=says) as e:
            offline_bound(workload, cost, capacity)
        assert e.value.where == "capacity"


def test_a_capacity_scales_with_its_pools():
    assert Capacity.shared(1000).scaled(0.25) == Capacity.shared(250)
    assert Capacity.split(1000, 0.25).scaled(2.0) == Capacity.split(2000, 0.25)
    assert Capacity.shared(3).scaled(0.01) == Capacity.shared(1)
    assert Capacity.unbounded().scaled(4.0) == Capacity.unbounded()

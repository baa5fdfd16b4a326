"""Executors (runtime/sim/executor.py) and the wiring they serve: results in order and the
same wherever they ran; `planned` plans online only through a re-planner it is given."""

from __future__ import annotations

import dataclasses
import threading

import pytest

from marconi.errors import MissingExtraError, TraceError, UserError
from marconi.runtime.cache.policies.planned import Planned
from marconi.runtime.capacity import Capacity
from marconi.runtime.config import CacheConfig, MarconiParams
from marconi.runtime.plan.rules import default_plan
from marconi.runtime.sim.executor import LocalExecutor, ProcessExecutor, executor_for
from marconi.runtime.sim.generators import default_workload
from marconi.runtime.sim.replay import Replay
from marconi.runtime.sim.simulator import simulate
from helpers import paper_7b_cost


@pytest.mark.parametrize("executor", [LocalExecutor(), ProcessExecutor(1), ProcessExecutor(3)],
                         ids=["local", "process-1", "process-3"])
def test_map_returns_every_result_in_order(executor):
    lock = threading.Lock()                          # unpicklable: reaches workers by fork
    assert executor.map(lambda x: (x * x, lock is not None), range(7)) == \
        [(x * x, True) for x in range(7)]
    assert executor.map(lambda x: x, []) == []


@pytest.mark.parametrize("executor", [LocalExecutor(), ProcessExecutor(3)],
                         ids=["local", "process-3"])
def test_done_sees_each_result_once_in_this_process(executor):
    seen = []                                        # appended to in the caller only
    results = executor.map(lambda x: x * 10, range(6), done=lambda i, r: seen.append((i, r)))
    assert results == [0, 10, 20, 30, 40, 50]
    assert sorted(seen) == [(i, 10 * i) for i in range(6)]


def test_a_failing_item_raises_in_the_caller():
    def fail_on_two(x):
        if x == 2:
            raise ValueError("item 2")
        return x
    with pytest.raises(ValueError, match="item 2"):
        ProcessExecutor(2).map(fail_on_two, range(4))


@pytest.mark.parametrize("error", [UserError("capacity", "lots; expected a byte count"),
                                   TraceError("t.jsonl:3", "not JSON"),
                                   MissingExtraError("--plot", "needs matplotlib")],
                         ids=lambda e: type(e).__name__)
def test_a_user_error_in_a_worker_reaches_the_caller_as_itself(error):
    # BrokenProcessPool before UserError pickled as (where, message): its __init__ takes two
    def fail_on_two(x):
        if x == 2:
            raise error
        return x
    with pytest.raises(type(error)) as caught:
        ProcessExecutor(2).map(fail_on_two, range(4))
    assert (caught.value.where, caught.value.message, str(caught.value)) == \
        (error.where, error.message, str(error))


def test_jobs_become_executors_at_the_edge():
    assert isinstance(executor_for(1), LocalExecutor)
    assert executor_for(4).workers == 4
    with pytest.raises(ValueError, match="jobs 0"):
        ProcessExecutor(0)


def test_policies_side_by_side_give_what_one_after_another_gives():
    w, cost = default_workload(0), paper_7b_cost()
    config = CacheConfig(Capacity.shared(20 * 10**9),
                         marconi=MarconiParams(alpha_grid=(0.0, 0.5, 1.0)))
    policies = ["sglang", "marconi", "marconi-static"]
    serial = simulate(w, cost, config, policies)
    parallel = simulate(w, cost, config, policies, executor=ProcessExecutor(2))

    def untimed(r):
        params = {k: v for k, v in r.params.items() if k != "tuning_seconds"}
        return dataclasses.replace(r, seconds=0.0, params=params)
    assert [untimed(r) for r in serial.results] == [untimed(r) for r in parallel.results]


def _planned_run(cls):
    w, cost = default_workload(0), paper_7b_cost()
    config = CacheConfig(Capacity.shared(5 * 10**9))     # first eviction at request 46
    policy = cls(cost, config, w)
    Replay(w, cost, policy).run()
    return policy, w, cost, config


def test_planned_plans_online_only_with_a_replanner():
    calls = []

    def replan(window, cost, capacity, chunk_tokens):
        calls.append((len(window.requests), capacity, chunk_tokens))
        return default_plan(cost.model, cost.fingerprint(), window.block_size, None,
                            capacity.total_bytes)

    bound, w, _, config = _planned_run(Planned.with_planner(replan))
    n = bound.planned_online
    # first at max(200, requests up to the first eviction), then every 2000 requests
    assert n == 200 and calls[0] == (n, config.capacity, None)
    assert bound.replanned == list(range(200, len(w.requests) + 1, 2000))
    assert [c[0] for c in calls] == [min(k, 2000) for k in bound.replanned]
    assert bound.describe()["planned_online_at_request"] == n
    alone, *_ = _planned_run(Planned)
    assert alone.planned_online is None and alone.describe()["planned_online_at_request"] is None
    assert Planned.replanner is None and Planned.with_planner(replan).name == "planned"

"""The `planned` policy: its ghost index, its admission rules and its eviction order."""

from __future__ import annotations

import dataclasses
import random

import pytest

from marconi.runtime.plan.seen import SeenPrefixes
from marconi.runtime.plan.rules import AdmissionRules, PinnedPrefix, default_plan
from helpers import causal_toy_cost
from marconi.planner.plan import replan_online
from marconi.planner.tune import EVICT_FIRST
from marconi.runtime.capacity import Capacity
from marconi.runtime.config import CacheConfig
from marconi.runtime.cache.policies import get_policy
from marconi.runtime.cache.policies.planned import Planned
from marconi.runtime.cache.tree import DROP_STATE
from marconi.runtime.sim.replay import Replay
from marconi.runtime.workload import Request, Workload


@pytest.mark.parametrize("seed", range(20), ids=lambda s: f"seed{s}")
def test_ghost_index_matches_a_list_of_sequences(seed):
    rng = random.Random(seed)
    ghost, seen = SeenPrefixes(), []
    for _ in range(40):
        if seen and rng.random() < 0.7:
            base = rng.choice(seen)
            s = base[:rng.randint(0, len(base))] + tuple(rng.randrange(3)
                                                        for _ in range(rng.randint(1, 4)))
        else:
            s = tuple(rng.randrange(3) for _ in range(rng.randint(1, 6)))
        n = rng.randint(0, len(s))
        depth = 0
        while depth < n and any(x[:depth + 1] == s[:depth + 1] for x in seen):
            depth += 1
        passes = sum(x[:depth] == s[:depth] for x in seen) if depth else 0
        assert ghost.lookup(s, n) == (depth, passes)
        ghost.add(s)
        seen.append(s)


def _wl(*inputs, outputs=None):
    reqs = tuple(Request(index=i, arrival_ms=float(i), input_ids=tuple(ids),
                         input_tokens=len(ids), output_tokens=len(out),
                         output_ids=tuple(out))
                 for i, (ids, out) in enumerate(zip(inputs, outputs or [()] * len(inputs))))
    return Workload(name="hand", requests=reqs)


def _replay(policy_cls, workload, capacity, cost=None):
    cost = cost or causal_toy_cost(kv=100, state=300)
    config = CacheConfig(capacity=Capacity.shared(capacity))
    replay = Replay(workload, cost, policy_cls(cost, config, workload))
    replay.run()
    return replay


def _plan(**admission):
    cost = causal_toy_cost(kv=100, state=300)
    base = default_plan(cost.model, cost.fingerprint(), 1, None, 0)
    return dataclasses.replace(base, admission=dataclasses.replace(base.admission,
                                                                   **admission))


def test_shared_prefix_hits_on_second_sighting_after_eviction():
    """r0 = p+x is evicted by a big unrelated r1; r2 = p+y sees p in the ghost index and
    checkpoints it (its 2nd sighting), so r3 = p+z hits p. SGLang's speculative insertion
    sees only the cache: r2 finds nothing, r3 checkpoints p, nothing hits."""
    p = (1, 2, 3)
    wl = _wl(p + (4, 5), tuple(range(50, 70)), p + (7, 8), p + (6,))
    capacity = 2400                     # r1's 20 tokens + state fill it: r0 must go
    planned = _replay(Planned.with_plan(_plan()), wl, capacity)
    sglang = _replay(get_policy("sglang"), wl, capacity)
    assert planned.hits == [0, 0, 0, 3]
    assert sglang.hits == [0, 0, 0, 0]


@pytest.mark.parametrize("sighting,expected", [(1, [0, 0, 3, 3]), (2, [0, 0, 0, 3])],
                         ids=["second-sighting", "third-sighting"])
def test_branch_sighting_rule(sighting, expected):
    p = (1, 2, 3)
    wl = _wl(p + (4,), p + (5,), p + (6,), p + (7,))
    plan = _plan(branch_sighting=sighting, input_end=False)
    assert _replay(Planned.with_plan(plan), wl, 10**6).hits == expected


def test_stride_checkpoints_new_content():
    """A fresh 7-token input with stride 2: states at 2, 4, 6 and at its end 7, so a
    request that branches off at 5 hits 4 on the prefix's second sighting (and leaves a
    branch state at 5 and its own input-end state at 6)."""
    wl = _wl((1, 2, 3, 4, 5, 6, 7), (1, 2, 3, 4, 5, 9))
    replay = _replay(Planned.with_plan(_plan(stride_tokens=2)), wl, 10**6)
    assert replay.hits == [0, 4]
    depths = sorted(n.depth for n in replay.cache.nodes() if n.ckpt)
    assert depths == [2, 4, 5, 6, 6, 7]


def test_fresh_requests_not_admitted_and_min_prefix():
    wl = _wl((1, 2, 3, 4), (1, 2, 3, 4, 5, 6), (1, 2, 3, 4, 5, 6, 7))
    plan = _plan(admit_fresh=False, fresh_threshold=0.5, min_prefix_tokens=5)
    replay = _replay(Planned.with_plan(plan), wl, 10**6)
    # r0 is fresh: nothing cached; r1 (4/6 seen) is a continuation: state at 6; r2 hits 6
    assert replay.hits == [0, 0, 6]
    assert all(n.depth >= 5 for n in replay.cache.nodes() if n.ckpt)


def test_output_end_rule_and_pins():
    pin = PinnedPrefix.of((1, 2))
    plan = dataclasses.replace(_plan(output_end=True, input_end=False), pinned=(pin,))
    wl = _wl((1, 2, 3), (1, 2, 3, 4, 5), (1, 2, 9), outputs=[(4,), (), ()])
    replay = _replay(Planned.with_plan(plan), wl, 10**6)
    # r1 resumes after r0's output (depth 4); r2 resumes at the pinned prefix (depth 2)
    assert replay.hits == [0, 4, 2]
    policy = replay.policy
    pinned = [n for n in replay.cache.nodes() if n.ckpt and n.depth == 2]
    assert pinned and policy.node_class(pinned[0]) == "pinned"


def test_passed_states_are_evicted_first():
    """After a continuation extends r0's state, that state has one child: class `passed`.
    With its offset at EVICT_FIRST it is the next victim, not the older leaf r1 added."""
    plan = _plan()
    plan = dataclasses.replace(plan, eviction=plan.eviction.with_offset("passed",
                                                                         EVICT_FIRST))
    wl = _wl((7, 8), (1, 2, 3), (1, 2, 3, 4, 5))
    replay = _replay(Planned.with_plan(plan), wl, 10**6)
    node, action = replay.cache.index.victim()
    assert (node.depth, action) == (3, DROP_STATE)
    assert replay.policy.node_class(node) == "passed"


def test_plans_online_early_then_on_a_sliding_window():
    """Without a plan it plans as soon as the cache has evicted and `min_online_window`
    requests were served, then every `replan_every` requests from the last
    `replan_window`, only ever from requests already served."""
    rng = random.Random(0)
    inputs = []
    for i in range(60):
        base = inputs[rng.randrange(len(inputs))] if inputs and rng.random() < 0.6 else ()
        inputs.append(base + tuple(rng.randrange(1000) for _ in range(rng.randint(2, 6))))
    wl = _wl(*inputs)

    windows = []

    def replan(window, cost, capacity, chunk_tokens):
        windows.append(window.requests)
        return replan_online(window, cost, capacity, chunk_tokens)

    class Online(Planned.with_planner(replan)):
        min_online_window = 10
        replan_every = 15
        replan_window = 20

    config = CacheConfig(capacity=Capacity.shared(3000))
    cost = causal_toy_cost(kv=100, state=300)
    replay = Replay(wl, cost, Online(cost, config, wl))
    replay.run()
    f = replay.first_eviction
    assert f is not None and f + 1 < 60 - 15
    first = max(10, f + 1)
    at = list(range(first, 61, 15))
    assert replay.policy.planned_online == first and replay.policy.replanned == at
    assert [len(w) for w in windows] == [min(n, 20) for n in at]
    assert all(w == wl.requests[n - len(w):n] for w, n in zip(windows, at))   # the past only
    described = replay.policy.describe()
    assert described["planned_online_at_request"] == first
    assert described["replanned_at_requests"] == at

"""Eviction indices: Marconi's fast exact search against the brute-force definition."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marconi.runtime.capacity import Capacity
from marconi.errors import UserError
from marconi.runtime.config import CacheConfig, Recency, MarconiParams
from marconi.runtime.cache.eviction import FlopAware, LeafLRU, StateAndLeafLRU
from marconi.runtime.sim.generators import AgentSpec, ChatSpec, generate
from marconi.runtime.cache.policies.marconi import Marconi
from marconi.runtime.cache.prefix_cache import PrefixCache
from marconi.runtime.cache.tree import DROP_STATE, REMOVE, TraceClock
from marconi.runtime.sim.replay import Replay
from marconi.runtime.seq import Seq
from helpers import paper_7b_cost, token_workload


class CheckedFlopAware(FlopAware):
    """Answers with the fast search and asserts that the brute force agrees every time."""

    calls = 0
    bucketed = 0          # searches over more than one efficiency bucket
    dirty = 0             # searches that met buckets whose top got older since the sort

    def victim(self):
        CheckedFlopAware.bucketed += len(self._buckets) > 1 and self.alpha > 0
        CheckedFlopAware.dirty += bool(self._dirty) and self.alpha > 0
        fast = super().victim()
        assert fast == self._victim_by_scan(), (fast, self._victim_by_scan())
        CheckedFlopAware.calls += 1
        return fast


class CheckedMarconi(Marconi):
    def make_index(self):
        self.index = CheckedFlopAware(self.alpha, self._efficiency(), self.config.marconi.recency)
        return self.index

    def _efficiency(self):
        from marconi.runtime.cache.policies.marconi import flop_efficiency
        return flop_efficiency(self.cost)


def small_agent_chat(seed: int):
    return generate([ChatSpec(sessions=6, turns=(2, 6), user_median=40, output_median=60),
                     AgentSpec(sessions=3, system_tokens=100, rounds=(6, 12),
                               observation_median=50, action_median=20)], seed=seed)


@pytest.mark.parametrize("recency", ["linear", "inverse"])
@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0, 2.0], ids=lambda a: f"alpha{a}")
@pytest.mark.parametrize("seed", [0, 1])
def test_fast_flop_aware_search_equals_brute_force(seed, alpha, recency):
    workload = small_agent_chat(seed)
    cost = paper_7b_cost()
    # ~1/4 of what an unbounded cache needs: plenty of evictions
    config = CacheConfig(Capacity.shared(int(cost.kv_bytes_per_token * 4000)),
                         marconi=MarconiParams(recency=recency))
    before = CheckedFlopAware.calls
    checked = Replay(workload, cost, CheckedMarconi(cost, config, workload, alpha, tune=False))
    checked.run()
    assert CheckedFlopAware.calls - before > 50            # the comparison really ran
    plain = Replay(workload, cost, Marconi(cost, config, workload, alpha, tune=False))
    plain.run()
    assert plain.hits == checked.hits


@pytest.mark.parametrize("recency", ["linear", "inverse"])
@pytest.mark.parametrize("alpha", [0.5, 2.0], ids=lambda a: f"alpha{a}")
def test_fast_search_equals_brute_force_across_many_buckets(alpha, recency):
    """Enough candidates for the bucketed search (rebuilds, a stale sorted order, buckets
    whose oldest entry changed since it was sorted) to be what answers, every time checked."""
    workload = generate([ChatSpec(sessions=300, turns=(2, 6), user_median=40,
                                  output_median=60, sessions_per_s=5)], seed=0)
    cost = paper_7b_cost()
    config = CacheConfig(Capacity.shared(int(cost.kv_bytes_per_token * 8000)),
                         marconi=MarconiParams(recency=recency))
    before = (CheckedFlopAware.calls, CheckedFlopAware.bucketed, CheckedFlopAware.dirty)
    checked = Replay(workload, cost, CheckedMarconi(cost, config, workload, alpha, tune=False))
    checked.run()
    calls, bucketed, dirty = (now - then for now, then in zip(
        (CheckedFlopAware.calls, CheckedFlopAware.bucketed, CheckedFlopAware.dirty), before))
    assert calls > 1000 and bucketed > calls // 2 and dirty > 100, (calls, bucketed, dirty)


def _cache(index, capacity=None):
    cap = Capacity.unbounded() if capacity is None else Capacity.shared(capacity)
    return PrefixCache(1, 10, cap, index, TraceClock())


def _seq(ids):
    ids = tuple(ids)
    return Seq(ids, len(ids), len(ids), len(ids), 1)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.lists(st.integers(0, 2), min_size=1, max_size=8),
                          st.floats(0.0, 2.0)), min_size=3, max_size=30),
       st.sampled_from(["linear", "inverse"]))
def test_flop_aware_victims_match_reference_on_random_trees(inserts, recency):
    """Random trees (random efficiencies): the fast victim is the brute-force one."""
    effs = {}
    index = FlopAware(0.0, lambda n: effs.setdefault(n.uid, (n.uid * 7919) % 101 / 10.0),
                      recency=recency)
    cache = _cache(index)
    for step, (ids, alpha) in enumerate(inserts):
        cache.clock.now = float(step // 2)                # ties in time on purpose
        cache.insert(_seq(ids), len(ids), [len(ids)])
        index.alpha = alpha
        fast, ref = index.victim(), index._victim_by_scan()
        index.release()
        assert fast == ref


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.lists(st.integers(0, 3), min_size=1, max_size=8),
                          st.integers(0, 3)), min_size=4, max_size=40),
       st.sampled_from([0.2, 1.0, 2.0]), st.sampled_from(["linear", "inverse"]))
def test_bucketed_search_matches_reference_while_evicting(inserts, alpha, recency):
    """Many efficiency buckets (a forced rebuild), then evict to empty: every victim is the
    brute-force one, also when an eviction turns an old parent into a candidate after the
    buckets were sorted (its bucket's sorted bound is then too high)."""
    effs = {}
    index = FlopAware(alpha, lambda n: effs.setdefault(n.uid, (n.uid * 7919) % 101 / 10.0),
                      recency=recency)
    cache = _cache(index)
    now = 0.0
    for ids, dt in inserts:
        now += dt                                        # ties in time on purpose
        cache.clock.now = now
        cache.insert(_seq(ids), len(ids), [len(ids)])
    index._rebuild()
    assert len(index._buckets) > 1
    while True:
        fast, ref = index.victim(), index._victim_by_scan()
        assert fast == ref
        if fast is None:
            break
        cache.evict_node(*fast)
        index.release()
    assert not any(n.ckpt for n in cache.nodes())


def test_leaf_lru_order_worked_example():
    """Leaves leave oldest first; a parent becomes a candidate when its last child goes."""
    index = LeafLRU()
    cache = _cache(index)
    for t, ids in enumerate([[1, 2], [1, 2, 3], [5], [1, 2, 4]]):
        cache.clock.now = float(t)
        cache.insert(_seq(ids), len(ids), [len(ids)])
    # leaves: [3] at t=1, [5] at t=2, [4] at t=3; [1,2] (t=0) has two children
    order = []
    for _ in range(4):
        node, action = index.victim()
        order.append((node.key, action))
        cache.evict_node(node, action)
    assert order == [((3,), REMOVE), ((5,), REMOVE), ((4,), REMOVE), ((1, 2), REMOVE)]


def test_state_and_leaf_lru_drops_stale_interior_states_first():
    """vLLM-like: an interior state not consumed since t=0 goes before fresher leaves."""
    index = StateAndLeafLRU()
    cache = _cache(index)
    cache.insert(_seq([1, 2, 3, 4]), 4, [2, 4])        # t=0: states at 2 and 4
    cache.clock.now = 5.0
    cache.touch_path(cache.match(_seq([1, 2, 3, 4]), 4).node)   # KV path fresh, states not
    node, action = index.victim()
    assert (node.depth, action) == (2, DROP_STATE)       # tie t=0 with the leaf's state:
    cache.evict_node(node, action)                        # the older node (uid) first
    node, action = index.victim()
    assert (node.depth, action) == (4, DROP_STATE)       # state at 4 (t=0) < KV (t=5)
    cache.evict_node(node, action)
    node, action = index.victim()
    assert (node.depth, action) == (4, REMOVE)           # the KV-only leaf last
    cache.evict_node(node, action)
    assert cache.used_bytes == 0


def test_locked_candidates_are_skipped_and_restored():
    index = LeafLRU()
    cache = _cache(index)
    cache.insert(_seq([1]), 1, [1])
    cache.clock.now = 1.0
    cache.insert(_seq([2]), 1, [1])
    old = cache.match(_seq([1]), 1).hit_node
    cache.inc_lock(old)
    node, _ = index.victim()
    assert node.key == (2,)
    index.release()
    cache.dec_lock(old)
    assert index.victim()[0] is old


@pytest.mark.parametrize("alpha", [0.5, 2.0])
def test_flop_aware_prefers_low_efficiency_at_high_alpha(alpha):
    """Two leaves of equal age: the one whose edge saves fewer FLOPs per byte goes."""
    workload = token_workload([[1] * 50, [2] * 5])
    cost = paper_7b_cost()
    config = CacheConfig(Capacity.unbounded())
    policy = Marconi(cost, config, workload, alpha=alpha, tune=False)
    cache = PrefixCache(cost.kv_bytes_per_token, cost.state_bytes(), Capacity.unbounded(),
                        policy.make_index(), TraceClock())
    cache.insert(_seq([1] * 50), 50, [50])
    cache.insert(_seq([2] * 5), 5, [5])
    # both at t=0: recency normalises to 1 for both; efficiency decides. The 5-token edge
    # saves ~5/50 of the FLOPs for (1 state + 5 tokens of KV) vs (1 state + 50 tokens).
    node, _ = policy.index.victim()
    assert node.key == (2,) * 5


# ------------------------------------------------------------------ recency, parsed at the edge

@pytest.mark.parametrize("text, member", [("linear", Recency.LINEAR),
                                          ("inverse", Recency.INVERSE)], ids=str)
def test_recency_text_converts_to_the_enum(text, member):
    """The CLI passes the flag's text; the config holds the member, equal to that text."""
    config = CacheConfig(Capacity.unbounded(), marconi=MarconiParams(recency=text))
    recency = config.marconi.recency
    assert recency is member and recency == text and str(member) == text
    index = FlopAware(0.0, lambda n: 0.0, text)
    assert index.recency is member


def test_an_unknown_recency_names_the_parameter_and_the_known_values():
    with pytest.raises(UserError, match=r"recency: unknown 'cubic'; expected one of "
                                        r"linear, inverse"):
        CacheConfig(Capacity.unbounded(), marconi=MarconiParams(recency="cubic"))

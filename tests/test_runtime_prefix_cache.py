"""PrefixCache: the radix tree against a naive list-of-prefixes model, locks, accounting."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marconi.errors import UserError
from marconi.runtime.capacity import Capacity
from marconi.runtime.config import CacheConfig
from marconi.runtime.cache.policies import get_policy
from marconi.runtime.cache.eviction import LeafLRU
from marconi.runtime.cache.dense_cache import DenseCache
from marconi.runtime.cache.prefix_cache import PrefixCache
from marconi.runtime.cache.policies.base import Policy
from marconi.runtime.cache.tree import DROP_STATE, REMOVE, Refresh, TraceClock
from marconi.runtime.seq import Seq
from helpers import paper_7b_cost, token_workload

KPT, SB = 3, 50          # bytes of KV per token, bytes per checkpoint


def tseq(ids) -> Seq:
    ids = tuple(ids)
    return Seq(ids, len(ids), len(ids), len(ids), 1)


def make_cache(capacity=None, stride=None, state=None) -> PrefixCache | DenseCache:
    """The radix cache, or with a `stride` the dense per-block one."""
    cap = Capacity.unbounded() if capacity is None else Capacity(capacity, state)
    if stride is None:
        return PrefixCache(KPT, SB, cap, LeafLRU(), TraceClock())
    return DenseCache(KPT, SB, cap, LeafLRU(), TraceClock(), stride=stride)


class NaiveCache:
    """The obviously-correct model: a set of checkpointed prefixes; KV = their prefixes."""

    def __init__(self, stride=None):
        self.ckpts: set[tuple] = set()
        self.stride = stride

    def insert(self, ids, length, checkpoints):
        ids = tuple(ids)
        self.ckpts.update(ids[:c] for c in checkpoints)
        if self.stride:
            self.ckpts.update(ids[:c] for c in range(self.stride, length + 1, self.stride))

    def kv(self) -> set[tuple]:
        return {p[:i] for p in self.ckpts for i in range(1, len(p) + 1)}

    def hit(self, query) -> int:
        query = tuple(query)
        return max((len(p) for p in self.ckpts if query[:len(p)] == p), default=0)

    def remove_edge(self, path, start, depth):
        self.ckpts -= {path[:i] for i in range(start + 1, depth + 1)}

    def nbytes(self) -> tuple[int, int]:
        return KPT * len(self.kv()), SB * len(self.ckpts)


def path_ids(node) -> tuple:
    parts = []
    while node.parent is not None:
        parts.append(node.key)
        node = node.parent
    return tuple(i for key in reversed(parts) for i in key)


# ids from a 3-letter alphabet: many shared prefixes, partial-edge matches and splits
id_lists = st.lists(st.integers(0, 2), min_size=1, max_size=9)
ops = st.lists(st.tuples(st.sampled_from(["insert", "insert", "evict", "drop"]), id_lists,
                         st.lists(st.integers(1, 9), max_size=3), st.integers(0, 1000)),
               min_size=1, max_size=25)


@pytest.mark.parametrize("stride", [None, 2], ids=["sparse", "dense-stride2"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=ops, queries=st.lists(id_lists, min_size=1, max_size=6))
def test_tree_agrees_with_naive_model(stride, ops, queries):
    cache, naive = make_cache(stride=stride), NaiveCache(stride)
    for op, ids, cks, pick in ops:
        if op == "insert":
            seq = tseq(ids)
            cps = sorted({c for c in cks if c <= len(ids)} | {len(ids)})
            assert cache.insert(seq, len(ids), cps) is not None
            naive.insert(ids, len(ids), cps)
        else:
            nodes = [n for n in cache.nodes() if n is not cache.root]
            if op == "evict":
                leaves = [n for n in nodes if not n.children]
                if not leaves:
                    continue
                victim = leaves[pick % len(leaves)]
                path, start, depth = path_ids(victim), victim.start, victim.depth
                cache.evict_node(victim, REMOVE)
                naive.remove_edge(path, start, depth)
            else:
                singles = [n for n in nodes if len(n.children) == 1 and n.ckpt
                           and not (stride and n.depth % stride == 0)]
                if not singles:
                    continue
                victim = singles[pick % len(singles)]
                path = path_ids(victim)
                cache.evict_node(victim, DROP_STATE)
                naive.ckpts.discard(path)
        cache.check()
        assert (cache.kv_used, cache.state_used) == naive.nbytes()
    for q in map(tuple, queries):
        m = cache.match(tseq(q), len(q))
        assert m.hit_depth == naive.hit(q), (q, naive.ckpts)
        # the KV match is the longest prefix of q in the naive KV set
        kv = naive.kv()
        assert m.depth == max((i for i in range(len(q) + 1) if q[:i] in kv or i == 0))


def test_partial_edge_match_never_hits():
    """The artifact's bug 3 (background/marconi.md §9): after [1..5] then [1..7], the query
    [1,2,6,7,9] diverges inside the first edge; it must not be credited the [6,7] edge."""
    cache = make_cache()
    cache.insert(tseq([1, 2, 3, 4, 5]), 5, [5])
    cache.insert(tseq([1, 2, 3, 4, 5, 6, 7]), 7, [7])
    m = cache.match(tseq([1, 2, 6, 7, 9]), 5)
    assert (m.hit_depth, m.depth) == (0, 2)
    assert cache.match(tseq([1, 2, 3, 4, 5, 6, 9]), 7).hit_depth == 5


def test_byte_accounting_worked_example():
    cache = make_cache()
    cache.insert(tseq([1, 2, 3, 4]), 4, [4])          # KV 4 tokens, 1 state
    assert (cache.kv_used, cache.state_used) == (4 * KPT, SB)
    cache.insert(tseq([1, 2, 9]), 3, [2, 3])          # +1 token (9), states at 2 and 3
    assert (cache.kv_used, cache.state_used) == (5 * KPT, 3 * SB)
    assert cache.match(tseq([1, 2, 7]), 3).hit_depth == 2
    cache.check()


@pytest.mark.parametrize("state_pool", [None, 120], ids=["shared", "separate"])
def test_capacity_is_never_exceeded_and_oversized_entries_are_refused(state_pool):
    # capacity 200 B: a 10-token entry costs 10·3 + 50 = 80 B
    cache = make_cache(capacity=200, state=state_pool)
    for i in range(10):
        assert cache.insert(tseq([100 + i] * 1 + list(range(9))), 10, [10]) is not None
        assert cache.occupancy <= 1.0
        cache.check()
    # 60 tokens need 180 B of KV + 50 B of state > 200 B (or > the 80 B KV pool)
    assert cache.insert(tseq(range(1000, 1060)), 60, [60]) is None
    assert cache.rejected == 1
    cache.check()


@settings(max_examples=60, deadline=None)
@given(seqs=st.lists(st.lists(st.integers(0, 3), min_size=1, max_size=12), min_size=2,
                     max_size=30),
       locks=st.lists(st.integers(0, 29), min_size=1, max_size=4))
def test_locked_paths_are_never_evicted(seqs, locks):
    cache = make_cache(capacity=300)                  # room for ~3 short entries
    held = []
    for i, ids in enumerate(seqs):
        cache.insert(tseq(ids), len(ids), [len(ids)])
        if i in locks:
            m = cache.match(tseq(ids), len(ids))
            if m.hit_depth:
                cache.inc_lock(m.hit_node)
                held.append((m.hit_node, path_ids(m.hit_node)))
        for node, path in held:
            assert node.alive
            assert cache.match(tseq(path), len(path)).hit_depth == len(path)
        assert cache.occupancy <= 1.0
    for node, _ in held:
        cache.dec_lock(node)
    cache.check()


def test_checkpoint_grid_rounds_hits_down():
    """Dense stride 4: states at depths 4, 8 and at the insert end (10)."""
    cache = make_cache(stride=4)
    cache.insert(tseq(range(10)), 10, [10])
    assert cache.state_used == 3 * SB
    assert cache.match(tseq(list(range(7)) + [99]), 8).hit_depth == 4     # 7 matched → 4
    assert cache.match(tseq(range(9)), 9).hit_depth == 8
    assert cache.match(tseq(range(12)), 12).hit_depth == 10
    cache.check()


def test_dense_leaves_are_trimmed_tail_first():
    # stride 2, 8 tokens: states at 2, 4, 6, 8: 8·3 + 4·50 = 224 B; capacity 250 B
    cache = make_cache(capacity=250, stride=2)
    cache.clock.now = 1.0
    cache.insert(tseq(range(8)), 8, [8])
    cache.clock.now = 2.0
    # a new 2-token entry needs 2·3 + 50 = 56 B: 224 + 56 > 250, so one tail step
    # (2 tokens + 1 state = 56 B) of the older leaf goes: 168 + 56 = 224 ≤ 250
    cache.insert(tseq([50, 51]), 2, [2])
    assert cache.match(tseq(range(8)), 8).hit_depth == 6
    assert cache.used_bytes == 224
    cache.check()


def test_clone_is_independent_and_equal():
    rng = random.Random(0)
    cache = make_cache(capacity=400)
    for _ in range(30):
        ids = [rng.randrange(4) for _ in range(rng.randrange(1, 10))]
        cache.insert(tseq(ids), len(ids), [len(ids)])
    copy = cache.clone(LeafLRU())
    copy.check()
    assert sorted(path_ids(n) for n in copy.nodes()) == sorted(path_ids(n) for n in cache.nodes())
    copy.insert(tseq([9, 9, 9]), 3, [3])
    assert cache.match(tseq([9, 9, 9]), 3).hit_depth == 0


# ------------------------------------------------------------------ state-free caches

def make_state_free(capacity=None, stride=None, hit_grid=None,
                    block=1) -> PrefixCache | DenseCache:
    cap = Capacity.unbounded() if capacity is None else Capacity.shared(capacity)
    if stride is None:
        return PrefixCache(KPT, 0, cap, LeafLRU(), TraceClock(), state_free=True,
                           hit_grid=hit_grid)
    return DenseCache(KPT, 0, cap, LeafLRU(), TraceClock(), state_free=True,
                      hit_grid=hit_grid, stride=stride, block=block)


class NaiveKVCache:
    """State-free model: the set of cached prefixes; a hit is the longest one, floored to
    the grid; a removed leaf takes exactly its own edge's prefixes (no merge, no cascade)."""

    def __init__(self, grid=None):
        self.kv: set[tuple] = set()
        self.grid = grid

    def insert(self, ids):
        self.kv.update(tuple(ids[:i]) for i in range(1, len(ids) + 1))

    def hit(self, query) -> int:
        query = tuple(query)
        h = max((i for i in range(1, len(query) + 1) if query[:i] in self.kv), default=0)
        return h - h % self.grid if self.grid else h


@pytest.mark.parametrize("grid", [None, 2], ids=["any-id", "grid2"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=ops, queries=st.lists(id_lists, min_size=1, max_size=6))
def test_state_free_tree_agrees_with_naive_kv_model(grid, ops, queries):
    """Checkpoints asked for are ignored, every cached prefix hits, evictions remove only
    the chosen leaf (its parent stays, however many children it has left)."""
    cache, naive = make_state_free(hit_grid=grid), NaiveKVCache(grid)
    for op, ids, cks, pick in ops:
        if op == "insert":
            cps = sorted({c for c in cks if c <= len(ids)} | {len(ids)})
            assert cache.insert(tseq(ids), len(ids), cps) is not None
            naive.insert(ids)
        elif op == "evict":
            leaves = [n for n in cache.nodes() if n is not cache.root and not n.children]
            if leaves:
                victim = leaves[pick % len(leaves)]
                path, start, depth = path_ids(victim), victim.start, victim.depth
                cache.evict_node(victim, REMOVE)
                naive.kv -= {path[:i] for i in range(start + 1, depth + 1)}
        cache.check()
        assert (cache.kv_used, cache.state_used) == (KPT * len(naive.kv), 0)
        assert cache.checkpoints_admitted == 0
    for q in map(tuple, queries):
        m = cache.match(tseq(q), len(q))
        assert m.hit_depth == naive.hit(q), (q, sorted(naive.kv))
        if m.hit_depth:                       # the hit node's edge holds the hit position
            assert m.hit_node.start < m.hit_depth <= m.hit_node.depth


def test_state_free_partial_edge_match_hits_inside_the_edge():
    """The hybrid cache's bug-3 example: with no recurrent state, [1,2] is cached KV and
    the query resumes from it, inside the [1..5] edge."""
    cache = make_state_free()
    cache.insert(tseq([1, 2, 3, 4, 5]), 5, [5])
    cache.insert(tseq([1, 2, 3, 4, 5, 6, 7]), 7, [7])
    m = cache.match(tseq([1, 2, 6, 7, 9]), 5)
    assert (m.hit_depth, m.depth) == (2, 2) and m.hit_node is m.partial
    assert m.hit_node.key == (1, 2, 3, 4, 5)
    assert cache.match(tseq([1, 2, 3, 4, 5, 6, 9]), 7).hit_depth == 6


def test_state_free_hit_grid_drops_a_partial_block():
    """Block trace (4 tokens per id), input of 10 tokens: ids end at 4, 8, 10 tokens. Any-id
    granularity hits all three ids; vLLM's full blocks (grid 4 tokens) only the first two."""
    seq = Seq((7, 8, 9), 3, 10, 10, 4)
    for grid, hit in [(None, 3), (4, 2), (8, 2)]:
        cache = make_state_free(hit_grid=grid, block=4)
        cache.insert(seq, 3)
        m = cache.match(seq, 3)
        assert m.hit_depth == hit, grid
        assert seq.tokens(m.hit_depth) == {3: 10, 2: 8}[hit]


def test_state_free_eviction_keeps_the_parent_hybrid_merges_it():
    """[1,2,3] and [1,2,4] share the node [1,2]. Evicting leaf [3] then leaf [4]: a
    state-free cache keeps [1,2] (its KV still hits), a hybrid one merges the state-less
    [1,2] into [4] and then removes it with it."""
    for state_free, kept in [(True, 2), (False, 0)]:
        cache = make_state_free() if state_free else make_cache()
        cache.insert(tseq([1, 2, 3]), 3, [3])
        cache.insert(tseq([1, 2, 4]), 3, [3])
        for last in (3, 4):
            leaf = next(n for n in cache.nodes() if n.key and n.key[-1] == last)
            cache.evict_node(leaf, REMOVE)
            cache.check()
        assert cache.kv_used == KPT * kept, state_free
        assert cache.match(tseq([1, 2, 5]), 3).hit_depth == (2 if state_free else 0)


def test_state_free_dense_leaves_are_trimmed_without_states():
    """vLLM's per-block freeing (stride 2) is kept without states: 8 tokens = 24 B, capacity
    27 B; a 2-token entry (6 B) frees one 2-token tail block of the older leaf."""
    cache = make_state_free(capacity=27, stride=2, hit_grid=2)
    cache.clock.now = 1.0
    cache.insert(tseq(range(8)), 8, [8])
    cache.clock.now = 2.0
    cache.insert(tseq([50, 51]), 2, [2])
    assert cache.used_bytes == 24 and cache.state_used == 0
    assert cache.match(tseq(range(8)), 8).hit_depth == 6
    assert (cache.checkpoints_admitted, cache.checkpoints_evicted) == (0, 0)
    cache.check()


@pytest.mark.parametrize("cls, options", [(PrefixCache, {}), (DenseCache, {"stride": 2})],
                         ids=["radix", "dense"])
def test_a_state_free_cache_refuses_state_bytes(cls, options):
    with pytest.raises(ValueError, match="state-free"):
        cls(KPT, SB, Capacity.unbounded(), LeafLRU(), state_free=True, **options)


# ------------------------------------------------------------------ which cache a policy keeps

@pytest.mark.parametrize("name, cls", [
    pytest.param("vllm-all", DenseCache, id="vllm-all"),
    pytest.param("infinite", DenseCache, id="infinite"),
    pytest.param("vllm-align", PrefixCache, id="vllm-align"),
    pytest.param("sglang", PrefixCache, id="sglang"),
    pytest.param("marconi", PrefixCache, id="marconi"),
    pytest.param("planned", PrefixCache, id="planned"),
])
def test_policies_choose_their_cache_class(name, cls):
    """The per-block baselines keep the dense cache, every other policy the radix one."""
    policy = get_policy(name)(paper_7b_cost(), CacheConfig(Capacity.shared(10**9)),
                              token_workload([[1, 2, 3]]))
    cache = policy.make_cache()
    assert type(cache) is cls and policy.cache_class is cls
    assert cache.state_free is False and cache.sb == paper_7b_cost().state_bytes()


@pytest.mark.parametrize("name, refresh", [("marconi", Refresh.HIT), ("sglang", Refresh.PATH),
                                           ("vllm-all", Refresh.PATH),
                                           ("planned", Refresh.PATH)])
def test_policies_declare_their_refresh_as_the_enum(name, refresh):
    assert get_policy(name).refresh is refresh


def test_a_policy_refresh_given_as_text_converts_and_a_bad_one_is_refused():
    class ByText(Policy):
        refresh = "hit"

    assert ByText.refresh is Refresh.HIT
    with pytest.raises(UserError, match=r"Bad.refresh: unknown 'all'; expected one of "
                                        r"path, hit"):
        class Bad(Policy):
            refresh = "all"

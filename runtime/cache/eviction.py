"""Eviction indices: strategy objects that tell a cache (`PrefixTree`) what to evict next.

The cache calls ``update(node)`` whenever a node is created, removed, refreshed, gains or
loses a child or a checkpoint; ``victim()`` then returns the next unlocked victim and the
action (`REMOVE` a leaf, or `DROP_STATE` of one node) without scanning the tree: every index
keeps binary heaps with lazy invalidation (an entry is live while its stamp equals the
node's `stamp`, which every `update` bumps). Locked nodes met at the top of a heap are set
aside until `release()` at the end of the eviction round.

Ties are broken by node creation order (`uid`), so a replay is deterministic.
"""

from __future__ import annotations

import heapq
import itertools
import math
from array import array
from bisect import bisect_right
from typing import Callable

import numpy as np

from marconi.runtime.cache.tree import DROP_STATE, REMOVE, Node, PrefixTree
from marconi.runtime.config import Recency, parse_choice

_heappush, _heappop = heapq.heappush, heapq.heappop


class HeapIndex:
    """The shared plumbing of every index: lazy-deletion heaps of
    ``(key…, uid, stamp, node)`` entries, candidate counting, compaction of stale entries
    once the first heap holds over 4× the live candidates (+4096), locked tops held back
    until `release`. A subclass lists its heaps (`_heaps`), files entries in `update` (after
    `_count`) and picks among the live tops (`_top`) in `victim`.
    """

    def __init__(self):
        self.cache: PrefixTree | None = None
        self._held: list[tuple[list, tuple]] = []
        self._n = 0                                         # live candidates

    def bind(self, cache: PrefixTree) -> None:
        self.cache = cache

    def release(self) -> None:
        for heap, entry in self._held:
            _heappush(heap, entry)
        self._held.clear()

    def clear(self) -> None:
        """Drop every entry (the cache is being discarded)."""
        for heap in self._heaps():
            heap.clear()
        self._held.clear()

    def _heaps(self) -> tuple[list, ...]:
        """Every heap (the first one gets an entry per candidate update)."""
        raise NotImplementedError

    def _count(self, node: Node, cand: bool, main: list) -> None:
        self._n += cand - node.cand
        node.cand = cand
        if len(main) > 4 * self._n + 4096:
            self._compact()

    def _compact(self) -> None:
        for heap in self._heaps():
            live = [e for e in heap if e[-2] == e[-1].stamp]
            heap[:] = live
            heapq.heapify(heap)

    def _top(self, heap: list) -> tuple | None:
        """The smallest live entry of an unlocked node (locked ones are held back)."""
        while heap:
            entry = heap[0]
            node = entry[-1]
            if entry[-2] != node.stamp:
                _heappop(heap)
            elif node.lock_ref:
                self._held.append((heap, _heappop(heap)))
            else:
                return entry
        return None


class LeafLRU(HeapIndex):
    """Least recently used leaf first; ties: the older node. Victims are `REMOVE`d.

    This is SGLang's `evict` over leaves (and the paper's SGLang+ and vLLM+ baselines,
    background/marconi.md §6.1): a parent becomes a candidate when its last child goes.
    """

    def __init__(self):
        super().__init__()
        self._heap: list = []

    def _heaps(self):
        return (self._heap,)

    def update(self, node: Node) -> None:
        node.stamp += 1
        cand = node.alive and not node.children
        self._count(node, cand, self._heap)
        if cand:
            _heappush(self._heap, (node.last_access, node.uid, node.stamp, node))

    def victim(self):
        entry = self._top(self._heap)
        return None if entry is None else (entry[-1], REMOVE)


class StateAndLeafLRU(HeapIndex):
    """Two LRU lists, as vLLM's one free-block queue holds KV and state blocks alike.

    KV list: leaves by path recency (`last_access`) → `REMOVE`. State list: every node with
    a checkpoint by the time its state was created or last consumed (`state_access`) →
    `DROP_STATE` (the node keeps its KV). The older head goes first; on a tie the state.
    (background/engines.md §2.3: hits touch only the consumed state block, while a finished
    request frees all its blocks, so interior states age while their KV path stays fresh.)
    """

    def __init__(self):
        super().__init__()
        self._kv: list = []
        self._state: list = []

    def _heaps(self):
        return (self._kv, self._state)

    def update(self, node: Node) -> None:
        node.stamp += 1
        leaf = node.alive and not node.children
        has_state = node.alive and node.ckpt
        self._count(node, leaf or has_state,
                    self._kv if len(self._kv) > len(self._state) else self._state)
        if leaf:
            _heappush(self._kv, (node.last_access, node.uid, node.stamp, node))
        if has_state:
            _heappush(self._state, (node.state_access, node.uid, node.stamp, node))

    def victim(self):
        kv, st = self._top(self._kv), self._top(self._state)
        if st is not None and (kv is None or st[:2] <= kv[:2]):
            return st[-1], DROP_STATE
        return None if kv is None else (kv[-1], REMOVE)


class NoEviction(HeapIndex):
    """For unbounded caches: never proposes a victim."""

    def _heaps(self):
        return ([],)

    def update(self, node: Node) -> None:
        node.stamp += 1

    def victim(self):
        return None


class FlopAware(HeapIndex):
    """Marconi's eviction (paper §4.2, Eq. 2): evict the candidate with the lowest

        S(n) = norm(recency(n)) + α · norm(flop_efficiency(n))

    over candidates = nodes holding a checkpoint with at most one child (leaves, in a
    state-free cache, which holds no checkpoints: `PrefixTree.state_free`). `norm` is min-max
    over all candidates (locked ones included); a term whose values are all equal
    normalises to 1 (as the artifact's `_normalize`). Ties: older `last_access`, then older
    node. A leaf victim is `REMOVE`d; a single-child one loses its state and merges into its
    child (`DROP_STATE`).

    recency: `Recency.LINEAR` = last-access time; `INVERSE` = 1 / (now − last_access + 1 ms),
    the artifact's form on trace time. Both rise with last-access time, which is what makes
    the fast search exact.

    Fast path (exact, branch and bound): besides four heaps for the normalisation bounds,
    candidates sit in buckets of similar efficiency (edges at quantiles of e, rebuilt after
    every ~n updates or when a bucket outgrows 4·√n entries, at most every n/8
    updates, so O(log n) amortised), each a min-heap by last access. A bucket's
    lowest possible score is that of its oldest entry at the bucket's lowest efficiency;
    these bounds are computed for all buckets at once (numpy), and buckets are scanned in
    rising bound, oldest entry first, while an entry could still beat the best score seen.
    S is monotone in both terms (also after float rounding), so the result is exactly the
    brute-force argmin. α = 0 is plain LRU. `reference=True` scans every node instead (the
    slow definition, kept for tests).
    """

    def __init__(self, alpha: float, efficiency: Callable[[Node], float],
                 recency: Recency = Recency.LINEAR, reference: bool = False):
        super().__init__()
        self.efficiency = efficiency
        self.recency = parse_choice(Recency, recency, "recency")
        self.reference = reference
        self._scored = False                        # efficiency structures built (α > 0)
        self._t_min: list = []
        self._t_max: list = []
        self._e_min: list = []
        self._e_max: list = []
        self._edges: list[float] = [-math.inf]      # lowest efficiency of each bucket
        self._edge_arr = np.array(self._edges)
        self._buckets: list[list] = [[]]            # per bucket: heap by last access
        self._tops = array("d", [math.nan])         # ≤ oldest last access per bucket
        self._tops_arr = np.frombuffer(self._tops)  # (NaN: empty), and a numpy view
        self._since_rebuild = 0
        self._rebuild_after = 256                   # updates, or a bucket of this many:
        self._bucket_cap = 64
        self._version = 0                           # bumped when bucket bounds may drop
        self._dirty: list[int] = []                 # buckets whose bound dropped since
        self._order_key: tuple | None = None        # bucket order valid for these bounds
        self._order: tuple = ()
        self._terms_now: tuple = ()                 # `_terms` of the bounds in _order_key
        self._rebuilds = 0                          # new bucket edges so far
        self._edge_key: tuple = ()                  # `_bucket_bounds`' efficiency part
        self._edge_term = np.zeros(1)               # (and what it was computed for)
        self._leaves = False                        # candidates are leaves (state-free)
        self.alpha = alpha

    def bind(self, cache: PrefixTree) -> None:
        super().bind(cache)
        self._leaves = cache.state_free

    @property
    def alpha(self) -> float:
        return self._alpha

    @alpha.setter
    def alpha(self, value: float) -> None:
        """α = 0 needs only the recency heap; the efficiency structures are built (from the
        live candidates) the first time α becomes positive (Marconi's tuner)."""
        self._alpha = float(value)
        if self._alpha > 0 and not self._scored:
            self._scored = True
            for node in [e[-1] for e in self._t_min if e[-2] == e[-1].stamp]:
                node.eff = math.nan                 # file it again, with its efficiency
                self.update(node)
            self._rebuild()

    def _heaps(self):
        return (self._t_min, self._t_max, self._e_min, self._e_max, *self._buckets)

    def update(self, node: Node) -> None:
        was = node.cand
        if not (node.alive and (not node.children if self._leaves else
                                node.ckpt and len(node.children) <= 1)):
            if was:                                 # no longer a candidate: entries stale
                node.stamp += 1
                self._count(node, False, self._t_min)
            return
        t = node.last_access
        scored = self._scored
        e = self.efficiency(node) if scored else 0.0
        if was and t == node.indexed_at and e == node.eff:
            return                                  # its live entries still say the truth
        node.stamp += 1
        if not was:
            self._count(node, True, self._t_min)
        node.indexed_at, node.eff = t, e
        u, s = node.uid, node.stamp
        entry = (t, u, s, node)
        _heappush(self._t_min, entry)
        if not scored:                              # α = 0 so far: recency alone
            return
        # the efficiency structures: normalisation bounds and the bucket of e
        _heappush(self._t_max, (-t, -u, s, node))
        _heappush(self._e_min, (e, u, s, node))
        _heappush(self._e_max, (-e, -u, s, node))
        b = bisect_right(self._edges, e) - 1
        heap = self._buckets[b]
        _heappush(heap, entry)
        if not t >= self._tops[b]:                  # older, or the bucket was empty:
            self._tops[b] = t                       # its bound in `_order` may be too high
            self._dirty.append(b)
            if len(self._dirty) > 8:                # cheaper to sort them all again
                self._dirty.clear()
                self._version += 1
        self._since_rebuild += 1
        if self._since_rebuild > self._rebuild_after or (
                len(heap) > self._bucket_cap and self._since_rebuild > self._n // 8):
            self._rebuild()

    def _compact(self) -> None:
        super()._compact()
        self._refresh_tops(range(len(self._buckets)))
        self._version += 1

    def _rebuild(self) -> None:
        """New bucket edges: quantiles of the candidates' efficiencies (narrow buckets where
        they are dense) and a uniform grid over their range (no bucket wider than 1/256 of
        it once there are 2,048 candidates, so a bucket's bound is never far below its
        entries' scores)."""
        live = [e for heap in self._buckets for e in heap if e[-2] == e[-1].stamp]
        live.sort(key=lambda e: e[-1].eff)
        for heap in (self._t_min, self._t_max, self._e_min, self._e_max):
            if len(heap) > 4 * len(live) + 4096:            # also drop their stale entries
                heap[:] = [e for e in heap if e[-2] == e[-1].stamp]
                heapq.heapify(heap)
        cuts = set()
        if live:
            k = min(256, max(4, 2 * math.isqrt(len(live))))
            step = max(1, len(live) // k)
            cuts.update(live[i][-1].eff for i in range(step, len(live), step))
            lo, hi = live[0][-1].eff, live[-1][-1].eff
            grid = min(256, max(16, len(live) // 8))
            cuts.update(lo + (hi - lo) * i / grid for i in range(1, grid))
        edges = [-math.inf, *sorted(cuts)]
        buckets = [[] for _ in edges]
        for entry in live:
            buckets[bisect_right(edges, entry[-1].eff) - 1].append(entry)
        for heap in buckets:
            heapq.heapify(heap)
        self._edges, self._buckets, self._since_rebuild = edges, buckets, 0
        self._edge_arr = np.array(edges)
        self._rebuilds += 1
        self._tops = array("d", [math.nan]) * len(edges)
        self._tops_arr = np.frombuffer(self._tops)          # a view (never resized)
        self._refresh_tops(range(len(edges)))
        self._version += 1
        n = len(live)
        self._rebuild_after, self._bucket_cap = max(256, 2 * n), 4 * max(16, math.isqrt(n))

    def _refresh_tops(self, buckets) -> None:
        for b in buckets:
            heap = self._buckets[b]
            self._tops[b] = heap[0][0] if heap else math.nan

    # -------------------------------------------------------------- scoring
    def _terms(self, t_lo: float, t_hi: float, e_lo: float, e_hi: float) -> tuple:
        """The normalisation of S for fixed candidate bounds, as the two terms' affine maps:
        S(t, e) = R(t) + α·((e − e_lo)·e_inv + e_off) with R(t) = (r(t) − r_lo)·r_inv + r_off,
        r the recency. A term whose values are all equal normalises to 1 (slope 0, offset 1).
        """
        now = self.cache.clock.now
        if self.recency is Recency.INVERSE:
            r_lo, r_hi = 1.0 / ((now - t_lo) + 1.0), 1.0 / ((now - t_hi) + 1.0)
        else:
            r_lo, r_hi = t_lo, t_hi
        r_inv, r_off = (1.0 / (r_hi - r_lo), 0.0) if r_hi > r_lo else (0.0, 1.0)
        e_inv, e_off = (1.0 / (e_hi - e_lo), 0.0) if e_hi > e_lo else (0.0, 1.0)
        return now, r_lo, r_inv, r_off, e_lo, e_inv, e_off

    def scorer(self, t_lo: float, t_hi: float, e_lo: float, e_hi: float):
        """S as a function of (last_access, eff) for fixed candidate bounds; one expression
        for floats and numpy arrays alike (element-wise, identical rounding). The search in
        `victim` writes the same expression out inline; the brute force scores with this
        one, so the fast-vs-brute-force tests would see any rounding difference."""
        alpha = self.alpha
        now, r_lo, r_inv, r_off, e_lo, e_inv, e_off = self._terms(t_lo, t_hi, e_lo, e_hi)
        if self.recency is Recency.INVERSE:
            def score(t, e):
                return ((1.0 / ((now - t) + 1.0) - r_lo) * r_inv + r_off
                        + alpha * ((e - e_lo) * e_inv + e_off))
        else:
            def score(t, e):
                return (t - r_lo) * r_inv + r_off + alpha * ((e - e_lo) * e_inv + e_off)
        return score

    def victim(self):
        if self.reference:
            return self._victim_by_scan()
        alpha = self._alpha
        if alpha == 0.0:                                    # S is monotone in time: LRU
            entry = self._top(self._t_min)
            return None if entry is None else self._action(entry[-1])
        t_lo = _live_top(self._t_min)
        if t_lo is None:
            return None
        bounds = (t_lo[0], -_live_top(self._t_max)[0], _live_top(self._e_min)[0],
                  -_live_top(self._e_max)[0])
        inverse = self.recency is Recency.INVERSE
        key = (bounds, self.cache.clock.now if inverse else None, alpha, self._version)
        if key != self._order_key:
            # Bucket bounds, lowest first. Kept while nothing they depend on changes (same
            # normalisation, no bucket's oldest entry got older): a bucket whose top was
            # consumed since only got a higher true bound, so the stale one stays a bound.
            # Empty buckets have a NaN top, so a NaN bound: sorted last, never visited.
            # Buckets whose top got older since (`_dirty`) are visited first, unsorted.
            self._terms_now = terms = self._terms(*bounds)
            lower = self._bucket_bounds(bounds, terms)
            order = np.argsort(lower, kind="stable")
            self._order = (order.tolist(), lower[order].tolist())
            self._order_key = key
            self._dirty.clear()
        now, r_lo, r_inv, r_off, e_lo, e_inv, e_off = self._terms_now
        # S(t, e) = R(t) + E(e), written out as in `scorer` (same operations, same order,
        # so the same rounding): R per entry, E per bucket edge and per candidate.
        best, best_s, best_t, best_uid = None, math.inf, 0.0, 0
        popped, changed = [], []
        all_edges = self._edges
        dirty = [(b, -math.inf) for b in self._dirty]
        for b, bound in itertools.chain(dirty, zip(*self._order)) if dirty \
                else zip(*self._order):
            if not bound <= best_s:                         # NaN (empty) or too high
                break
            edge = all_edges[b] if all_edges[b] > e_lo else e_lo
            edge_term = alpha * ((edge - e_lo) * e_inv + e_off)
            heap = self._buckets[b]
            while heap:
                entry = heap[0]
                node = entry[3]
                if entry[2] != node.stamp:
                    _heappop(heap)
                    changed.append(b)                       # its top may have moved
                    continue
                t = entry[0]
                r = ((1.0 / ((now - t) + 1.0) - r_lo) if inverse else (t - r_lo)) \
                    * r_inv + r_off
                if r + edge_term > best_s:
                    break
                if not node.lock_ref:
                    s = r + alpha * ((node.eff - e_lo) * e_inv + e_off)
                    if s < best_s or (s == best_s and (t, node.uid) < (best_t, best_uid)):
                        best, best_s, best_t, best_uid = node, s, t, node.uid
                # the next oldest entry is a child of the heap's root: look deeper only if
                # it could still win
                n = len(heap)
                if n == 1:
                    break
                t = heap[1][0]
                if n > 2 and heap[2][0] < t:
                    t = heap[2][0]
                r = ((1.0 / ((now - t) + 1.0) - r_lo) if inverse else (t - r_lo)) \
                    * r_inv + r_off
                if r + edge_term > best_s:
                    break
                popped.append((heap, _heappop(heap)))
        for heap, entry in popped:                          # (their top is back)
            _heappush(heap, entry)
        self._refresh_tops(changed)
        return None if best is None else self._action(best)

    def _bucket_bounds(self, bounds: tuple, terms: tuple) -> np.ndarray:
        """Every bucket's lowest possible score (its oldest entry at its lowest efficiency),
        less `_SLACK`. With linear recency: R(top) + (E(edge) + r_off − slack), the second
        part kept while the efficiency normalisation and the edges stay (a different
        association than S's, so a few ulps apart: far inside the slack)."""
        if self.recency is Recency.INVERSE:
            edges = np.maximum(self._edge_arr, bounds[2])
            return self.scorer(*bounds)(self._tops_arr, edges) - _SLACK
        _, r_lo, r_inv, r_off, e_lo, e_inv, e_off = terms
        key = (self._rebuilds, e_lo, e_inv, e_off, r_off, self._alpha)
        if key != self._edge_key:
            edges = np.maximum(self._edge_arr, e_lo)
            self._edge_term = self._alpha * ((edges - e_lo) * e_inv + e_off) + (r_off - _SLACK)
            self._edge_key = key
        lower = self._tops_arr - r_lo
        lower *= r_inv
        lower += self._edge_term
        return lower

    # -------------------------------------------------------------- helpers
    @staticmethod
    def _action(node: Node):
        return node, (REMOVE if not node.children else DROP_STATE)

    def _victim_by_scan(self):
        """The definition, by brute force over every node of the tree."""
        cands = [n for n in self.cache.nodes() if n.cand]
        if not cands:
            return None
        ts = [n.last_access for n in cands]
        es = [n.eff for n in cands]
        score = self.scorer(min(ts), max(ts), min(es), max(es))
        free = [n for n in cands if not n.lock_ref]
        if not free:
            return None
        best = min(free, key=lambda n: (score(n.last_access, n.eff), n.last_access, n.uid))
        return self._action(best)


_SLACK = 1e-9   # bucket bounds are lowered by this much: safe whatever the rounding


def _live_top(heap: list):
    while heap and heap[0][-2] != heap[0][-1].stamp:
        _heappop(heap)
    return heap[0] if heap else None

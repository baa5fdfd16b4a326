"""Ghost caches, a switchable eviction index and the leader rule of the hedged policy.

A *ghost* is one policy's cache replayed over the same requests as the real cache, without
tensors (ids, byte counts and recency only; the simulator never holds tensors, so a ghost
is simply another `PrefixTree` driven by another policy instance). ARC, LeCaR and Cacheus
keep ghost lists the same way, to learn which behaviour would have done better.

`Ghost.step` replays one request the way `runtime.sim.replay.Replay` does (match, consume,
admit, insert, refresh; the policy's `after_request` last) and returns the FLOPs its hit
saved. Marconi's α tuner asks the replay it is handed for `what_if`, a fresh replay of the
workload: the ghost passes that on to the real replay (`ReplayView`), which is pure in the
workload, so the ghost's Marconi tunes as the real one would.

`SwitchIndex` is the real cache's eviction index: it delegates to the leader's index and,
on a switch, files every node present into the new leader's fresh index (the entries the
real cache holds, never the new leader's ghost contents).

`held_in` says which nodes of one tree another holds too (the same ids, and a state where
the first has one); `held_in_reference` is its definition by every prefix of the other
tree; `take_recency` uses it for the hedged policy's warm switch.

`WindowLeader` is the selection rule: follow the expert with the most FLOPs saved over the
last `window` requests, switching only when a challenger beats the leader there by more
than `margin` of the window's prefill FLOPs (and, `sustained`, over every request since
the leader took the lead as well). `window_leaders_reference` is its slow
definition (sums recomputed from the whole history), which the tests compare against.
"""

from __future__ import annotations

import itertools
from collections import deque
from typing import Sequence

from marconi.passes.cost_model import CostModel
from marconi.runtime.cache.tree import Node, PrefixTree, Refresh
from marconi.runtime.seq import Seq, make_seq
from marconi.runtime.workload import Workload


class Ghost:
    """One expert policy's cache over the requests so far (no tensors)."""

    def __init__(self, policy, cost: CostModel, workload: Workload, real_view=None):
        self.policy = policy
        self.cost = cost
        self.workload = workload
        self.cache: PrefixTree = policy.make_cache()
        self.first_eviction: int | None = None
        self.hits: list[int] = [0] * len(workload.requests)   # `Replay.hits`, for what_if users
        self.done = 0
        self.real_view = real_view         # the real replay, for `what_if`
        self._fresh = itertools.count(-1, -1)
        self._path = policy.refresh is Refresh.PATH

    def step(self, i: int, seq: Seq | None = None) -> float:
        """Replay request `i` (the next one); the FLOPs its hit saves. `seq`: the request's
        `Seq`, built once for several ghosts (its fresh output ids never match anything, so
        one set serves every ghost); by default the ghost builds its own."""
        assert i == self.done, (i, self.done)
        r = self.workload.requests[i]
        cache = self.cache
        if r.arrival_ms > cache.clock.now:
            cache.clock.now = r.arrival_ms
        if seq is None:
            seq = make_seq(r, self._fresh)
        m = cache.match(seq, seq.n_input)
        h = 0
        if m.hit_depth:
            h = seq.tokens(m.hit_depth)
            self.hits[i] = h
            cache.consume(m.hit_node, not self._path)
        length, checkpoints = self.policy.admit(seq, m)
        end = cache.insert(seq, length, checkpoints, m)
        if self._path:
            cache.touch_path(end if end is not None else (m.partial or m.node))
        if self.first_eviction is None and cache.evictions:
            self.first_eviction = i
        self.done = i + 1
        self.policy.after_request(self, i)
        return float(self.cost.saved_flops(h, r.input_tokens - h)) if h else 0.0

    def what_if(self, base, fork_at, make_policy, values, stop, measure):
        """`ReplayView.what_if`: a fresh replay of the workload, done by the real replay."""
        return self.real_view.what_if(base, fork_at, make_policy, values, stop, measure)

    def discard(self) -> None:
        self.cache.discard()


class SwitchIndex:
    """An eviction index that delegates to an inner one and can change it mid-replay."""

    def __init__(self, inner):
        self.inner = inner
        self.cache: PrefixTree | None = None

    def bind(self, cache: PrefixTree) -> None:
        self.cache = cache
        self.inner.bind(cache)

    def update(self, node: Node) -> None:
        self.inner.update(node)

    def victim(self):
        return self.inner.victim()

    def release(self) -> None:
        self.inner.release()

    def clear(self) -> None:
        self.inner.clear()

    def switch(self, inner) -> None:
        """Order the nodes the cache holds now by `inner` (a fresh index). Every node is
        filed again as new: the old index's entries go stale (stamp bumped) and are
        dropped with it."""
        self.inner.clear()
        self.inner = inner
        inner.bind(self.cache)
        root = self.cache.root
        for node in self.cache.nodes():
            if node is root:
                continue
            node.stamp += 1
            node.cand = False
            node.eff = 0.0
            inner.update(node)


def held_in(cache: PrefixTree, other: PrefixTree) -> dict[int, Node]:
    """For each node of `cache` (by uid) that `other` holds too, the node of `other` whose
    edge holds its end: `other` caches the node's whole path (the same ids), and a state
    at its end where the node has one. One walk of `cache` with the matching position in
    `other` carried along (O(ids of `cache`))."""
    out: dict[int, Node] = {}
    # (node of `cache`, node of `other` whose edge holds the end of it, ids into that edge)
    stack = [(c, other.root, 0) for c in cache.root.children.values()]
    while stack:
        node, g, j = stack.pop()
        ok = True
        for x in node.key:
            if j == len(g.key):              # at the end of g's edge: step into a child
                g = g.children.get(x)
                if g is None:
                    ok = False
                    break
                j = 0
            if g.key[j] != x:
                ok = False
                break
            j += 1
        if not ok:
            continue                         # nothing below is held either
        if not node.ckpt or (j == len(g.key) and g.ckpt):
            out[node.uid] = g
        stack.extend((c, g, j) for c in node.children.values())
    return out


def held_in_reference(cache: PrefixTree, other: PrefixTree) -> dict[int, Node]:
    """`held_in` by definition: every prefix of ids `other` caches, mapped to the node
    whose edge holds its end, and each node of `cache` looked up by its whole path."""
    def path(node):
        keys = []
        while node.parent is not None:
            keys.append(node.key)
            node = node.parent
        return tuple(x for key in reversed(keys) for x in key)

    prefixes = {}
    for g in other.nodes():
        if g is not other.root:
            base = path(g.parent)
            for j in range(1, len(g.key) + 1):
                prefixes[base + g.key[:j]] = g
    out = {}
    for node in cache.nodes():
        if node is cache.root:
            continue
        g = prefixes.get(path(node))
        if g is not None and (not node.ckpt or (g.depth == node.depth and g.ckpt)):
            out[node.uid] = g
    return out


def take_recency(cache: PrefixTree, ghost: PrefixTree) -> None:
    """Give `cache` the recency of `ghost` (before an index re-files every node): a node the
    ghost holds too (`held_in`) gets the last access (and state access) of the ghost's
    node there; the others keep their order among themselves but move before the oldest
    time a held node carries, so a recency order ranks them first. (Class offsets or
    Marconi's efficiency term may still rank a held node before them.)"""
    held = held_in(cache, ghost)
    nodes = [n for n in cache.nodes() if n is not cache.root]
    for n in nodes:
        g = held.get(n.uid)
        if g is not None:
            n.last_access = g.last_access
            if n.ckpt:
                n.state_access = g.state_access
    kept = [min(n.last_access, n.state_access) for n in nodes if n.uid in held]
    rest = [max(n.last_access, n.state_access) for n in nodes if n.uid not in held]
    if not kept or not rest:
        return
    shift = max(0.0, max(rest) - min(kept) + 1.0)   # just below the oldest held time
    for n in nodes:
        if n.uid not in held:
            n.last_access -= shift
            n.state_access -= shift


class WindowLeader:
    """Follow the leader over a sliding window, with hysteresis (O(experts) per request).

    After each request, every expert's saved FLOPs enter its window sum (the last `window`
    requests); the leader changes to the best expert (ties: the earlier one) only if its sum
    exceeds the leader's by more than ``margin × the window's prefill FLOPs``, and only
    once `evidence` requests have been observed (before that every cache is cold and a
    handful of requests decide the sums; a switch costs the real cache for long after).
    With `sustained`, the challenger must also be ahead by the same margin over every
    request since the leader took the lead (since the start for the first leader): a lead
    won in one window by chance, which a switch would pay for, does not move it.
    With ``z > 0``, the challenger's lead must also be significant: with d the per-request
    differences (challenger's saved FLOPs − leader's) over the window's n requests, their
    sum D must exceed z·sqrt(Σd² − D²/n), z standard errors of D if the requests were
    independent (a one-sided test; O(experts²) per request for the window's products).
    """

    def __init__(self, n_experts: int, window: int, margin: float, start: int = 0,
                 evidence: int = 0, sustained: bool = False, z: float = 0.0):
        self.window, self.margin = int(window), float(margin)
        self.evidence = int(evidence)
        self.sustained = bool(sustained)
        self.z = float(z)
        self.seen = 0
        self.sums = [0.0] * n_experts
        # Σ s_j s_k over the window (z > 0 only)
        self.products = [[0.0] * n_experts for _ in range(n_experts)]
        self.total = 0.0
        # sums since the leader took the lead (kept with `sustained` only)
        self.since = [0.0] * n_experts
        self.since_total = 0.0
        self.rows: deque[tuple[tuple[float, ...], float]] = deque()
        self.leader = start
        self.switches = 0

    def observe(self, saved: Sequence[float], prefill: float) -> int:
        """One request's saved FLOPs per expert and its prefill FLOPs; the leader for the
        next request."""
        row = tuple(saved)
        self.rows.append((row, prefill))
        sums, since = self.sums, self.since
        for k, s in enumerate(row):
            sums[k] += s
        if self.sustained:
            for k, s in enumerate(row):
                since[k] += s
            self.since_total += prefill
        if self.z:
            self._add_products(row, 1.0)
        self.total += prefill
        if len(self.rows) > self.window:
            old, p = self.rows.popleft()
            for k, s in enumerate(old):
                sums[k] -= s
            if self.z:
                self._add_products(old, -1.0)
            self.total -= p
        self.seen += 1
        if self.seen < self.evidence:
            return self.leader
        best = max(range(len(sums)), key=lambda k: (sums[k], -k))
        lead = self.leader
        if best != lead and sums[best] > sums[lead] + self.margin * self.total and (
                not self.sustained or since[best] > since[lead] + self.margin * self.since_total
        ) and (not self.z or self._significant(best, lead)):
            self.leader = best
            self.switches += 1
            self.since = [0.0] * len(sums)
            self.since_total = 0.0
        return self.leader

    def _add_products(self, row: tuple[float, ...], sign: float) -> None:
        for j, a in enumerate(row):
            pj = self.products[j]
            for k, b in enumerate(row):
                pj[k] += sign * a * b

    def _significant(self, best: int, lead: int) -> bool:
        q = self.products
        d = self.sums[best] - self.sums[lead]
        squares = q[best][best] + q[lead][lead] - 2.0 * q[best][lead]
        spread = max(0.0, squares - d * d / len(self.rows))
        return d > self.z * spread ** 0.5


def window_leaders_reference(saved: Sequence[Sequence[float]], prefill: Sequence[float],
                             window: int, margin: float, start: int = 0,
                             evidence: int = 0, sustained: bool = False,
                             z: float = 0.0) -> list[int]:
    """`WindowLeader`'s leaders after each request, by definition: the window sums (with
    `sustained` the sums since the last switch, with `z` the per-request differences) are
    recomputed from the whole history every time."""
    leader, began, out = start, 0, []
    n = len(saved[0]) if saved else 0

    def total(lo, t):
        return ([sum(saved[u][k] for u in range(lo, t + 1)) for k in range(n)],
                sum(prefill[lo:t + 1]))

    for t in range(len(saved)):
        sums, window_prefill = total(max(0, t + 1 - window), t)
        best = max(range(n), key=lambda k: (sums[k], -k))
        if t + 1 >= evidence and best != leader and \
                sums[best] > sums[leader] + margin * window_prefill:
            since, since_prefill = total(began, t)
            lo = max(0, t + 1 - window)
            d = [saved[u][best] - saved[u][leader] for u in range(lo, t + 1)]
            mean = sum(d) / len(d)
            spread = sum((x - mean) ** 2 for x in d)        # = Σd² − D²/n
            if (not sustained or since[best] > since[leader] + margin * since_prefill) and \
                    (not z or sum(d) > z * spread ** 0.5):
                leader, began = best, t + 1
        out.append(leader)
    return out

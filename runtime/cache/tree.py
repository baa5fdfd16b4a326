"""PrefixTree: the radix tree over ids that both caches share (nodes, insert, split, merge,
locks, byte accounting, eviction rounds).

A node owns the KV of its edge (the ids between its parent and itself) and, optionally, one
checkpoint: the recurrent state of every layer after its last id (`ckpt`). Which cached
position a request resumes from is the cache class's rule (`match`):

- `PrefixCache` (prefix_cache.py): the radix cache; a request hits the deepest checkpoint
  on its path;
- `DenseCache` (dense_cache.py): the per-block baselines' cache, which also holds a state at
  every grid position inside an edge.

Both share the hit rule of **state-free models** (no recurrent layers, 0 state bytes;
`state_free`): a request resumes from any cached KV prefix, so the hit is the deepest cached
position on its path, a partly matched edge included, floored to the engine's `hit_grid`
(vLLM hashes full blocks; SGLang matches any token; None = any id). Such a cache holds no
states at all: checkpoint requests are ignored (they would cost nothing and resume nothing
the KV does not), and eviction never merges or removes a node it did not choose, because
every node's KV can still be hit.

Memory is byte-exact against a `Capacity`: ``kv_bytes_per_token`` per cached token and
``state_bytes`` per state. Eviction is delegated to an `EvictionIndex` (a small strategy
object, `marconi.runtime.cache.eviction`) that proposes victims without rescanning the tree.
Requests in flight lock their path (`inc_lock`/`dec_lock`); locked nodes are never evicted,
and an insert that cannot fit even after evicting everything unlocked is refused (nothing
is inserted), so occupancy never exceeds capacity.

Time comes from an injected `clock` (`TraceClock`, set from trace timestamps by the
simulator), never from the wall.

Structural rules (checked by `check()`): a checkpoint-less node left with one child by an
eviction is merged into it; a checkpoint-less leaf left by an eviction is removed. Leaves
without a checkpoint are only created by inserts that ask for them (vLLM keeps KV past its
last state).

A subclass says where states sit besides checkpoints through four hooks, all "none" here:
`_interior` (states strictly inside an edge), `_on_grid` (a state at a depth by position
alone), `_evict_leaf` (how a leaf victim goes) and `_keep_leaf` (a leaf tidy-up may keep).
"""

from __future__ import annotations

import enum
import itertools
from typing import Iterator, NamedTuple, Protocol

from marconi.passes.cost_model import CostModel
from marconi.runtime.capacity import Capacity
from marconi.runtime.seq import Seq, common_prefix

REMOVE = "remove"            # evict a leaf: its KV and its states (dense leaves: trimmed)
DROP_STATE = "drop_state"    # evict one node's checkpoint, keep its KV


class Refresh(str, enum.Enum):
    """Which recency a request refreshes (a policy's `refresh`)."""

    PATH = "path"    # the matched and inserted path becomes most recent (`touch_path`)
    HIT = "hit"      # only the consumed checkpoint's node, and new nodes (`consume`)

    def __str__(self) -> str:
        return self.value


class TraceClock:
    """Trace time in milliseconds; the simulator advances it to each arrival."""

    __slots__ = ("now",)

    def __init__(self, now: float = 0.0):
        self.now = now


class Node:
    __slots__ = ("key", "parent", "children", "depth", "tokens", "ckpt", "last_access",
                 "state_access", "lock_ref", "uid", "stamp", "cand", "eff", "indexed_at",
                 "alive", "doomed")

    def __init__(self, key: tuple, parent: Node | None, depth: int, tokens: int, uid: int,
                 now: float):
        self.key = key                    # ids of the edge from the parent
        self.parent = parent
        self.children: dict[int, Node] = {}
        self.depth = depth                # ids from the root to the end of the edge
        self.tokens = tokens              # tokens from the root to the end of the edge
        self.ckpt = False                 # holds a state at its end
        self.last_access = now            # recency of the KV path (policy decides refresh)
        self.state_access = now           # last time its checkpoint was created or consumed
        self.lock_ref = 0
        self.uid = uid                    # creation order: deterministic tie-break
        self.stamp = 0                    # eviction-index version (lazy invalidation)
        self.cand = False                 # eviction index: currently a candidate
        self.eff = 0.0                    # eviction index: cached score term
        self.indexed_at = now             # eviction index: time its live entries carry
        self.alive = True
        self.doomed = False               # tidy when its lock is released

    @property
    def start(self) -> int:
        return self.depth - len(self.key)

    def __repr__(self) -> str:
        return (f"Node(uid={self.uid}, depth={self.start}..{self.depth}, ckpt={self.ckpt}, "
                f"children={len(self.children)}, lock={self.lock_ref})")


class Match(NamedTuple):
    """Where a request's input meets the tree (read-only)."""

    hit_depth: int            # ids covered by the deepest state on the path (0 = miss)
    hit_node: Node            # node holding that state (root on a miss)
    depth: int                # ids matched in KV, a partial last edge included
    node: Node                # deepest node whose whole edge matched
    partial: Node | None      # child matched only partly (`depth` lies inside its edge)


class EvictionIndex(Protocol):
    """Strategy that orders eviction candidates (see `marconi.runtime.cache.eviction`)."""

    def bind(self, cache: PrefixTree) -> None: ...
    def update(self, node: Node) -> None: ...          # node created/changed/removed
    def victim(self) -> tuple[Node, str] | None: ...   # next unlocked victim and action
    def release(self) -> None: ...                     # end of an eviction round
    def clear(self) -> None: ...                       # drop every entry (`discard`)


class PrefixTree:
    """The shared machinery; `match` (the hit rule) is the subclasses'."""

    def __init__(self, kv_bytes_per_token: int, state_bytes: int, capacity: Capacity,
                 index: EvictionIndex, clock: TraceClock | None = None,
                 state_free: bool = False, hit_grid: int | None = None):
        self.kpt = int(kv_bytes_per_token)
        self.sb = int(state_bytes)
        if state_free and self.sb:
            raise ValueError(f"a state-free cache with {self.sb} state bytes per checkpoint")
        self.capacity = capacity
        self.clock = clock or TraceClock()
        self.state_free = state_free      # no recurrent state: any cached KV prefix hits
        self.hit_grid = hit_grid          # state-free hits floor to these tokens (None: any)
        self._uids = itertools.count(1)
        self.root = Node((), None, 0, 0, 0, self.clock.now)
        self.kv_used = self.state_used = 0
        self.locked_kv = self.locked_state = 0
        self.peak_occupancy = 0.0
        self.peak_bytes = 0
        self.checkpoints_admitted = self.checkpoints_evicted = 0
        self.evictions = self.rejected = 0
        self.index = index
        index.bind(self)

    @classmethod
    def for_cost(cls, cost: CostModel, capacity: Capacity, index: EvictionIndex,
                 **options) -> PrefixTree:
        """An empty cache for `cost`'s model (state-free when it has no state bytes)."""
        sb = cost.state_bytes()
        return cls(cost.kv_bytes_per_token, sb, capacity, index, state_free=sb == 0,
                   **options)

    # ------------------------------------------------------------------ public API
    def match(self, seq: Seq, n: int) -> Match:
        """Walk the first `n` ids of `seq`; the hit is the deepest state passed (the
        deepest cached KV, on the hit grid, when the cache is `state_free`)."""
        if self.state_free:
            return self._match_kv(seq, n)
        return self._match_states(seq, n)

    def insert(self, seq: Seq, length: int, checkpoints: tuple[int, ...] = (),
               start: Match | None = None) -> Node | None:
        """Cache the first `length` ids of `seq` with states at `checkpoints` (distinct
        depths ≤ length).

        Evicts (respecting locks) to make room; returns the node ending at `length`, or None
        when the entry cannot fit (nothing is inserted then). `start` (a `match` of the same
        seq on the unchanged tree) lets the walk resume where the match stopped.
        """
        ids, now, on_grid = seq.ids, self.clock.now, self._on_grid
        if checkpoints and max(checkpoints) > length:
            raise ValueError(f"checkpoint at {max(checkpoints)} past the insert's {length} ids")
        if self.state_free:
            checkpoints = ()                                # no state to keep anywhere
        node, d = self.root, 0
        if start is not None and start.node.depth <= length:
            node, d = start.node, start.node.depth
        child, j = None, 0
        while d < length:                                   # the part already cached
            c = node.children.get(ids[d])
            if c is None:
                break
            k = len(c.key)
            if d + k <= length and ids[d:d + k] == c.key:
                node, d = c, d + k
                continue
            child, j = c, common_prefix(c.key, ids, d, length)
            break
        x = d + j
        bottom = child if child is not None else node
        old = [c for c in checkpoints if c <= x and not self._has_state(bottom, c)]
        segments = sorted({c for c in checkpoints if c > x} | {length}) if length > x else []
        states = len(old)
        a = x
        for b in segments:
            states += self._interior(a, b) + (b in checkpoints or on_grid(b))
            a = b
        kv_need = self.kpt * (seq.tokens(length) - seq.tokens(x)) if length > x else 0

        self.inc_lock(bottom)
        if not self.evict(kv_need, states * self.sb):
            self.dec_lock(bottom)
            self.rejected += 1
            return None
        if child is not None and (segments or x in checkpoints):
            node, child = self._split(child, j, seq.tokens(x)), None
        top = node if child is None else child              # the path's deepest node
        for c in sorted(old, reverse=True):
            n = self._locate(top, c)
            if c < n.depth:
                n = self._split(n, c - n.start, seq.tokens(c))
            if not self._has_state(n, c):
                self._add_ckpt(n)
        if segments:
            self._note_ids(seq)
        a = x
        for b in segments:                                  # the new part: a chain of nodes
            new = Node(ids[a:b], node, b, seq.tokens(b), next(self._uids), now)
            new.ckpt = b in checkpoints or on_grid(b)
            node.children[ids[a]] = new
            n_states = self._interior(a, b) + new.ckpt
            self.kv_used += self.kpt * (new.tokens - node.tokens)
            self.state_used += n_states * self.sb
            self.checkpoints_admitted += n_states
            if node is not self.root:
                self.index.update(node)
            self.index.update(new)
            node, a = new, b
        self.dec_lock(bottom)
        self._note_peak()
        return node if child is None else top

    def consume(self, node: Node, refresh_path_recency: bool) -> None:
        """A request resumes from `node`'s checkpoint: its state is fresh again; with
        `refresh_path_recency` (Marconi: refresh only the consumed node) so is its KV."""
        now = self.clock.now
        node.state_access = now
        if refresh_path_recency:
            node.last_access = now
        self.index.update(node)

    def touch_path(self, node: Node) -> None:
        """Refresh `node` and all its ancestors (SGLang's and vLLM's whole-path recency)."""
        now, root, update = self.clock.now, self.root, self.index.update
        while node is not root:
            if node.last_access != now:
                node.last_access = now
                update(node)
            node = node.parent

    def inc_lock(self, node: Node) -> None:
        """Pin `node` and its ancestors (an in-flight request uses their KV and state)."""
        root, kpt, sb, states = self.root, self.kpt, self.sb, self._states
        while node is not root:
            if node.lock_ref == 0:
                self.locked_kv += kpt * (node.tokens - node.parent.tokens)
                self.locked_state += states(node) * sb
            node.lock_ref += 1
            node = node.parent

    def dec_lock(self, node: Node) -> None:
        """Undo one `inc_lock(node)`; tidies nodes an eviction could not tidy while locked."""
        root, kpt, sb, states = self.root, self.kpt, self.sb, self._states
        doomed = []
        while node is not root:
            node.lock_ref -= 1
            if node.lock_ref == 0:
                self.locked_kv -= kpt * (node.tokens - node.parent.tokens)
                self.locked_state -= states(node) * sb
                if node.doomed:
                    doomed.append(node)
            node = node.parent
        for n in doomed:
            n.doomed = False
            if n.alive:
                self._tidy(n)

    def evict(self, kv_need: int, state_need: int) -> bool:
        """Evict until `kv_need` more KV bytes and `state_need` more state bytes fit."""
        cap = self.capacity
        if cap.fits(self.kv_used + kv_need, self.state_used + state_need):
            return True
        if not cap.fits(self.locked_kv + kv_need, self.locked_state + state_need):
            return False
        try:
            while not cap.fits(self.kv_used + kv_need, self.state_used + state_need):
                v = self.index.victim()
                if v is None:
                    raise RuntimeError("eviction index has no victim while unlocked bytes "
                                       "remain; the index misses a candidate")
                self.evict_node(*v, kv_need=kv_need, state_need=state_need)
        finally:
            self.index.release()
        return True

    def evict_node(self, node: Node, action: str, kv_need: int = 0,
                   state_need: int = 0) -> None:
        """Carry out one eviction: `DROP_STATE` of `node`, or `REMOVE` the leaf `node` (a
        dense leaf only loses as many tail blocks as the pending request needs)."""
        assert node.lock_ref == 0 and node is not self.root, node
        self.evictions += 1
        if action == DROP_STATE:
            self._drop_state(node)
        else:
            self._evict_leaf(node, kv_need, state_need)

    def clone(self, index: EvictionIndex) -> PrefixTree:
        """An independent copy (same uids, times and counters) ordered by `index`."""
        new = self._blank(index)
        for name in ("kv_used", "state_used", "locked_kv", "locked_state", "peak_occupancy",
                     "peak_bytes", "checkpoints_admitted", "checkpoints_evicted",
                     "evictions", "rejected"):
            setattr(new, name, getattr(self, name))
        new._uids = itertools.count(max(n.uid for n in self.nodes()) + 1)
        stack = [(self.root, new.root)]
        copies = []
        while stack:
            old, cp = stack.pop()
            for first, oc in old.children.items():
                c = Node(oc.key, cp, oc.depth, oc.tokens, oc.uid, oc.last_access)
                c.ckpt, c.state_access, c.lock_ref = oc.ckpt, oc.state_access, oc.lock_ref
                cp.children[first] = c
                copies.append(c)
                stack.append((oc, c))
        for c in copies:
            index.update(c)
        return new

    def discard(self) -> None:
        """Unlink every node, empty the eviction index and let go of it, so that dropping
        the cache frees it by reference counting (the tree, the cache ⇄ index and the
        index ⇄ policy links are cycles otherwise). The cache cannot be used afterwards."""
        for node in list(self.nodes()):
            node.children = {}
            node.parent = None
        self.index.clear()          # its entries hold nodes; it may be in a cycle itself
        self.index = None

    def nodes(self) -> Iterator[Node]:
        """Every node, root first (iterative DFS)."""
        stack = [self.root]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(node.children.values())

    @property
    def used_bytes(self) -> int:
        return self.kv_used + self.state_used

    @property
    def occupancy(self) -> float:
        return self.capacity.occupancy(self.kv_used, self.state_used)

    def check(self, kv_only_leaves: bool = False) -> None:
        """Recount everything and assert the invariants (tests only: O(tree)).

        With nothing in flight: no locks; a node with one child holds a checkpoint; a leaf
        holds one too unless the policy inserts checkpoint-less KV (`kv_only_leaves`). A
        state-free cache holds no checkpoint at all, and any shape of tree.
        """
        kv = st = 0
        for node in self.nodes():
            for first, c in node.children.items():
                assert c.alive and c.parent is node and c.key and c.key[0] == first, c
                assert c.depth == node.depth + len(c.key) and c.tokens > node.tokens, c
            if node is self.root:
                continue
            assert node.lock_ref == 0 and not node.doomed, node
            if self.state_free:
                assert not node.ckpt, f"a checkpoint in a state-free cache {node}"
            elif len(node.children) == 1:
                assert node.ckpt, f"checkpoint-less single-child node {node}"
            elif not node.children:
                assert node.ckpt or kv_only_leaves, f"checkpoint-less leaf {node}"
            kv, st = kv + self._kv(node), st + self._states(node) * self.sb
        assert (kv, st) == (self.kv_used, self.state_used), (kv, st, self.kv_used,
                                                             self.state_used)
        assert self.locked_kv == self.locked_state == 0
        assert self.capacity.fits(kv, st), (kv, st, self.capacity)

    # ------------------------------------------------------------------ payload hooks
    # A subclass that keeps data beside the tree (runtime/serve/tensor_cache.py: pool slots per
    # node) overrides these four; the tree, its bytes and its eviction order stay this
    # class's. They do nothing here.

    def on_split(self, upper: Node, lower: Node) -> None:
        """`lower`'s edge was just cut: the new `upper` (its parent now) holds the first
        ``upper.tokens − upper.parent.tokens`` tokens of it."""

    def on_merge(self, node: Node, child: Node) -> None:
        """`node` (no checkpoint, one child) is about to be folded into `child`, which will
        hold `node`'s tokens before its own."""

    def on_drop_state(self, node: Node) -> None:
        """`node`'s checkpoint is about to be dropped (its KV stays)."""

    def on_remove(self, node: Node) -> None:
        """`node` just left the tree with all it held (`alive` is False)."""

    # ------------------------------------------------------------------ cache-class hooks
    def _match_states(self, seq: Seq, n: int) -> Match:
        """`match` of a cache that holds states: the class's hit rule."""
        raise NotImplementedError

    def _blank(self, index: EvictionIndex) -> PrefixTree:
        """An empty cache with the same parameters and clock time (`clone`)."""
        raise NotImplementedError

    def _interior(self, start: int, end: int) -> int:
        """States strictly inside an edge (start, end) besides its checkpoint."""
        return 0

    def _on_grid(self, depth: int) -> bool:
        """Is there a state at `depth` by its position alone (not asked for)?"""
        return False

    def _states(self, node: Node) -> int:
        """States `node` holds (its checkpoint, plus any inside its edge)."""
        return node.ckpt

    def _note_ids(self, seq: Seq) -> None:
        """`seq`'s ids are about to enter the tree (a class that needs their sizes later)."""

    def _evict_leaf(self, node: Node, kv_need: int, state_need: int) -> None:
        """`REMOVE` the leaf victim `node` while `kv_need`/`state_need` bytes are pending."""
        self._remove_leaf(node)

    def _keep_leaf(self, node: Node) -> bool:
        """Tidy-up is about to remove the checkpoint-less unlocked leaf `node`: return True
        if it kept (part of) it instead."""
        return False

    # ------------------------------------------------------------------ private helpers
    def _kv(self, node: Node) -> int:
        return self.kpt * (node.tokens - node.parent.tokens)

    def _has_state(self, node: Node, depth: int) -> bool:
        """Is there a state at `depth` on the path ending in `node`?"""
        if depth == 0:
            return True
        n = self._locate(node, depth)
        return (depth == n.depth and n.ckpt) or self._on_grid(depth)

    @staticmethod
    def _locate(node: Node, depth: int) -> Node:
        """The node on the path to `node` whose edge holds position `depth` (≥ 1)."""
        while node.depth - len(node.key) >= depth:
            node = node.parent
        return node

    def _match_kv(self, seq: Seq, n: int) -> Match:
        """`match` of a state-free cache: the hit is the deepest cached id of the first `n`,
        a partly matched edge included, floored to `hit_grid` tokens."""
        ids, node, d = seq.ids, self.root, 0
        partial = None
        while d < n:
            child = node.children.get(ids[d])
            if child is None:
                break
            k = len(child.key)
            if d + k <= n and ids[d:d + k] == child.key:
                d += k
                node = child
                continue
            partial = child
            break
        depth = d + common_prefix(partial.key, ids, d, n) if partial is not None else d
        hit = seq.floor_grid(depth, self.hit_grid)
        if hit == 0:
            hit_node = self.root
        elif hit > node.depth:
            hit_node = partial                              # inside the partly matched edge
        else:
            hit_node = self._locate(node, hit)
        return Match(hit, hit_node, depth, node, partial)

    def _note_peak(self) -> None:
        occ = self.capacity.occupancy(self.kv_used, self.state_used)
        if occ > self.peak_occupancy:
            self.peak_occupancy = occ
        used = self.kv_used + self.state_used
        if used > self.peak_bytes:
            self.peak_bytes = used

    def _split(self, node: Node, j: int, tokens: int) -> Node:
        """Cut `node`'s edge after `j` ids; returns the new upper node (no bytes change)."""
        upper = Node(node.key[:j], node.parent, node.start + j, tokens, next(self._uids),
                     self.clock.now)
        upper.ckpt = self._on_grid(upper.depth)
        upper.lock_ref = node.lock_ref
        node.parent.children[node.key[0]] = upper
        node.key = node.key[j:]
        node.parent = upper
        upper.children[node.key[0]] = node
        self.on_split(upper, node)
        self.index.update(upper)
        self.index.update(node)
        return upper

    def _add_ckpt(self, node: Node) -> None:
        node.ckpt = True
        node.state_access = self.clock.now
        self.state_used += self.sb
        self.checkpoints_admitted += 1
        if node.lock_ref:
            self.locked_state += self.sb
        self.index.update(node)

    def _drop_state(self, node: Node) -> None:
        self.on_drop_state(node)
        node.ckpt = False
        self.state_used -= self.sb
        self.checkpoints_evicted += 1
        self.index.update(node)
        if len(node.children) == 1:
            self._merge(node)

    def _remove_leaf(self, node: Node) -> None:
        parent = node.parent
        n = self._states(node)
        self.kv_used -= self._kv(node)
        self.state_used -= n * self.sb
        self.checkpoints_evicted += n
        del parent.children[node.key[0]]
        node.alive = False
        self.on_remove(node)
        self.index.update(node)
        self._tidy(parent)

    def _merge(self, node: Node) -> None:
        """Fold a checkpoint-less single-child node into its child (no bytes change)."""
        (child,) = node.children.values()
        self.on_merge(node, child)
        child.key = node.key + child.key
        child.parent = node.parent
        node.parent.children[node.key[0]] = child
        child.last_access = max(child.last_access, node.last_access)
        node.alive = False
        node.children = {}
        self.index.update(node)
        self.index.update(child)

    def _tidy(self, node: Node) -> None:
        """After `node` lost a child or its state: merge or remove it if it became useless
        (in a state-free cache nothing is: a node's KV can be hit wherever the tree ends)."""
        if self.state_free:
            if node is not self.root and node.alive:
                self.index.update(node)
            return
        while node is not self.root and node.alive:
            self.index.update(node)
            if node.ckpt or len(node.children) >= 2:
                return
            if node.lock_ref:
                node.doomed = True
                return
            if node.children:
                self._merge(node)
                return
            if self._keep_leaf(node):
                return
            parent = node.parent
            self.kv_used -= self._kv(node)
            del parent.children[node.key[0]]
            node.alive = False
            self.on_remove(node)
            self.index.update(node)
            node = parent


"""Eviction by next use: Belady's rule (evict the entry needed farthest in the future)
with the next use given by an estimate, predicted (`runtime.plan.next_use`) or true (a
clairvoyant oracle built offline from the workload, `planner.next_use.TrueNextUse`).

Candidates are those of `planned`'s index (`policies.planned.ClassOffsetLRU`): nodes with a
state and at most one child, and leaves. A leaf victim is `REMOVE`d, a single-child one
loses its state (`DROP_STATE`). The estimate is asked when the cache re-files a node
(created, touched by a request, gains or loses a child or a state), which is every time
its next use can change: a use touches the node (path refresh), so the key of an entry
is its next use as known after its last use. Ties: the older node.

Background: Belady (1966); LRB (Song et al., NSDI'20) and Hawkeye (Jain and Lin, ISCA'16)
evict by a learned approximation of the same order.
"""

from __future__ import annotations

import heapq
from typing import Callable

from marconi.runtime.cache.eviction import HeapIndex
from marconi.runtime.cache.tree import DROP_STATE, REMOVE, Node
from marconi.runtime.plan.next_use import NextUsePredictor, bin_features

NextUse = Callable[[Node], float]     # node → absolute trace time (ms) of its next use


def is_candidate(node: Node) -> bool:
    """A node this index may evict: a state with at most one child, or a leaf."""
    return node.alive and ((node.ckpt and len(node.children) <= 1) or not node.children)


class NextUseIndex(HeapIndex):
    """One min-heap on ``-next_use(node)`` (farthest next use first; ∞ = never again).

    ``reference=True`` keeps no heap: `victim` scans every live candidate for the largest
    key filed at its last update (the slow definition, kept for tests)."""

    def __init__(self, next_use: NextUse, reference: bool = False):
        super().__init__()
        self.next_use = next_use
        self.reference = reference
        self._heap: list = []
        self._keys: dict[int, tuple[float, Node]] = {}   # reference: uid → (key, node)

    def _heaps(self):
        return (self._heap,)

    def update(self, node: Node) -> None:
        node.stamp += 1
        cand = is_candidate(node)
        self._count(node, cand, self._heap)
        if not node.alive:
            forget = getattr(self.next_use, "forget", None)
            if forget is not None:
                forget(node)
        if self.reference:
            if cand:
                self._keys[node.uid] = (-self.next_use(node), node)
            else:
                self._keys.pop(node.uid, None)
        elif cand:
            heapq.heappush(self._heap, (-self.next_use(node), node.uid, node.stamp, node))

    def victim(self):
        if self.reference:
            best = min(((k, uid, n) for uid, (k, n) in self._keys.items()
                        if n.alive and not n.lock_ref), default=None,
                       key=lambda e: (e[0], e[1]))
            if best is None:
                return None
            node = best[2]
        else:
            entry = self._top(self._heap)
            if entry is None:
                return None
            node = entry[-1]
        return node, (REMOVE if not node.children else DROP_STATE)

    def clear(self) -> None:
        super().clear()
        self._keys.clear()


class PassHistory:
    """Each node's passes, by uid: [first pass, earlier passes, last pass, last gap | None]
    (ms). A pass is an update at which the node's `last_access` moved (a request touched
    it); with `now`, only a move to `now` counts (a merge that raises a node's recency to
    its parent's is no pass). The first update of a node is its first pass. A split's new
    upper node starts a history of its own."""

    def __init__(self):
        self._hist: dict[int, list] = {}

    def note(self, node: Node, now: float | None = None) -> list:
        h = self.get(node)
        if node.last_access > h[2] and (now is None or node.last_access == now):
            h[1] += 1
            h[3] = node.last_access - h[2]
            h[2] = node.last_access
        return h

    def get(self, node: Node) -> list:
        """The node's history (begun now if it has none), without noting a pass."""
        h = self._hist.get(node.uid)
        if h is None:
            h = self._hist[node.uid] = [node.last_access, 0, node.last_access, None]
        return h

    def bins(self, node: Node, h: list) -> tuple[int, int, int, int]:
        """The binned features of the node's last pass (`bin_features`)."""
        return bin_features(h[1], h[3], node.tokens, h[2] - h[0])

    def forget(self, node: Node) -> None:
        self._hist.pop(node.uid, None)


class PredictedNextUse:
    """`NextUse` from a `NextUsePredictor` and each entry's own pass history
    (`PassHistory`)."""

    def __init__(self, predictor: NextUsePredictor):
        self.predictor = predictor
        self.history = PassHistory()

    def __call__(self, node: Node) -> float:
        h = self.history.note(node)
        return h[2] + self.predictor.gap_ms(self.history.bins(node, h))

    def forget(self, node: Node) -> None:
        self.history.forget(node)

"""PrefixCache: the radix cache, whose nodes hold KV and at most one checkpoint each.

A recurrent state can only be resumed at exactly the position it was taken, so a request
*hits* the deepest node on its path that holds a checkpoint, and only if every id above it
is cached (background/marconi.md §1.2). A match that ends inside an edge never hits that
edge's checkpoint (the original simulator's bug 3, §9). A state-free model hits any cached
KV prefix instead (`PrefixTree`'s shared rule).

The tree itself (insert, split, merge, locks, byte accounting, eviction rounds) is
`PrefixTree`'s (tree.py); the per-block baselines keep a `DenseCache` (dense_cache.py).
"""

from __future__ import annotations

from marconi.runtime.cache.tree import EvictionIndex, Match, PrefixTree, TraceClock
from marconi.runtime.seq import Seq, common_prefix


class PrefixCache(PrefixTree):
    def _match_states(self, seq: Seq, n: int) -> Match:
        """The hit is the deepest checkpoint whose whole path matched."""
        ids = seq.ids
        node = hit_node = self.root
        d = hit = 0
        while d < n:
            child = node.children.get(ids[d])
            if child is None:
                break
            k = len(child.key)
            if d + k <= n and ids[d:d + k] == child.key:
                d += k
                node = child
                if child.ckpt:
                    hit_node, hit = child, d
                continue
            return Match(hit, hit_node, d + common_prefix(child.key, ids, d, n), node, child)
        return Match(hit, hit_node, d, node, None)

    def _blank(self, index: EvictionIndex) -> PrefixCache:
        return PrefixCache(self.kpt, self.sb, self.capacity, index, TraceClock(self.clock.now),
                           self.state_free, self.hit_grid)

"""The prefixes seen so far: a compressed trie of ids with pass counts, no KV, no states.

The `planned` policy keeps it beside its cache (as ARC keeps ghost lists): it tells, for a
new request, how deep its input was seen before and by how many earlier sequences, even
when the cache has long evicted that content. That is what lets a rule checkpoint a
shared prefix on its second sighting although the first sighting's KV is gone, and tell a
continuation from a fresh request. Metadata only (ids, counts): not charged to the cache.
"""

from __future__ import annotations

from typing import NamedTuple

from marconi.runtime.seq import common_prefix


class Sighting(NamedTuple):
    depth: int       # ids of the input seen before (longest common prefix with the past)
    passes: int      # earlier sequences that passed that depth (0 when depth == 0)


class SeenPrefixes:
    __slots__ = ("keys", "children", "passes")

    def __init__(self):
        self.keys: list[tuple] = [()]
        self.children: list[dict] = [{}]
        self.passes: list[int] = [0]

    def __len__(self) -> int:
        return len(self.keys) - 1

    def lookup(self, ids: tuple, n: int) -> Sighting:
        """How far ``ids[:n]`` was seen before, and how often at that depth."""
        node, d, passes = 0, 0, 0
        while d < n:
            child = self.children[node].get(ids[d])
            if child is None:
                break
            key = self.keys[child]
            j = common_prefix(key, ids, d, n)
            d += j
            passes = self.passes[child]
            if j < len(key):
                break
            node = child
        return Sighting(d, passes if d else 0)

    def add(self, ids: tuple) -> None:
        """Record one more sequence."""
        node, d, n = 0, 0, len(ids)
        while d < n:
            child = self.children[node].get(ids[d])
            if child is None:
                self._new(node, ids[d:])
                return
            key = self.keys[child]
            j = common_prefix(key, ids, d, n)
            if j < len(key):
                child = self._split(node, child, j)
            self.passes[child] += 1
            node, d = child, d + j

    # ------------------------------------------------------------ private helpers
    def _new(self, parent: int, key: tuple) -> None:
        self.keys.append(key)
        self.children.append({})
        self.passes.append(1)
        self.children[parent][key[0]] = len(self.keys) - 1

    def _split(self, parent: int, child: int, j: int) -> int:
        """Cut `child`'s edge after j ids; the new upper node keeps its pass count."""
        key = self.keys[child]
        upper = len(self.keys)
        self.keys.append(key[:j])
        self.children.append({key[j]: child})
        self.passes.append(self.passes[child])
        self.keys[child] = key[j:]
        self.children[parent][key[0]] = upper
        return upper

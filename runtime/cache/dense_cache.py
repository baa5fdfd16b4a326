"""DenseCache: the per-block baselines' cache (vLLM's `--mamba-cache-mode all`, `infinite`).

vLLM in "all" mode keeps a recurrent state after every block, so besides the checkpoints
asked for, this cache holds a state at every position inside an edge whose depth is a
multiple of `stride` ids: an edge (start, depth] keeps

    interior = (depth − 1)//stride − start//stride

states plus its end checkpoint, and a node ending on the grid always holds one. A request
hits the deepest state on its path, an interior one included, also inside a partly
matched edge. Eviction frees a leaf's blocks tail first, one grid step (its KV and its
state) at a time, as vLLM frees a request's blocks, until the pending request fits; a
checkpoint-less leaf left by an eviction is trimmed back to its last interior state rather
than removed.

A state-free model (0 state bytes) keeps no states at all (the grid only says where a
leaf's blocks are freed) and hits any cached KV on the hit grid, as `PrefixTree` defines.
The tree itself is `PrefixTree`'s (tree.py).
"""

from __future__ import annotations

from marconi.runtime.capacity import Capacity
from marconi.runtime.cache.tree import EvictionIndex, Match, Node, PrefixTree, TraceClock
from marconi.runtime.seq import Seq, common_prefix


class DenseCache(PrefixTree):
    def __init__(self, kv_bytes_per_token: int, state_bytes: int, capacity: Capacity,
                 index: EvictionIndex, clock: TraceClock | None = None,
                 state_free: bool = False, hit_grid: int | None = None, *, stride: int,
                 block: int = 1):
        self.stride = stride              # ids between grid positions (states, freeing)
        self.block = block                # tokens per id (for trimming leaves)
        self._state_stride = None if state_free else stride   # where grid states sit
        self.id_tokens: dict[int, int] = {}   # ids shorter than `block` (partial blocks)
        super().__init__(kv_bytes_per_token, state_bytes, capacity, index, clock,
                         state_free, hit_grid)

    # ------------------------------------------------------------------ cache-class hooks
    def _match_states(self, seq: Seq, n: int) -> Match:
        """The hit is the deepest state passed: a checkpoint, or a grid state inside an
        edge (a partly matched one included)."""
        ids, s = seq.ids, self.stride
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
                elif (d - 1) // s * s > d - k:              # last interior grid state
                    hit_node, hit = child, (d - 1) // s * s
                continue
            j = common_prefix(child.key, ids, d, n)
            if (d + j) // s * s > d:
                hit_node, hit = child, (d + j) // s * s
            return Match(hit, hit_node, d + j, node, child)
        return Match(hit, hit_node, d, node, None)

    def _blank(self, index: EvictionIndex) -> DenseCache:
        new = DenseCache(self.kpt, self.sb, self.capacity, index, TraceClock(self.clock.now),
                         self.state_free, self.hit_grid, stride=self.stride, block=self.block)
        new.id_tokens = dict(self.id_tokens)
        return new

    def _interior(self, start: int, end: int) -> int:
        s = self._state_stride
        return (end - 1) // s - start // s if s else 0

    def _on_grid(self, depth: int) -> bool:
        s = self._state_stride
        return bool(s and depth % s == 0)

    def _states(self, node: Node) -> int:
        return self._interior(node.start, node.depth) + node.ckpt

    def _note_ids(self, seq: Seq) -> None:
        if seq.block > 1:
            for i, t in seq.short_ids():
                self.id_tokens[i] = t

    def _evict_leaf(self, node: Node, kv_need: int, state_need: int) -> None:
        if kv_need or state_need:
            self._trim(node, kv_need, state_need)
        else:
            self._remove_leaf(node)

    def _keep_leaf(self, node: Node) -> bool:
        if self._interior(node.start, node.depth):          # keep its last state
            self._trim_to_grid(node)
            return True
        return False

    # ------------------------------------------------------------------ private helpers
    def _trim(self, node: Node, kv_need: int, state_need: int) -> None:
        """Free a leaf's tail one grid step at a time until the request fits (vLLM frees a
        request's blocks tail first); the whole leaf once no interior state is left."""
        s, cap, kpt, sb = self.stride, self.capacity, self.kpt, self.sb
        start, depth, tokens = node.start, node.depth, node.tokens
        kv_used, state_used = self.kv_used, self.state_used
        key, block, short = node.key, self.block, self.id_tokens
        steps, whole = 0, False
        while not cap.fits(kv_used + kv_need, state_used + state_need):
            g = (depth - 1) // s * s
            if g <= start:
                whole = True
                break
            removed = sum(short.get(i, block) for i in key[g - start:depth - start])
            depth, tokens = g, tokens - removed
            kv_used -= kpt * removed
            state_used -= sb
            steps += 1
        if steps:
            node.key = key[:depth - start]
            node.depth, node.tokens = depth, tokens
            self.kv_used, self.state_used = kv_used, state_used
            if not self.state_free:
                self.checkpoints_evicted += steps
        if whole:
            self._remove_leaf(node)

    def _trim_to_grid(self, node: Node) -> None:
        """Cut a checkpoint-less leaf back to its last interior state."""
        s = self.stride
        g = (node.depth - 1) // s * s
        cut = node.key[g - node.start:]
        removed = sum(self.id_tokens.get(i, self.block) for i in cut)
        node.key = node.key[:g - node.start]
        node.depth, node.tokens = g, node.tokens - removed
        node.ckpt = True                       # the interior state at g is now its end
        self.kv_used -= self.kpt * removed
        self.index.update(node)

"""TensorPrefixCache: the simulator's `PrefixCache`, whose nodes also own pool slots.

The tree, its byte accounting, its locks and its eviction order are `PrefixCache`'s, unchanged:
the simulator is this cache without tensors. This subclass only keeps, beside the tree,

    kv_slots[node]    int64 [edge tokens]   KV pool slots of the node's edge, in order
    state_slot[node]  int                   state pool slot of its checkpoint

and moves them when the tree moves bytes, through `PrefixCache`'s payload hooks: an edge
split hands the first ids' slots to the new upper node, a merge concatenates them, a
dropped checkpoint frees its state slot, and a node that leaves the tree frees everything
it held. New nodes and checkpoints get their slots from `attach` after an insert, from the
working cache of the request that inserted them.

It is a radix cache: the per-block baselines' `DenseCache`, with a state at every grid
position inside an edge, has no tensor twin (the wrapper refuses those policies).
"""

from __future__ import annotations

from typing import Callable, Mapping

import torch
from torch import Tensor

from marconi.runtime.capacity import Capacity
from marconi.runtime.serve.pools import KVPool, StatePool
from marconi.runtime.cache.prefix_cache import PrefixCache
from marconi.runtime.cache.tree import Node, TraceClock


class TensorPrefixCache(PrefixCache):
    def __init__(self, kv_pool: KVPool, state_pool: StatePool, capacity: Capacity, index,
                 clock: TraceClock | None = None):
        self.kv_pool, self.state_pool = kv_pool, state_pool
        self.kv_slots: dict[Node, Tensor] = {}
        self.state_slot: dict[Node, int] = {}
        super().__init__(kv_pool.bytes_per_token, state_pool.slot_bytes, capacity, index,
                         clock)

    # ------------------------------------------------------------------ public API
    def attach(self, end: Node, kv_rows: Callable[[int, int], list[Tensor]],
               states: Mapping[int, list[Tensor]]) -> int:
        """Give slots to every node on the path to `end` that has none yet (the nodes and
        checkpoints the last insert created). `kv_rows(a, b)` returns the KV of tokens
        [a, b) ([b − a, *row] per KV tensor), `states[t]` the states after t tokens.
        Returns the number of state slots written."""
        written = 0
        node = end
        while node is not self.root:
            if node not in self.kv_slots:
                a, b = node.parent.tokens, node.tokens
                slots = self.kv_pool.alloc(b - a)
                self.kv_pool.write(slots, kv_rows(a, b))
                self.kv_slots[node] = slots
            if node.ckpt and node not in self.state_slot:
                slot = self.state_pool.alloc()
                self.state_pool.save(slot, states[node.tokens])
                self.state_slot[node] = slot
                written += 1
            node = node.parent
        return written

    def path_kv_slots(self, node: Node) -> Tensor:
        """KV slots of tokens [0, node.tokens) along the path to `node`."""
        parts = []
        while node is not self.root:
            parts.append(self.kv_slots[node])
            node = node.parent
        return torch.cat(parts[::-1]) if parts else torch.zeros(0, dtype=torch.int64)

    def check_payloads(self) -> None:
        """Assert that slots mirror the tree exactly (tests only: O(tree))."""
        kv_tokens = states = 0
        for node in self.nodes():
            if node is self.root:
                continue
            edge = node.tokens - node.parent.tokens
            assert self.kv_slots[node].numel() == edge, (node, self.kv_slots[node].numel())
            assert node.ckpt == (node in self.state_slot), node
            kv_tokens += edge
            states += node.ckpt
        assert len(self.kv_slots) == sum(1 for n in self.nodes()) - 1
        assert len(self.state_slot) == states
        assert self.kv_pool.slots.used == kv_tokens and self.state_pool.slots.used == states
        assert self.kv_pool.used_bytes == self.kv_used, (self.kv_pool.used_bytes, self.kv_used)
        assert self.state_pool.used_bytes == self.state_used

    # ------------------------------------------------------------------ payload hooks
    def on_split(self, upper: Node, lower: Node) -> None:
        slots = self.kv_slots.pop(lower, None)
        if slots is not None:
            cut = upper.tokens - upper.parent.tokens
            self.kv_slots[upper], self.kv_slots[lower] = slots[:cut], slots[cut:]

    def on_merge(self, node: Node, child: Node) -> None:
        assert node not in self.state_slot, "merging a node that still holds a state"
        self.kv_slots[child] = torch.cat([self.kv_slots.pop(node), self.kv_slots[child]])

    def on_drop_state(self, node: Node) -> None:
        self.state_pool.free(self.state_slot.pop(node))

    def on_remove(self, node: Node) -> None:
        slots = self.kv_slots.pop(node, None)
        if slots is not None:
            self.kv_pool.free(slots)
        slot = self.state_slot.pop(node, None)
        if slot is not None:
            self.state_pool.free(slot)

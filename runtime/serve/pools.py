"""Device memory pools for cached KV and recurrent-state checkpoints.

Two pools, as SGLang sizes them (background/engines.md §1.2):

- `KVPool`: token-granular KV (page size 1). One buffer `[tokens, 1, *row]` per KV tensor
  of the model (e.g. layer 4's keys `[tokens, 1, Hkv, D]`); a cached token owns one slot
  index in all of them, so a token costs `kv_bytes_per_token` exactly.
- `StatePool`: one buffer `[slots, *row]` per fixed-size state tensor (recurrent and conv
  of every recurrent layer); a checkpoint owns one slot index in all of them and costs
  `state_bytes` exactly.

Both are sized from a byte budget and hand out slot indices from a free list; moving data
in and out goes through `marconi.kernels` (`scatter_kv`/`gather_kv`, `copy_states`: one
Triton launch for every layer on a GPU, the PyTorch references on a CPU). A restore is a
copy into the request's own working cache, never an alias of a pool slot (copy-on-write,
as SGLang's `mamba_pool.copy_from`, engines.md §1.3), so a slot freed and reused later
cannot change a running request.

With `poison=True` a freed slot is filled with NaN (integer buffers: their max value), so
that a read of a slot that no longer belongs to the reader shows in its outputs (tests).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

# the package is light: each kernel module (and Triton) loads on first attribute access
import marconi.kernels as kernels
from marconi.runtime.serve.model_adapters.base import TensorSpec


def _poison_value(dtype: torch.dtype) -> float:
    return float("nan") if dtype.is_floating_point else torch.iinfo(dtype).max


class _FreeList:
    """Slot indices; hands out the lowest free ones first (deterministic placement)."""

    def __init__(self, n: int):
        self.n = n
        self._free = list(range(n - 1, -1, -1))     # a stack: pop() gives the lowest
        self._used = bytearray(n)

    def take(self, k: int) -> list[int]:
        if k > len(self._free):
            raise MemoryError(f"pool exhausted: {k} slots asked, {len(self._free)} free of "
                              f"{self.n}; the cache's byte accounting should have prevented this")
        out = [self._free.pop() for _ in range(k)]
        for s in out:
            self._used[s] = 1
        return out

    def give(self, slots: Sequence[int]) -> None:
        for s in slots:
            if not self._used[s]:
                raise RuntimeError(f"slot {s} freed twice")
            self._used[s] = 0
            self._free.append(s)

    @property
    def used(self) -> int:
        return self.n - len(self._free)

    def is_used(self, s: int) -> bool:
        return bool(self._used[s])


class KVPool:
    """Per-token KV slots for every KV tensor of a model (see the module docstring)."""

    def __init__(self, specs: Sequence[TensorSpec], tokens: int, device, poison: bool = False):
        self.specs = tuple(specs)
        self.tokens = int(tokens)
        self.poison = poison
        self.buffers = [torch.empty(self.tokens, 1, *s.row, dtype=s.dtype, device=device)
                        for s in self.specs]
        self.slots = _FreeList(self.tokens)
        self.bytes_per_token = sum(s.nbytes for s in self.specs)

    @property
    def used_bytes(self) -> int:
        return self.slots.used * self.bytes_per_token

    @property
    def pool_bytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self.buffers)

    def alloc(self, n: int) -> Tensor:
        """n free token slots, as an int64 tensor [n] on the CPU."""
        return torch.tensor(self.slots.take(n), dtype=torch.int64)

    def free(self, slots: Tensor) -> None:
        self.slots.give(slots.tolist())
        if self.poison and slots.numel():
            for b in self.buffers:
                b[slots.to(b.device)] = _poison_value(b.dtype)

    def write(self, slots: Tensor, rows: Sequence[Tensor]) -> None:
        """buffers[i][slots[t]] = rows[i][t]; rows[i] [n, *row], one per KV tensor."""
        n = slots.numel()
        if n == 0:
            return
        work = [r.contiguous() for r in rows]
        kernels.scatter_kv(list(zip(self.buffers, work)), *self._table(slots), n)

    def read(self, slots: Tensor) -> list[Tensor]:
        """Fresh tensors [n, *row] holding the KV of `slots`, one per KV tensor."""
        n = slots.numel()
        work = [torch.empty(n, *s.row, dtype=s.dtype, device=b.device)
                for s, b in zip(self.specs, self.buffers)]
        if n:
            kernels.gather_kv(list(zip(self.buffers, work)), *self._table(slots), n)
        return work

    def _table(self, slots: Tensor) -> tuple[Tensor, Tensor]:
        """(block_table [1, n], cu_seqlens [2]) addressing `slots` as one sequence of pages
        of one token each."""
        device = self.buffers[0].device
        n = slots.numel()
        return (slots.to(device=device, dtype=torch.int32).view(1, n),
                torch.tensor([0, n], dtype=torch.int32, device=device))


class StatePool:
    """Checkpoint slots holding every fixed-size state tensor of a model."""

    def __init__(self, specs: Sequence[TensorSpec], slots: int, device, poison: bool = False):
        self.specs = tuple(specs)
        self.n_slots = int(slots)
        self.poison = poison
        self.buffers = [torch.empty(self.n_slots, *s.row, dtype=s.dtype, device=device)
                        for s in self.specs]
        self.slots = _FreeList(self.n_slots)
        self.slot_bytes = sum(s.nbytes for s in self.specs)

    @property
    def used_bytes(self) -> int:
        return self.slots.used * self.slot_bytes

    @property
    def pool_bytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self.buffers)

    def alloc(self) -> int:
        return self.slots.take(1)[0]

    def free(self, slot: int) -> None:
        self.slots.give([slot])
        if self.poison:
            for b in self.buffers:
                b[slot] = _poison_value(b.dtype)

    def save(self, slot: int, states: Sequence[Tensor]) -> None:
        """Copy a working cache's states ([1, *row] each) into `slot`."""
        self._copy([(s.contiguous(), b) for s, b in zip(states, self.buffers)], 0, slot)

    def load(self, slot: int) -> list[Tensor]:
        """Fresh tensors [1, *row] holding `slot`'s states (the request's own copy)."""
        work = [torch.empty(1, *s.row, dtype=s.dtype, device=b.device)
                for s, b in zip(self.specs, self.buffers)]
        self._copy(list(zip(self.buffers, work)), slot, 0)
        return work

    def _copy(self, pairs, src: int, dst: int) -> None:
        device = pairs[0][0].device
        kernels.copy_states(pairs, torch.tensor([src], dtype=torch.int64, device=device),
                            torch.tensor([dst], dtype=torch.int64, device=device))

"""Checkpoint tables: where a scan call writes its states, and how a slot pool stores them.

A scan call over T new tokens takes, per sequence b, up to K entries

    pos[b, k]   tokens of *this call* consumed when the state is taken, 0 <= pos <= T
                (0: the initial state; T: the final state; a prefix of p0 cached tokens
                plus this call's first `pos` tokens is the prefix the checkpoint serves)
    slot[b, k]  the pool slot that receives it; a negative slot is padding

Entries may come in any order and two entries may share a position (a fork). Entries whose
position lies outside [0, T] are ignored by kernels and references alike; `checkpoint_table`
(the host-side builder) rejects them, so that is where mistakes are reported. The kernels
walk each row in position order: `sorted_table` sorts on the device without a host sync.

A pool is `[slots, *state_shape]` in any float dtype, or int8 with a float32 scale pool
`[slots, *state_shape[:-1]]` (see `quant.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from marconi.kernels._triton import tl, triton
from marconi.kernels.quant import quantize_ref, quantize_tile

NO_POSITION = 2**31 - 1   # sort key of padding and out-of-range entries: after every real one
NO_POSITION_TL = tl.constexpr(NO_POSITION)   # the same, readable inside kernels


@dataclass(frozen=True)
class CheckpointTable:
    """pos, slot: [B, K] int32 on the scan's device (see the module docstring)."""

    pos: torch.Tensor
    slot: torch.Tensor

    @property
    def batch(self) -> int:
        return self.pos.shape[0]


def checkpoint_table(positions: Sequence[Sequence[int]], slots: Sequence[Sequence[int]],
                     seq_len: int, device: torch.device | str = "cpu") -> CheckpointTable:
    """Build a table from per-sequence lists, checking every entry; pads rows with slot -1."""
    if len(positions) != len(slots):
        raise ValueError(f"checkpoint_table: {len(positions)} position rows vs {len(slots)} "
                         "slot rows; expected one of each per sequence")
    width = max([len(p) for p in positions] + [1])
    pos = torch.zeros(len(positions), width, dtype=torch.int32)
    slot = torch.full((len(positions), width), -1, dtype=torch.int32)
    for b, (ps, ss) in enumerate(zip(positions, slots)):
        if len(ps) != len(ss):
            raise ValueError(f"checkpoint_table: row {b}: {len(ps)} positions vs {len(ss)} slots; "
                             "expected equal lengths")
        for k, (p, s) in enumerate(zip(ps, ss)):
            if not 0 <= p <= seq_len:
                raise ValueError(f"checkpoint_table: row {b}: position {p}: out of range; "
                                 f"expected 0 <= position <= {seq_len}")
            if s < 0:
                raise ValueError(f"checkpoint_table: row {b}: slot {s}: negative; "
                                 "expected a pool slot")
            pos[b, k], slot[b, k] = p, s
    return CheckpointTable(pos.to(device), slot.to(device))


def empty_table(batch: int, device: torch.device | str) -> CheckpointTable:
    """A table with no checkpoints (one padding entry per row)."""
    return CheckpointTable(torch.zeros(batch, 1, dtype=torch.int32, device=device),
                           torch.full((batch, 1), -1, dtype=torch.int32, device=device))


def sorted_table(pos: torch.Tensor, slot: torch.Tensor,
                 seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows sorted by position, padding and out-of-range entries last with key NO_POSITION."""
    valid = (slot >= 0) & (pos >= 0) & (pos <= seq_len)
    padding = torch.full_like(pos, NO_POSITION, dtype=torch.int32)
    key = torch.where(valid, pos.to(torch.int32), padding)
    key, order = key.sort(dim=-1, stable=True)
    return key.contiguous(), slot.to(torch.int32).gather(-1, order).contiguous()


def valid_entries(pos: torch.Tensor, slot: torch.Tensor, seq_len: int):
    """(batch index, position, slot) of every entry a scan writes, as 1-D int64 tensors."""
    valid = (slot >= 0) & (pos >= 0) & (pos <= seq_len)
    b, k = valid.nonzero(as_tuple=True)
    return b, pos[b, k].long(), slot[b, k].long()


def check_pool(pool: torch.Tensor, scale: torch.Tensor | None, state_shape: tuple[int, ...],
               where: str) -> None:
    """A pool `[S, *state_shape]` (int8 needs `scale [S, *state_shape[:-1]]` float32)."""
    if tuple(pool.shape[1:]) != tuple(state_shape) or not pool[0].is_contiguous():
        raise ValueError(f"{where}: ckpt_pool {tuple(pool.shape)}: expected [slots, "
                         f"{', '.join(map(str, state_shape))}] with each slot contiguous")
    if pool.dtype == torch.int8:
        scale_shape = (pool.shape[0],) + tuple(state_shape[:-1])
        if scale is None or scale.dtype != torch.float32 or tuple(scale.shape) != scale_shape \
                or not scale[0].is_contiguous():
            raise ValueError(f"{where}: ckpt_scale: expected float32 [{pool.shape[0]}, "
                             f"{', '.join(map(str, state_shape[:-1]))}] beside an int8 pool")
    elif scale is not None:
        raise ValueError(f"{where}: ckpt_scale: given for a {pool.dtype} pool; "
                         "expected only with int8")


@triton.jit
def store_state_tile(pool, scale_pool, slot, offs, chan_offs, mask, chan_mask, state,
                     pool_slot_stride, scale_slot_stride, QUANT: tl.constexpr):
    """Write one state tile `[BLOCK_C, BLOCK_N]` (padding zero) into pool slot `slot`.

    offs: element offsets inside a slot; chan_offs: the tile's channel offsets inside a slot
    of the scale pool (used when QUANT, i.e. the pool is int8).
    """
    slot = slot.to(tl.int64)
    if QUANT:
        q, scale = quantize_tile(state)
        tl.store(pool + slot * pool_slot_stride + offs, q, mask=mask)
        tl.store(scale_pool + slot * scale_slot_stride + chan_offs, scale, mask=chan_mask)
    else:
        tl.store(pool + slot * pool_slot_stride + offs, state.to(pool.dtype.element_ty), mask=mask)


def store_states_ref(pool: torch.Tensor, scale: torch.Tensor | None, slots: torch.Tensor,
                     states: torch.Tensor) -> None:
    """pool[slots[i]] = states[i] (quantized when the pool is int8)."""
    if slots.numel() == 0:
        return
    if pool.dtype == torch.int8:
        q, s = quantize_ref(states)
        pool[slots], scale[slots] = q, s
    else:
        pool[slots] = states.to(pool.dtype)

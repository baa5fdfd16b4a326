"""Pool copy: save, restore and fork recurrent and conv states across all layers in one launch.

A *pair* is a (source, destination) tensor with a leading slot dimension, e.g. a layer's
working SSM state `[batch, H, P, N]` and its checkpoint pool `[slots, H, P, N]`. One call
copies `dst[dst_idx[i]] = src[src_idx[i]]` for every pair and every i:

- save:    pairs (working, pool), src_idx = working rows, dst_idx = pool slots
- restore: pairs (pool, working), src_idx = pool slots,   dst_idx = working rows
- fork:    pairs (pool, pool),    src_idx = pool slots,   dst_idx = new pool slots

The kernel never looks at dtypes: each pair is an address, a slot stride and a row length
in a small int64 table (one row per pair), and rows are copied as 4-byte words (or bytes
when some row is not word-aligned) in tiles, 16 bytes per access where alignment allows.
This is the pattern of SGLang's `copy_all_layer_kv_cache_tiled` (planning-and-kernels.md
§3.6): one launch for every layer, however many there are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from marconi.kernels._triton import tl, triton, use_triton


@triton.jit
def _pool_copy_kernel(base, table_ptr, src_idx_ptr, dst_idx_ptr, n_copies,
                      VEC: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)                 # pair * n_copies + copy
    pair = pid // n_copies
    copy = pid % n_copies
    entry = table_ptr + pair * 5
    # Offsets, strides and lengths are in words from `base` and multiples of VEC words
    # (checked on the host); the hints let the compiler emit VEC-word loads and stores.
    src_off = tl.multiple_of(tl.load(entry + 0), VEC)
    dst_off = tl.multiple_of(tl.load(entry + 1), VEC)
    src_stride = tl.multiple_of(tl.load(entry + 2), VEC)
    dst_stride = tl.multiple_of(tl.load(entry + 3), VEC)
    row_len = tl.multiple_of(tl.load(entry + 4), VEC)
    src_slot = tl.load(src_idx_ptr + copy).to(tl.int64)
    dst_slot = tl.load(dst_idx_ptr + copy).to(tl.int64)
    offs = tl.program_id(1).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    offs = tl.max_contiguous(tl.multiple_of(offs, BLOCK), BLOCK)
    # Negative slots are padding; tiles past this pair's row length do nothing.
    ok = ((offs < row_len) & ((tl.zeros_like(offs) + src_slot) >= 0)
          & ((tl.zeros_like(offs) + dst_slot) >= 0))
    words = tl.load(base + src_off + src_slot * src_stride + offs, mask=ok)
    tl.store(base + dst_off + dst_slot * dst_stride + offs, words, mask=ok)


@dataclass(frozen=True)
class AddressTable:
    """Tensors addressed as word offsets from one base allocation, for copy kernels.

    Triton loses alignment through an integer-to-pointer cast, so tables hold offsets from a
    real pointer argument (`base`, a one-word tensor of the same device) instead of raw
    addresses; `vec` words divide every offset, stride and length, so copies vectorise.
    """

    base: torch.Tensor       # [1] int32 (word = 4 bytes) or uint8 (word = 1 byte)
    word_bytes: int
    vec: int                 # in words

    def offset(self, t: torch.Tensor) -> int:
        """Words from `base` to t's first element."""
        return (t.data_ptr() - self.base.data_ptr()) // self.word_bytes


def address_table(tensors: Sequence[torch.Tensor], byte_counts: Sequence[int]) -> AddressTable:
    """Word size and vector width for copying rows of `tensors` whose strides and lengths,
    in bytes, are `byte_counts`: the largest power of two up to 16 bytes dividing all."""
    device = tensors[0].device
    probe = torch.empty(1, dtype=torch.int32, device=device)
    values = [t.data_ptr() - probe.data_ptr() for t in tensors] + list(byte_counts)
    vec_bytes = 16
    while vec_bytes > 1 and any(v % vec_bytes for v in values):
        vec_bytes //= 2
    if vec_bytes >= 4:
        return AddressTable(probe, 4, vec_bytes // 4)
    return AddressTable(probe.view(torch.uint8)[:1], 1, vec_bytes)


@dataclass(frozen=True)
class PoolCopyPlan:
    """The tensors one pool copy touches, as a device table; build once, reuse per copy.

    `pairs` keeps the tensors alive (the table holds offsets into them).
    """

    pairs: tuple[tuple[torch.Tensor, torch.Tensor], ...]
    table: torch.Tensor      # [n_pairs, 5] int64 words: src, dst, slot strides, row length
    addresses: AddressTable
    max_row_words: int

    @property
    def word_bytes(self) -> int:
        return self.addresses.word_bytes


def _row_bytes(t: torch.Tensor) -> int:
    return t[0].numel() * t.element_size()


def _check_pair(i: int, src: torch.Tensor, dst: torch.Tensor) -> None:
    where = f"pool_copy: pairs[{i}]"
    if src.dtype != dst.dtype or src.shape[1:] != dst.shape[1:]:
        raise ValueError(f"{where}: src {tuple(src.shape)} {src.dtype} vs dst {tuple(dst.shape)} "
                         f"{dst.dtype}; expected the same row shape and dtype")
    if src.device != dst.device:
        raise ValueError(f"{where}: src on {src.device}, dst on {dst.device}; expected one device")
    for name, t in (("src", src), ("dst", dst)):
        if t.dim() < 1 or t.shape[0] == 0 or not t[0].is_contiguous():
            raise ValueError(f"{where}: {name} {tuple(t.shape)} strides {t.stride()}; "
                             "expected [slots, ...] with each slot's row contiguous")


def pool_copy_plan(pairs: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> PoolCopyPlan:
    """Build the offset table for `pool_copy` from (src, dst) tensor pairs `[slots, ...]`."""
    pairs = tuple((s, d) for s, d in pairs)
    if not pairs:
        raise ValueError("pool_copy: pairs: empty; expected at least one (src, dst) pair")
    for i, (s, d) in enumerate(pairs):
        _check_pair(i, s, d)
        if s.device != pairs[0][0].device:
            raise ValueError(f"pool_copy: pairs[{i}]: on {s.device}; expected {pairs[0][0].device}")
    tensors = [t for pair in pairs for t in pair]
    byte_counts = ([t.stride(0) * t.element_size() for t in tensors]
                   + [_row_bytes(s) for s, _ in pairs])
    addr = address_table(tensors, byte_counts)
    w = addr.word_bytes
    rows = [[addr.offset(s), addr.offset(d), s.stride(0) * s.element_size() // w,
             d.stride(0) * d.element_size() // w, _row_bytes(s) // w] for s, d in pairs]
    table = torch.tensor(rows, dtype=torch.int64).to(pairs[0][0].device)
    return PoolCopyPlan(pairs, table, addr, max(r[4] for r in rows))


def _pool_copy_launch(plan: PoolCopyPlan, src_idx: torch.Tensor, dst_idx: torch.Tensor,
                      block: int) -> None:
    assert src_idx.shape == dst_idx.shape and src_idx.dim() == 1, (src_idx.shape, dst_idx.shape)
    assert src_idx.is_contiguous() and dst_idx.is_contiguous()
    n_copies = src_idx.numel()
    if n_copies == 0:
        return
    grid = (len(plan.pairs) * n_copies, triton.cdiv(plan.max_row_words, block))
    assert grid[1] < 65536, f"rows of {plan.max_row_words} words need a larger block than {block}"
    _pool_copy_kernel[grid](plan.addresses.base, plan.table, src_idx, dst_idx, n_copies,
                            VEC=plan.addresses.vec, BLOCK=block)


def pool_copy(plan: PoolCopyPlan | Sequence[tuple[torch.Tensor, torch.Tensor]],
              src_idx: torch.Tensor, dst_idx: torch.Tensor, block: int = 2048) -> None:
    """`dst[dst_idx[i]] = src[src_idx[i]]` for every (src, dst) pair, in one Triton launch.

    plan:    a `PoolCopyPlan` (or the pairs to build one from); every tensor `[slots, ...]`
    src_idx: [M] int32/int64 source slots; dst_idx: [M] destination slots.
             A negative index on either side skips that copy (padding).
    Destination slots must be distinct and must not be source slots of the same call
    (copies run in parallel); the reference has the same contract.
    """
    if not isinstance(plan, PoolCopyPlan):
        plan = pool_copy_plan(plan)
    _pool_copy_launch(plan, src_idx.contiguous(), dst_idx.contiguous(), block)


def pool_copy_ref(plan: PoolCopyPlan | Sequence[tuple[torch.Tensor, torch.Tensor]],
                  src_idx: torch.Tensor, dst_idx: torch.Tensor) -> None:
    """Reference for `pool_copy`: one indexed copy per pair."""
    pairs = plan.pairs if isinstance(plan, PoolCopyPlan) else tuple(plan)
    keep = (src_idx >= 0) & (dst_idx >= 0)
    src_idx, dst_idx = src_idx[keep].long(), dst_idx[keep].long()
    for i, (src, dst) in enumerate(pairs):
        _check_pair(i, src, dst)
        dst[dst_idx.to(dst.device)] = src[src_idx.to(src.device)]


def copy_states(plan: PoolCopyPlan | Sequence[tuple[torch.Tensor, torch.Tensor]],
                src_idx: torch.Tensor, dst_idx: torch.Tensor) -> None:
    """`pool_copy` on CUDA (or under the Triton interpreter), `pool_copy_ref` otherwise."""
    pairs = plan.pairs if isinstance(plan, PoolCopyPlan) else tuple(plan)
    if use_triton(pairs[0][0], src_idx, dst_idx):
        pool_copy(plan, src_idx, dst_idx)
    else:
        pool_copy_ref(plan, src_idx, dst_idx)

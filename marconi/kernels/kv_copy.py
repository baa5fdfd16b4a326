"""KV gather/scatter between a paged KV pool and requests' working (packed) KV, all layers at once.

A *pair* is (cache, work) for one layer's K or V:

    cache [num_blocks, block_size, *row]   the paged pool (vLLM's flash layout per layer)
    work  [total_tokens, *row]             sequences packed one after another (cu_seqlens)

Token i of sequence b sits at position `start[b] + i` of its request, which lives in pool
block `block_table[b, pos // block_size]` at offset `pos % block_size`, and at row
`cu_seqlens[b] + i` of `work`:

- gather (restore a cached prefix): work[cu[b] + i] = cache[block, offset]  (start = 0)
- scatter (save new tokens):        cache[block, offset] = work[cu[b] + i]  (start = cached)

A negative block id skips its tokens. Like `pool_copy`, the kernel moves 4-byte words (or
bytes), 16 bytes per access where alignment allows, through a per-pair offset table, so one
launch serves every layer, K and V, and any dtype. vLLM's `gather_and_maybe_dequant_cache`
and `reshape_and_cache_flash` do the same moves one layer per launch
(planning-and-kernels.md §3.6).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from marconi.kernels._triton import tl, triton, use_triton
from marconi.kernels.pool_copy import AddressTable, address_table


@triton.jit
def _kv_copy_kernel(base, table_ptr, block_table, cu_seqlens, start, n_tiles_t, max_blocks,
                    BLOCK_SIZE: tl.constexpr, VEC: tl.constexpr, GATHER: tl.constexpr,
                    BLOCK_T: tl.constexpr, BLOCK_W: tl.constexpr):
    b = tl.program_id(0) // n_tiles_t
    tile = tl.program_id(0) % n_tiles_t
    entry = table_ptr + tl.program_id(1) * 6
    # words from `base`, all multiples of VEC (host-checked): VEC-word accesses along a row
    cache_off = tl.multiple_of(tl.load(entry + 0), VEC)
    work_off = tl.multiple_of(tl.load(entry + 1), VEC)
    block_stride = tl.multiple_of(tl.load(entry + 2), VEC)
    token_stride = tl.multiple_of(tl.load(entry + 3), VEC)
    work_stride = tl.multiple_of(tl.load(entry + 4), VEC)
    row_len = tl.multiple_of(tl.load(entry + 5), VEC)

    seq_start = tl.load(cu_seqlens + b)
    seq_len = tl.load(cu_seqlens + b + 1) - seq_start
    i = tile * BLOCK_T + tl.arange(0, BLOCK_T)
    pos = tl.load(start + b) + i
    ok_t = i < seq_len
    blk = tl.load(block_table + b * max_blocks + pos // BLOCK_SIZE, mask=ok_t, other=-1)
    blk = blk.to(tl.int64)
    ok_t = ok_t & (blk >= 0)
    offs_w = tl.program_id(2).to(tl.int64) * BLOCK_W + tl.arange(0, BLOCK_W)
    offs_w = tl.max_contiguous(tl.multiple_of(offs_w, BLOCK_W), BLOCK_W)
    ok = ok_t[:, None] & (offs_w < row_len)[None, :]
    cache_rows = cache_off + blk * block_stride + (pos % BLOCK_SIZE) * token_stride
    work_rows = work_off + (seq_start + i).to(tl.int64) * work_stride
    cache_offs = cache_rows[:, None] + offs_w[None, :]
    work_offs = work_rows[:, None] + offs_w[None, :]
    if GATHER:
        tl.store(base + work_offs, tl.load(base + cache_offs, mask=ok), mask=ok)
    else:
        tl.store(base + cache_offs, tl.load(base + work_offs, mask=ok), mask=ok)


@dataclass(frozen=True)
class KVCopyPlan:
    """The (cache, work) pairs one KV copy touches, as a device offset table; build once."""

    pairs: tuple[tuple[Tensor, Tensor], ...]
    table: Tensor    # [n_pairs, 6] int64 words: cache, work, block/token/work strides, row
    block_size: int
    addresses: AddressTable
    max_row_words: int

    @property
    def word_bytes(self) -> int:
        return self.addresses.word_bytes


def _check_pair(i: int, cache: Tensor, work: Tensor) -> None:
    where = f"kv_copy: pairs[{i}]"
    if cache.dim() < 3 or cache.shape[2:] != work.shape[1:] or cache.dtype != work.dtype \
            or cache.device != work.device:
        raise ValueError(f"{where}: cache {tuple(cache.shape)} {cache.dtype} vs work "
                         f"{tuple(work.shape)} {work.dtype}; expected cache [blocks, block_size, "
                         "*row] and work [tokens, *row] of one dtype and device")
    if not cache[0, 0].is_contiguous() or not work[0].is_contiguous() \
            or cache.stride(1) != cache[0, 0].numel():
        raise ValueError(f"{where}: expected each token row contiguous (and the tokens of a "
                         "block adjacent)")


def kv_copy_plan(pairs: Sequence[tuple[Tensor, Tensor]]) -> KVCopyPlan:
    """Build the offset table from (cache [NB, BS, *row], work [TOT, *row]) pairs."""
    pairs = tuple((c, w) for c, w in pairs)
    if not pairs:
        raise ValueError("kv_copy: pairs: empty; expected at least one (cache, work) pair")
    for i, (c, w) in enumerate(pairs):
        _check_pair(i, c, w)
    block_size = pairs[0][0].shape[1]
    if any(c.shape[1] != block_size for c, _ in pairs):
        raise ValueError(f"kv_copy: pairs: block sizes {[c.shape[1] for c, _ in pairs]}; "
                         "expected one")
    row = [w[0].numel() * w.element_size() for _, w in pairs]
    strides = [(c.stride(0) * c.element_size(), c.stride(1) * c.element_size(),
                w.stride(0) * w.element_size()) for c, w in pairs]
    addr = address_table([t for pair in pairs for t in pair],
                         row + [s for st in strides for s in st])
    n = addr.word_bytes
    rows = [[addr.offset(c), addr.offset(w), st[0] // n, st[1] // n, st[2] // n, r // n]
            for (c, w), st, r in zip(pairs, strides, row)]
    table = torch.tensor(rows, dtype=torch.int64).to(pairs[0][0].device)
    return KVCopyPlan(pairs, table, block_size, addr, max(r[5] for r in rows))


def _kv_copy(plan: KVCopyPlan, block_table: Tensor, cu_seqlens: Tensor, start: Tensor | None,
             max_len: int, gather: bool, block_t: int, block_w: int) -> None:
    b = cu_seqlens.numel() - 1
    assert block_table.dim() == 2 and block_table.shape[0] == b, (block_table.shape, b)
    if start is None:
        start = torch.zeros(b, dtype=torch.int32, device=cu_seqlens.device)
    assert start.shape == (b,)
    if b == 0 or max_len == 0:
        return
    n_tiles_t = triton.cdiv(max_len, block_t)
    grid = (b * n_tiles_t, len(plan.pairs), triton.cdiv(plan.max_row_words, block_w))
    assert grid[2] < 65536
    _kv_copy_kernel[grid](plan.addresses.base, plan.table, block_table.contiguous(),
                          cu_seqlens.contiguous(), start.contiguous(), n_tiles_t,
                          block_table.shape[1],
                          BLOCK_SIZE=plan.block_size, VEC=plan.addresses.vec, GATHER=gather,
                          BLOCK_T=block_t, BLOCK_W=block_w)


def kv_gather(plan: KVCopyPlan | Sequence[tuple[Tensor, Tensor]], block_table: Tensor,
              cu_seqlens: Tensor, max_len: int, start: Tensor | None = None,
              block_t: int = 16, block_w: int = 256) -> None:
    """Copy paged KV into the packed working KV of every pair, one launch (Triton).

    block_table [B, max_blocks] int32 (negative = no block); cu_seqlens [B+1] int32 (rows of
    `work` per sequence); max_len >= max sequence length (sizes the grid without a host sync);
    start [B] int32 first request position per sequence (default 0).
    """
    plan = plan if isinstance(plan, KVCopyPlan) else kv_copy_plan(plan)
    _kv_copy(plan, block_table, cu_seqlens, start, max_len, True, block_t, block_w)


def kv_scatter(plan: KVCopyPlan | Sequence[tuple[Tensor, Tensor]], block_table: Tensor,
               cu_seqlens: Tensor, max_len: int, start: Tensor | None = None,
               block_t: int = 16, block_w: int = 256) -> None:
    """Copy packed working KV into the paged pool of every pair (Triton); as `kv_gather`."""
    plan = plan if isinstance(plan, KVCopyPlan) else kv_copy_plan(plan)
    _kv_copy(plan, block_table, cu_seqlens, start, max_len, False, block_t, block_w)


def token_locations(block_table: Tensor, cu_seqlens: Tensor, block_size: int,
                    start: Tensor | None = None):
    """(work row, block, offset) of every token that has a block, as 1-D int64 tensors."""
    b = cu_seqlens.numel() - 1
    cu = cu_seqlens.long()
    lens = cu[1:] - cu[:-1]
    seq = torch.repeat_interleave(torch.arange(b, device=cu.device), lens)
    rows = torch.arange(int(cu[-1]), device=cu.device)
    pos = rows - cu[seq] + (start.long()[seq] if start is not None else 0)
    blk = block_table.long()[seq, pos // block_size]
    keep = blk >= 0
    return rows[keep], blk[keep], (pos % block_size)[keep]


def kv_gather_ref(plan, block_table, cu_seqlens, max_len: int, start=None) -> None:
    """Reference for `kv_gather`."""
    pairs = plan.pairs if isinstance(plan, KVCopyPlan) else tuple(plan)
    rows, blk, off = token_locations(block_table, cu_seqlens, pairs[0][0].shape[1], start)
    for cache, work in pairs:
        work[rows] = cache[blk, off]


def kv_scatter_ref(plan, block_table, cu_seqlens, max_len: int, start=None) -> None:
    """Reference for `kv_scatter`."""
    pairs = plan.pairs if isinstance(plan, KVCopyPlan) else tuple(plan)
    rows, blk, off = token_locations(block_table, cu_seqlens, pairs[0][0].shape[1], start)
    for cache, work in pairs:
        cache[blk, off] = work[rows]


def gather_kv(plan, block_table, cu_seqlens, max_len: int, start=None) -> None:
    """`kv_gather` on CUDA (or under the Triton interpreter), `kv_gather_ref` otherwise."""
    pairs = plan.pairs if isinstance(plan, KVCopyPlan) else tuple(plan)
    fn = kv_gather if use_triton(pairs[0][0], block_table, cu_seqlens) else kv_gather_ref
    fn(plan, block_table, cu_seqlens, max_len, start)


def scatter_kv(plan, block_table, cu_seqlens, max_len: int, start=None) -> None:
    """`kv_scatter` on CUDA (or under the Triton interpreter), `kv_scatter_ref` otherwise."""
    pairs = plan.pairs if isinstance(plan, KVCopyPlan) else tuple(plan)
    fn = kv_scatter if use_triton(pairs[0][0], block_table, cu_seqlens) else kv_scatter_ref
    fn(plan, block_table, cu_seqlens, max_len, start)

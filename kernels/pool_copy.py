"""Pool copy: save, restore and fork recurrent and conv states across all layers in one launch.

A *pair* is a (source, destination) tensor with a leading slot dimension, e.g. a layer's
working SSM state `[batch, H, P, N]` and its checkpoint pool `[slots, H, P, N]`. One call
copies `dst[dst_idx[i]] = src[src_idx[i]]` for every pair and every i:

- save:    pairs (working, pool), src_idx = working rows, dst_idx = pool slots
- restore: pairs (pool, working), src_idx = pool slots,   dst_idx = working rows
- fork:    pairs (pool, pool),    src_idx = pool slots,   dst_idx = new pool slots

The kernel never looks at dtypes: each pair is a base pointer, a slot stride and a row length
in a small int64 table (one row per pair), and rows are copied as 4-byte words (or bytes
when some row is not word-aligned) in tiles. This is the pattern of SGLang's
`copy_all_layer_kv_cache_tiled` (planning-and-kernels.md §3.6): one launch for every layer,
however many there are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from marconi.kernels._triton import tl, triton, use_triton

_TABLE_COLS = 5  # src_ptr, dst_ptr, src_slot_stride, dst_slot_stride, row_len (stride/len in words)


@triton.jit
def _pool_copy_kernel(table_ptr, src_idx_ptr, dst_idx_ptr, n_copies,
                      WORD_BYTES: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)                 # pair * n_copies + copy
    pair = pid // n_copies
    copy = pid % n_copies
    entry = table_ptr + pair * 5
    if WORD_BYTES == 4:
        src_base = tl.load(entry + 0).to(tl.pointer_type(tl.int32))
        dst_base = tl.load(entry + 1).to(tl.pointer_type(tl.int32))
    else:
        src_base = tl.load(entry + 0).to(tl.pointer_type(tl.uint8))
        dst_base = tl.load(entry + 1).to(tl.pointer_type(tl.uint8))
    src_stride = tl.load(entry + 2)
    dst_stride = tl.load(entry + 3)
    row_len = tl.load(entry + 4)
    src_slot = tl.load(src_idx_ptr + copy).to(tl.int64)
    dst_slot = tl.load(dst_idx_ptr + copy).to(tl.int64)
    offs = tl.program_id(1).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    # Negative slots are padding; tiles past this pair's row length do nothing.
    ok = (offs < row_len) & ((tl.zeros_like(offs) + src_slot) >= 0) & ((tl.zeros_like(offs) + dst_slot) >= 0)
    words = tl.load(src_base + src_slot * src_stride + offs, mask=ok)
    tl.store(dst_base + dst_slot * dst_stride + offs, words, mask=ok)


@dataclass(frozen=True)
class PoolCopyPlan:
    """The tensors one pool copy touches, as a device table; build once, reuse per copy.

    `pairs` keeps the tensors alive (the table holds raw pointers into them).
    """

    pairs: tuple[tuple[torch.Tensor, torch.Tensor], ...]
    table: torch.Tensor      # [n_pairs, 5] int64 on the tensors' device
    word_bytes: int          # 4 when every row, stride and base is word-aligned, else 1
    max_row_words: int


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
    """Build the pointer table for `pool_copy` from (src, dst) tensor pairs `[slots, ...]`."""
    pairs = tuple((s, d) for s, d in pairs)
    if not pairs:
        raise ValueError("pool_copy: pairs: empty; expected at least one (src, dst) pair")
    for i, (s, d) in enumerate(pairs):
        _check_pair(i, s, d)
    device = pairs[0][0].device
    aligned = all(_row_bytes(s) % 4 == 0 and (t.stride(0) * t.element_size()) % 4 == 0
                  and t.data_ptr() % 4 == 0 for s, d in pairs for t in (s, d))
    word = 4 if aligned else 1
    rows = [[s.data_ptr(), d.data_ptr(), s.stride(0) * s.element_size() // word,
             d.stride(0) * d.element_size() // word, _row_bytes(s) // word] for s, d in pairs]
    table = torch.tensor(rows, dtype=torch.int64).to(device)
    return PoolCopyPlan(pairs, table, word, max(r[4] for r in rows))


def _pool_copy_launch(plan: PoolCopyPlan, src_idx: torch.Tensor, dst_idx: torch.Tensor,
                      block: int) -> None:
    assert src_idx.shape == dst_idx.shape and src_idx.dim() == 1, (src_idx.shape, dst_idx.shape)
    assert src_idx.is_contiguous() and dst_idx.is_contiguous()
    n_copies = src_idx.numel()
    if n_copies == 0:
        return
    grid = (len(plan.pairs) * n_copies, triton.cdiv(plan.max_row_words, block))
    assert grid[1] < 65536, f"rows of {plan.max_row_words} words need a larger block than {block}"
    _pool_copy_kernel[grid](plan.table, src_idx, dst_idx, n_copies,
                            WORD_BYTES=plan.word_bytes, BLOCK=block)


def pool_copy(plan: PoolCopyPlan | Sequence[tuple[torch.Tensor, torch.Tensor]],
              src_idx: torch.Tensor, dst_idx: torch.Tensor, block: int = 1024) -> None:
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

"""int8 checkpoint storage with one scale per channel (a state row without its last dim).

A recurrent state `[..., N]` (Mamba2 `[H, P, N]`, Mamba1 `[D, N]`) is stored as int8 values
and one float32 scale per channel (`[H, P]`, `[D]`):

    scale = max_n |h[c, n]| / 127;   q[c, n] = clamp(floor(h[c, n] / scale + 1/2), -127, 127)
    h'[c, n] = q[c, n] * scale                              (scale 0 stores and restores 0)

About a quarter of the float32 bytes (plus 4 / N bytes per element for the scale), so about
four times as many checkpoints fit in the same pool (twice as many as bfloat16). The
error this introduces downstream is measured in docs/kernels.md (benchmarks/bench_kernels.py).

`quantize_tile` is the building block the scan kernels use to emit int8 checkpoints in the
same pass; `quantize_states` / `dequantize_states` save and restore whole states by slot.
"""

from __future__ import annotations

import torch

from marconi.kernels._triton import tl, triton, use_triton

QMAX = 127.0


@triton.jit
def quantize_tile(h):
    """h [BLOCK_C, BLOCK_N] float32 (padding zero) -> (q int8 [BLOCK_C, BLOCK_N], scale [BLOCK_C])
    with the formula in the module docstring."""
    scale = tl.max(tl.abs(h), axis=1) / 127.0
    safe = tl.where(scale > 0, scale, 1.0)
    q = tl.floor(h / safe[:, None] + 0.5)
    q = tl.minimum(tl.maximum(q, -127.0), 127.0)
    return q.to(tl.int8), scale


@triton.jit
def _row_tile(src_idx, dst_idx, C, N, BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr):
    """This program's (source slot, destination slot, channels, offsets in a slot, row mask,
    tile mask) for copying channel rows `[BLOCK_C, BLOCK_N]` of slot pairs `src_idx[i]` ->
    `dst_idx[i]`."""
    i = tl.program_id(0)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    offs_n = tl.arange(0, BLOCK_N)
    s = tl.load(src_idx + i).to(tl.int64)
    d = tl.load(dst_idx + i).to(tl.int64)
    # negative slots are padding (scalar predicates broadcast first: the interpreter needs it)
    row_ok = (offs_c < C) & ((tl.zeros_like(offs_c) + s) >= 0) & ((tl.zeros_like(offs_c) + d) >= 0)
    ok = row_ok[:, None] & (offs_n[None, :] < N)
    offs = offs_c[:, None] * N + offs_n[None, :]
    return s, d, offs_c, offs, row_ok, ok


@triton.jit
def _quantize_rows_kernel(src, src_idx, q_pool, scale_pool, dst_idx,
                          C, N, src_slot_stride, q_slot_stride, scale_slot_stride,
                          BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr):
    s, d, offs_c, offs, row_ok, ok = _row_tile(src_idx, dst_idx, C, N, BLOCK_C, BLOCK_N)
    h = tl.load(src + s * src_slot_stride + offs, mask=ok, other=0.0).to(tl.float32)
    q, scale = quantize_tile(h)
    tl.store(q_pool + d * q_slot_stride + offs, q, mask=ok)
    tl.store(scale_pool + d * scale_slot_stride + offs_c, scale, mask=row_ok)


@triton.jit
def _dequantize_rows_kernel(q_pool, scale_pool, src_idx, dst, dst_idx,
                            C, N, q_slot_stride, scale_slot_stride, dst_slot_stride,
                            BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr):
    s, d, offs_c, offs, row_ok, ok = _row_tile(src_idx, dst_idx, C, N, BLOCK_C, BLOCK_N)
    q = tl.load(q_pool + s * q_slot_stride + offs, mask=ok, other=0).to(tl.float32)
    scale = tl.load(scale_pool + s * scale_slot_stride + offs_c, mask=row_ok, other=0.0)
    h = (q * scale[:, None]).to(dst.dtype.element_ty)
    tl.store(dst + d * dst_slot_stride + offs, h, mask=ok)


def _rows(t: torch.Tensor, name: str) -> None:
    if t.dim() < 2 or not t[0].is_contiguous():
        raise ValueError(f"int8 states: {name} {tuple(t.shape)}: expected [slots, ..., N] "
                         "with each slot contiguous")


def _check(states: torch.Tensor, q_pool: torch.Tensor, scale_pool: torch.Tensor) -> tuple[int, int]:
    _rows(states, "states")
    _rows(q_pool, "q_pool")
    if q_pool.dtype != torch.int8 or scale_pool.dtype != torch.float32:
        raise ValueError(f"int8 states: q_pool {q_pool.dtype}, scale_pool {scale_pool.dtype}; "
                         "expected int8 and float32")
    if states.shape[1:] != q_pool.shape[1:] or scale_pool.shape[1:] != q_pool.shape[1:-1]:
        raise ValueError(f"int8 states: states {tuple(states.shape)}, q_pool "
                         f"{tuple(q_pool.shape)}, scale_pool {tuple(scale_pool.shape)}; "
                         "expected [R, ..., N], [S, ..., N], [S, ...]")
    if not scale_pool[0].is_contiguous():
        raise ValueError("int8 states: scale_pool: expected each slot contiguous")
    n = q_pool.shape[-1]
    return q_pool[0].numel() // n, n


def _launch(kernel, m: int, args, C: int, N: int, strides, block_c: int) -> None:
    if m == 0:
        return
    block_n = triton.next_power_of_2(N)
    grid = (m, triton.cdiv(C, block_c))
    kernel[grid](*args, C, N, *strides, BLOCK_C=block_c, BLOCK_N=block_n)


def quantize_states(states: torch.Tensor, src_idx: torch.Tensor, q_pool: torch.Tensor,
                    scale_pool: torch.Tensor, dst_idx: torch.Tensor, block_c: int = 32) -> None:
    """Save `states[src_idx[i]]` into int8 slot `dst_idx[i]` (Triton).

    states [R, ..., N] float; q_pool [S, ..., N] int8; scale_pool [S, ...] float32;
    src_idx, dst_idx [M] int32/int64, negative = skip.
    """
    C, N = _check(states, q_pool, scale_pool)
    assert src_idx.shape == dst_idx.shape and src_idx.dim() == 1, (src_idx.shape, dst_idx.shape)
    _launch(_quantize_rows_kernel, src_idx.numel(),
            (states, src_idx.contiguous(), q_pool, scale_pool, dst_idx.contiguous()), C, N,
            (states.stride(0), q_pool.stride(0), scale_pool.stride(0)), block_c)


def dequantize_states(q_pool: torch.Tensor, scale_pool: torch.Tensor, src_idx: torch.Tensor,
                      states: torch.Tensor, dst_idx: torch.Tensor, block_c: int = 32) -> None:
    """Restore int8 slot `src_idx[i]` into `states[dst_idx[i]]` (Triton); shapes as
    `quantize_states`."""
    C, N = _check(states, q_pool, scale_pool)
    assert src_idx.shape == dst_idx.shape and src_idx.dim() == 1, (src_idx.shape, dst_idx.shape)
    _launch(_dequantize_rows_kernel, src_idx.numel(),
            (q_pool, scale_pool, src_idx.contiguous(), states, dst_idx.contiguous()), C, N,
            (q_pool.stride(0), scale_pool.stride(0), states.stride(0)), block_c)


def quantize_ref(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """h [..., N] -> (q int8 [..., N], scale float32 [...]), the formula in the module docstring."""
    h = h.float()
    scale = h.abs().amax(dim=-1) / QMAX
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.floor(h / safe[..., None] + 0.5).clamp(-QMAX, QMAX)
    return q.to(torch.int8), scale


def dequantize_ref(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """(q int8 [..., N], scale [...]) -> float32 [..., N]."""
    return q.float() * scale[..., None]


def _valid(src_idx: torch.Tensor, dst_idx: torch.Tensor):
    keep = (src_idx >= 0) & (dst_idx >= 0)
    return src_idx[keep].long(), dst_idx[keep].long()


def quantize_states_ref(states, src_idx, q_pool, scale_pool, dst_idx) -> None:
    """Reference for `quantize_states`."""
    _check(states, q_pool, scale_pool)
    s, d = _valid(src_idx, dst_idx)
    q, scale = quantize_ref(states[s])
    q_pool[d], scale_pool[d] = q, scale


def dequantize_states_ref(q_pool, scale_pool, src_idx, states, dst_idx) -> None:
    """Reference for `dequantize_states`."""
    _check(states, q_pool, scale_pool)
    s, d = _valid(src_idx, dst_idx)
    states[d] = dequantize_ref(q_pool[s], scale_pool[s]).to(states.dtype)


def save_int8(states, src_idx, q_pool, scale_pool, dst_idx) -> None:
    """`quantize_states` on CUDA (or under the Triton interpreter), its reference otherwise."""
    fn = quantize_states if use_triton(states, src_idx, q_pool) else quantize_states_ref
    fn(states, src_idx, q_pool, scale_pool, dst_idx)


def restore_int8(q_pool, scale_pool, src_idx, states, dst_idx) -> None:
    """`dequantize_states` on CUDA (or under the Triton interpreter), its reference otherwise."""
    fn = dequantize_states if use_triton(states, src_idx, q_pool) else dequantize_states_ref
    fn(q_pool, scale_pool, src_idx, states, dst_idx)

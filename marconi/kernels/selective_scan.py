"""Mamba1 selective scan that writes states at chosen positions into a slot pool.

Recurrence (arXiv 2312.00752 Alg. 2; the semantics of `marconi::selective_scan` in
passes/ops.py), per batch b and channel d, with a diagonal A [D, N]:

    h_t = exp(dt_t A_d) ⊙ h_{t-1} + dt_t x_t B_t        h_t [N]
    y_t = h_t . C_t

The kernel is the recurrent form (planning-and-kernels.md §3.5, design C): one program owns
(b, a block of channels), keeps `h [BLOCK_D, N]` in registers and walks the tokens; after
token t it writes h to the pool for every table entry at position t + 1 (its row of the
table is sorted, so that is one scalar compare per token). The state decays differently per
(d, n), so Mamba2's single-GEMM partial-chunk trick does not apply; the per-token state is
there anyway.
"""

from __future__ import annotations

import torch
from torch import Tensor

from marconi.kernels._triton import tl, triton
from marconi.kernels.checkpoints import (NO_POSITION_TL, check_pool, sorted_table, store_state_tile,
                                         store_states_ref, valid_entries)


@triton.jit
def _selective_scan_ckpt_kernel(
        x, dt, A, Bm, Cm, h0, y, hT, ck_pos, ck_slot, pool, pool_scale,
        T, D, N, K,
        s_xb, s_xt, s_xd, s_db, s_dt, s_dd, s_bb, s_bt, s_bn, s_cb, s_ct, s_cn,
        s_yb, s_yt, s_yd, pool_slot_stride, scale_slot_stride,
        HAS_H0: tl.constexpr, HAS_CKPT: tl.constexpr, QUANT: tl.constexpr,
        BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr):
    b = tl.program_id(0)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    mask_d = offs_d < D
    mask_n = offs_n < N
    mask_dn = mask_d[:, None] & mask_n[None, :]
    state_offs = offs_d[:, None] * N + offs_n[None, :]                   # inside one [D, N] state
    a = tl.load(A + state_offs, mask=mask_dn, other=0.0).to(tl.float32)
    if HAS_H0:
        state = tl.load(h0 + b * D * N + state_offs, mask=mask_dn, other=0.0).to(tl.float32)
    else:
        state = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)

    k = 0
    p = NO_POSITION_TL
    if HAS_CKPT:
        p = tl.load(ck_pos + b * K)
        while p == 0:                                                      # the initial state
            store_state_tile(pool, pool_scale, tl.load(ck_slot + b * K + k), state_offs, offs_d,
                             mask_dn, mask_d, state, pool_slot_stride, scale_slot_stride, QUANT)
            k += 1
            p = tl.load(ck_pos + b * K + k, mask=k < K, other=NO_POSITION_TL)

    for t in range(0, T):
        xt = tl.load(x + b * s_xb + t * s_xt + offs_d * s_xd, mask=mask_d, other=0.0)
        dtt = tl.load(dt + b * s_db + t * s_dt + offs_d * s_dd, mask=mask_d, other=0.0)
        bt = tl.load(Bm + b * s_bb + t * s_bt + offs_n * s_bn, mask=mask_n, other=0.0)
        ct = tl.load(Cm + b * s_cb + t * s_ct + offs_n * s_cn, mask=mask_n, other=0.0)
        xt, dtt = xt.to(tl.float32), dtt.to(tl.float32)
        bt, ct = bt.to(tl.float32), ct.to(tl.float32)
        state = tl.exp(dtt[:, None] * a) * state + (dtt * xt)[:, None] * bt[None, :]
        yt = tl.sum(state * ct[None, :], axis=1)
        tl.store(y + b * s_yb + t * s_yt + offs_d * s_yd, yt.to(y.dtype.element_ty), mask=mask_d)
        if HAS_CKPT:
            while p == t + 1:
                store_state_tile(pool, pool_scale, tl.load(ck_slot + b * K + k), state_offs,
                                 offs_d, mask_dn, mask_d, state, pool_slot_stride,
                                 scale_slot_stride, QUANT)
                k += 1
                p = tl.load(ck_pos + b * K + k, mask=k < K, other=NO_POSITION_TL)

    tl.store(hT + b * D * N + state_offs, state.to(hT.dtype.element_ty), mask=mask_dn)


def _launch(x, dt, A, Bm, Cm, h0, y, hT, pos, slot, pool, scale, block_d):
    b, t, D = x.shape
    N = A.shape[1]
    assert dt.shape == x.shape and A.shape == (D, N) and A.is_contiguous(), (dt.shape, A.shape)
    assert Bm.shape == Cm.shape == (b, t, N), (Bm.shape, Cm.shape)
    assert hT.shape == (b, D, N) and hT.is_contiguous()
    assert y.shape == x.shape, (y.shape, x.shape)
    assert h0 is None or (h0.shape == hT.shape and h0.is_contiguous())
    assert t >= 1
    block_n = triton.next_power_of_2(N)
    block_d = min(triton.next_power_of_2(D), block_d)
    has_ckpt = pool is not None
    grid = (b, triton.cdiv(D, block_d))
    _selective_scan_ckpt_kernel[grid](
        x, dt, A, Bm, Cm, h0 if h0 is not None else hT, y, hT,
        pos if has_ckpt else hT, slot if has_ckpt else hT,
        pool if has_ckpt else hT, scale if scale is not None else hT,
        t, D, N, pos.shape[1] if has_ckpt else 1,
        *x.stride(), *dt.stride(), *Bm.stride(), *Cm.stride(), *y.stride(),
        pool.stride(0) if has_ckpt else 0, scale.stride(0) if scale is not None else 0,
        HAS_H0=h0 is not None, HAS_CKPT=has_ckpt, QUANT=scale is not None,
        BLOCK_D=block_d, BLOCK_N=block_n)


def selective_scan_ckpt(x: Tensor, dt: Tensor, A: Tensor, Bm: Tensor, Cm: Tensor,
                        h0: Tensor | None = None, ckpt_pos: Tensor | None = None,
                        ckpt_slot: Tensor | None = None, ckpt_pool: Tensor | None = None,
                        ckpt_scale: Tensor | None = None, block_d: int = 32,
                        out: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """Mamba1 selective scan with checkpoint emission (Triton).

    x, dt [B, T, D] (dt after softplus); A [D, N] (negative); Bm, Cm [B, T, N];
    h0 [B, D, N] or None (zeros).
    ckpt_pos, ckpt_slot [B, K] int32 (see checkpoints.py); ckpt_pool [S, D, N] written in
    place at the listed slots (float, or int8 with ckpt_scale [S, D] float32).
    Returns y [B, T, D] (x.dtype) and h_T [B, D, N] (h0.dtype, float32 without h0);
    `out` = (y, h_T) buffers to write instead of allocating.
    """
    b, t, D = x.shape
    N = A.shape[1]
    if t == 0:      # nothing to scan: the reference copies h0 and writes position-0 checkpoints
        return selective_scan_ckpt_ref(x, dt, A, Bm, Cm, h0, ckpt_pos, ckpt_slot, ckpt_pool,
                                       ckpt_scale)
    y, hT = out if out is not None else (
        torch.empty_like(x),
        torch.empty(b, D, N, device=x.device, dtype=h0.dtype if h0 is not None else torch.float32))
    pos = slot = None
    if ckpt_pool is not None:
        check_pool(ckpt_pool, ckpt_scale, (D, N), "selective_scan_ckpt")
        pos, slot = sorted_table(ckpt_pos, ckpt_slot, t)
    _launch(x, dt, A.contiguous(), Bm, Cm, h0.contiguous() if h0 is not None else None, y, hT,
            pos, slot, ckpt_pool, ckpt_scale, block_d)
    return y, hT


def selective_scan_ckpt_ref(x: Tensor, dt: Tensor, A: Tensor, Bm: Tensor, Cm: Tensor,
                            h0: Tensor | None = None, ckpt_pos: Tensor | None = None,
                            ckpt_slot: Tensor | None = None, ckpt_pool: Tensor | None = None,
                            ckpt_scale: Tensor | None = None,
                            chunk: int = 16) -> tuple[Tensor, Tensor]:
    """Reference for `selective_scan_ckpt`, vectorized over chunks of `chunk` tokens.

    Inside a chunk, with cs_t = sum_{t0 <= s <= t} dt_s A (per d, n):
    h_t = exp(cs_t) h_{t0-1} + sum_{t0 <= s <= t} exp(cs_t - cs_s) dt_s x_s B_s,
    so every state of the chunk comes out of one masked product; checkpoints pick them.
    """
    b, T, D = x.shape
    N = A.shape[1]
    xf, dtf, a = x.float(), dt.float(), A.float()
    state = h0.float().clone() if h0 is not None else x.new_zeros(b, D, N, dtype=torch.float32)
    entries = []
    if ckpt_pool is not None:
        check_pool(ckpt_pool, ckpt_scale, (D, N), "selective_scan_ckpt_ref")
        entries = list(zip(*(e.tolist() for e in valid_entries(ckpt_pos, ckpt_slot, T))))
    emit_slot = [s for _, p, s in entries if p == 0]
    emit_state = [state[bi].clone() for bi, p, _ in entries if p == 0]
    y = torch.empty(b, T, D, dtype=torch.float32, device=x.device)
    for t0 in range(0, T, chunk):
        t1 = min(t0 + chunk, T)
        cs = torch.cumsum(dtf[:, t0:t1, :, None] * a, dim=1)                # [B, q, D, N]
        inject = (dtf[:, t0:t1] * xf[:, t0:t1])[..., None] * Bm[:, t0:t1, None, :].float()
        seg = cs[:, :, None] - cs[:, None, :]                                # [B, t, s, D, N]
        causal = torch.ones(t1 - t0, t1 - t0, dtype=torch.bool, device=x.device).tril()
        decay = torch.exp(seg.masked_fill(~causal[None, :, :, None, None], float("-inf")))
        states = torch.exp(cs) * state[:, None] + (decay * inject[:, None]).sum(2)   # [B, q, D, N]
        y[:, t0:t1] = (states * Cm[:, t0:t1, None, :].float()).sum(-1)
        for bi, p, s in entries:
            if t0 < p <= t1:
                emit_slot.append(s), emit_state.append(states[bi, p - t0 - 1])
        state = states[:, -1]
    if emit_state:
        store_states_ref(ckpt_pool, ckpt_scale, torch.tensor(emit_slot, device=x.device),
                         torch.stack(emit_state))
    return y.to(x.dtype), state.to(h0.dtype if h0 is not None else torch.float32)

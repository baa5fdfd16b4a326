"""Mamba2 (SSD) chunked scan that writes states at chosen positions into a slot pool.

Recurrence (arXiv 2405.21060 §3; the semantics of `marconi::ssd_scan` in passes/ops.py),
per batch b and head h, with group g = h // (H / G):

    h_t = exp(dt_t A_h) h_{t-1} + (dt_t x_t) ⊗ B_t        h_t [P, N]
    y_t = h_t C_t

Chunked form over chunks of Q tokens starting at t0, with cs_t = sum_{t0 <= s <= t} dt_s A_h:

    y_t = exp(cs_t) C_t h_{t0-1} + sum_{t0 <= s <= t} exp(cs_t - cs_s) (C_t . B_s) dt_s x_s
    state after the first r tokens of the chunk (r = 1..Q), the checkpoint formula:
    h_{t0+r-1} = exp(cs_{t0+r-1}) h_{t0-1} + sum_{s < t0+r} exp(cs_{t0+r-1} - cs_s) dt_s x_s ⊗ B_s

The second line is one extra [P, Q] x [Q, N] product per checkpoint (planning-and-kernels.md
§3.5, design B), so a position in the middle of a chunk costs as much as a chunk edge and
the scan needs no second pass. One program owns (b, h, a block of P) and walks the chunks
in order, keeping the state in registers; it emits the checkpoints of its chunk from its
sorted row of the table (`checkpoints.py`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from marconi.kernels._triton import interpreting, tl, triton
from marconi.kernels.checkpoints import (NO_POSITION_TL, check_pool, sorted_table, store_state_tile,
                                         store_states_ref, valid_entries)

# 8 warps: compiled for sm_90 at Nemotron-H sizes (Q=64, P-block 32, N=128), 4 warps spill
# several times more registers (ptxas resource usage; see docs/kernels.md).
NUM_WARPS = 8


@triton.jit
def _ssd_scan_ckpt_kernel(
        x, dt, A, Bm, Cm, h0, y, hT, ck_pos, ck_slot, pool, pool_scale,
        T, H, P, N, K, heads_per_group,
        s_xb, s_xt, s_xh, s_xp, s_db, s_dt, s_dh,
        s_bb, s_bt, s_bg, s_bn, s_cb, s_ct, s_cg, s_cn,
        s_yb, s_yt, s_yh, s_yp, pool_slot_stride, scale_slot_stride,
        HAS_H0: tl.constexpr, HAS_CKPT: tl.constexpr, QUANT: tl.constexpr, DOT: tl.constexpr,
        BLOCK_Q: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr):
    pid_bh = tl.program_id(0)
    b = pid_bh // H
    h = pid_bh % H
    g = h // heads_per_group
    offs_q = tl.arange(0, BLOCK_Q)
    offs_p = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_n = tl.arange(0, BLOCK_N)
    mask_p = offs_p < P
    mask_pn = mask_p[:, None] & (offs_n[None, :] < N)
    state_offs = h * P * N + offs_p[:, None] * N + offs_n[None, :]      # within one [H, P, N] state
    chan_offs = h * P + offs_p
    a = tl.load(A + h).to(tl.float32)

    if HAS_H0:
        state = tl.load(h0 + b * H * P * N + state_offs, mask=mask_pn, other=0.0).to(tl.float32)
    else:
        state = tl.zeros((BLOCK_P, BLOCK_N), dtype=tl.float32)

    k = 0
    p = NO_POSITION_TL
    if HAS_CKPT:
        p = tl.load(ck_pos + b * K)
        while p == 0:                                                      # the initial state
            store_state_tile(pool, pool_scale, tl.load(ck_slot + b * K + k), state_offs, chan_offs,
                             mask_pn, mask_p, state, pool_slot_stride, scale_slot_stride, QUANT)
            k += 1
            p = tl.load(ck_pos + b * K + k, mask=k < K, other=NO_POSITION_TL)

    for c in range(0, tl.cdiv(T, BLOCK_Q)):
        t0 = c * BLOCK_Q
        offs_t = t0 + offs_q
        mask_t = offs_t < T
        # padding tokens get dt = 0, x = 0: they neither decay nor feed the state
        dtc = tl.load(dt + b * s_db + offs_t * s_dt + h * s_dh, mask=mask_t, other=0.0)
        dtc = dtc.to(tl.float32)
        cs = tl.cumsum(dtc * a, axis=0)                                    # [Q]
        # dot operands in DOT (x's dtype on the GPU: 16-bit inputs use tensor cores), float32 sums
        xc = tl.load(x + b * s_xb + offs_t[:, None] * s_xt + h * s_xh + offs_p[None, :] * s_xp,
                     mask=mask_t[:, None] & mask_p[None, :], other=0.0).to(DOT)       # [Q, P]
        mask_tn = mask_t[:, None] & (offs_n[None, :] < N)
        bc = tl.load(Bm + b * s_bb + offs_t[:, None] * s_bt + g * s_bg + offs_n[None, :] * s_bn,
                     mask=mask_tn, other=0.0).to(DOT)                                 # [Q, N]
        cc = tl.load(Cm + b * s_cb + offs_t[:, None] * s_ct + g * s_cg + offs_n[None, :] * s_cn,
                     mask=mask_tn, other=0.0).to(DOT)                                 # [Q, N]
        xf = xc.to(tl.float32)

        causal = offs_q[:, None] >= offs_q[None, :]
        decay = tl.exp(tl.where(causal, cs[:, None] - cs[None, :], float("-inf")))    # [Q, Q]
        scores = tl.dot(cc, tl.trans(bc)) * decay * dtc[None, :]
        yc = (tl.dot(scores.to(DOT), xc)
              + tl.dot(cc, tl.trans(state.to(DOT))) * tl.exp(cs)[:, None])              # [Q, P]
        tl.store(y + b * s_yb + offs_t[:, None] * s_yt + h * s_yh + offs_p[None, :] * s_yp,
                 yc.to(y.dtype.element_ty), mask=mask_t[:, None] & mask_p[None, :])

        if HAS_CKPT:
            while p <= tl.minimum(t0 + BLOCK_Q, T):                 # positions in (t0, t0 + Q]
                r = p - t0
                cs_r = tl.sum(tl.where(offs_q == r - 1, cs, 0.0))
                w = tl.where(offs_q < r, tl.exp(cs_r - cs) * dtc, 0.0)
                hp = tl.exp(cs_r) * state + tl.dot(tl.trans((xf * w[:, None]).to(DOT)), bc)
                store_state_tile(pool, pool_scale, tl.load(ck_slot + b * K + k), state_offs,
                                 chan_offs, mask_pn, mask_p, hp, pool_slot_stride,
                                 scale_slot_stride, QUANT)
                k += 1
                p = tl.load(ck_pos + b * K + k, mask=k < K, other=NO_POSITION_TL)

        cs_last = tl.sum(tl.where(offs_q == BLOCK_Q - 1, cs, 0.0))
        w = tl.exp(cs_last - cs) * dtc
        state = tl.exp(cs_last) * state + tl.dot(tl.trans((xf * w[:, None]).to(DOT)), bc)

    tl.store(hT + b * H * P * N + state_offs, state.to(hT.dtype.element_ty), mask=mask_pn)


def _dot_dtype(dtype: torch.dtype):
    """tl.dot operand dtype: x's 16-bit dtype on the GPU; float32 under the interpreter, whose
    16-bit dot is wrong (it multiplies the raw bit patterns; checked with triton 3.9)."""
    if interpreting() or dtype not in (torch.bfloat16, torch.float16):
        return tl.float32
    return tl.bfloat16 if dtype == torch.bfloat16 else tl.float16


def _launch(x, dt, A, Bm, Cm, h0, y, hT, pos, slot, pool, scale, block_q, block_p):
    b, t, H, P = x.shape
    G, N = Bm.shape[2], Bm.shape[3]
    assert dt.shape == (b, t, H) and A.shape == (H,), (dt.shape, A.shape)
    assert Bm.shape == Cm.shape == (b, t, G, N) and H % G == 0, (Bm.shape, Cm.shape, H)
    assert hT.shape == (b, H, P, N) and hT.is_contiguous()
    assert y.shape == x.shape, (y.shape, x.shape)
    assert h0 is None or (h0.shape == hT.shape and h0.is_contiguous())
    assert t >= 1
    block_n = max(16, triton.next_power_of_2(N))
    block_p = max(16, min(triton.next_power_of_2(P), block_p))       # tl.dot needs >= 16
    block_q = max(16, block_q)
    assert block_q & (block_q - 1) == 0 and block_p & (block_p - 1) == 0, (block_q, block_p)
    has_ckpt = pool is not None
    K = pos.shape[1] if has_ckpt else 1
    grid = (b * H, triton.cdiv(P, block_p))
    _ssd_scan_ckpt_kernel[grid](
        x, dt, A, Bm, Cm, h0 if h0 is not None else hT, y, hT,
        pos if has_ckpt else hT, slot if has_ckpt else hT,
        pool if has_ckpt else hT, scale if scale is not None else hT,
        t, H, P, N, K, H // G,
        *x.stride(), *dt.stride(), *Bm.stride(), *Cm.stride(), *y.stride(),
        pool.stride(0) if has_ckpt else 0, scale.stride(0) if scale is not None else 0,
        HAS_H0=h0 is not None, HAS_CKPT=has_ckpt, QUANT=scale is not None,
        DOT=_dot_dtype(x.dtype),
        BLOCK_Q=block_q, BLOCK_P=block_p, BLOCK_N=block_n, num_warps=NUM_WARPS)


def ssd_scan_ckpt(x: Tensor, dt: Tensor, A: Tensor, Bm: Tensor, Cm: Tensor,
                  h0: Tensor | None = None, ckpt_pos: Tensor | None = None,
                  ckpt_slot: Tensor | None = None, ckpt_pool: Tensor | None = None,
                  ckpt_scale: Tensor | None = None, block_q: int = 64, block_p: int = 32,
                  out: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """Mamba2 scan with checkpoint emission (Triton).

    x [B, T, H, P]; dt [B, T, H] (after softplus); A [H] (negative); Bm, Cm [B, T, G, N];
    h0 [B, H, P, N] or None (zeros).
    ckpt_pos, ckpt_slot [B, K] int32 (see checkpoints.py); ckpt_pool [S, H, P, N] written in
    place at the listed slots (float, or int8 with ckpt_scale [S, H, P] float32).
    Returns y [B, T, H, P] (x.dtype) and h_T [B, H, P, N] (h0.dtype, float32 without h0).
    `block_q` is the kernel's chunk length; it does not change the result. `out` = (y, h_T)
    buffers to write instead of allocating.
    """
    b, t, H, P = x.shape
    N = Bm.shape[-1]
    if t == 0:      # nothing to scan: the reference copies h0 and writes position-0 checkpoints
        return ssd_scan_ckpt_ref(x, dt, A, Bm, Cm, h0, ckpt_pos, ckpt_slot, ckpt_pool, ckpt_scale)
    y, hT = out if out is not None else (
        torch.empty_like(x),
        torch.empty(b, H, P, N, device=x.device,
                    dtype=h0.dtype if h0 is not None else torch.float32))
    h0 = h0.contiguous() if h0 is not None else None
    pos = slot = None
    if ckpt_pool is not None:
        check_pool(ckpt_pool, ckpt_scale, (H, P, N), "ssd_scan_ckpt")
        pos, slot = sorted_table(ckpt_pos, ckpt_slot, t)
    _launch(x, dt, A, Bm, Cm, h0, y, hT, pos, slot, ckpt_pool, ckpt_scale, block_q, block_p)
    return y, hT


def ssd_scan_ckpt_ref(x: Tensor, dt: Tensor, A: Tensor, Bm: Tensor, Cm: Tensor,
                      h0: Tensor | None = None, ckpt_pos: Tensor | None = None,
                      ckpt_slot: Tensor | None = None, ckpt_pool: Tensor | None = None,
                      ckpt_scale: Tensor | None = None, chunk: int = 64) -> tuple[Tensor, Tensor]:
    """Reference for `ssd_scan_ckpt`: the chunked form in module docstring, in PyTorch."""
    b, T, H, P = x.shape
    G, N = Bm.shape[2], Bm.shape[3]
    rep = H // G
    xf, dtf, a = x.float(), dt.float(), A.float()
    Bh = Bm.float().repeat_interleave(rep, dim=2)                           # [B, T, H, N]
    Ch = Cm.float().repeat_interleave(rep, dim=2)
    state = h0.float().clone() if h0 is not None else x.new_zeros(b, H, P, N, dtype=torch.float32)
    entries = []
    if ckpt_pool is not None:
        check_pool(ckpt_pool, ckpt_scale, (H, P, N), "ssd_scan_ckpt_ref")
        entries = list(zip(*(e.tolist() for e in valid_entries(ckpt_pos, ckpt_slot, T))))
    emit_slot, emit_state = [], []

    def emit(lo: int, hi: int, fn) -> None:
        for bi, p, s in entries:
            if lo < p <= hi:
                emit_slot.append(s)
                emit_state.append(fn(bi, p))

    emit(-1, 0, lambda bi, p: state[bi].clone())
    y = torch.empty(b, T, H, P, dtype=torch.float32, device=x.device)
    for t0 in range(0, T, chunk):
        t1 = min(t0 + chunk, T)
        dtc, xc, bc, cc = dtf[:, t0:t1], xf[:, t0:t1], Bh[:, t0:t1], Ch[:, t0:t1]
        cs = torch.cumsum(dtc * a, dim=1)                                   # [B, q, H]
        seg = cs[:, :, None, :] - cs[:, None, :, :]                          # [B, t, s, H]
        causal = torch.ones(t1 - t0, t1 - t0, dtype=torch.bool, device=x.device).tril()
        decay = torch.exp(seg.masked_fill(~causal[None, :, :, None], float("-inf")))
        scores = torch.einsum("bthn,bshn->btsh", cc, bc) * decay * dtc[:, None, :, :]
        y[:, t0:t1] = (torch.einsum("btsh,bshp->bthp", scores, xc)
                       + torch.einsum("bthn,bhpn->bthp", cc, state) * torch.exp(cs)[..., None])

        def partial(bi: int, p: int, cs=cs, dtc=dtc, xc=xc, bc=bc, t0=t0):
            r = p - t0
            w = torch.exp(cs[bi, r - 1] - cs[bi, :r]) * dtc[bi, :r]          # [r, H]
            return (torch.exp(cs[bi, r - 1])[:, None, None] * state[bi]
                    + torch.einsum("shp,shn->hpn", xc[bi, :r] * w[..., None], bc[bi, :r]))

        emit(t0, t1, partial)
        w = torch.exp(cs[:, -1:] - cs) * dtc                                  # [B, q, H]
        state = (torch.exp(cs[:, -1])[..., None, None] * state
                 + torch.einsum("bshp,bshn->bhpn", xc * w[..., None], bc))
    if emit_state:
        store_states_ref(ckpt_pool, ckpt_scale, torch.tensor(emit_slot, device=x.device),
                         torch.stack(emit_state))
    return y.to(x.dtype), state.to(h0.dtype if h0 is not None else torch.float32)

"""Depthwise causal conv1d that writes its conv state at chosen positions into a slot pool.

Every recurrent layer of the reference model (passes/ref_common.py `CausalConv`) runs a
depthwise causal conv of width W before its scan and carries the last W - 1 inputs as
state. With u = (the W - 1 carried inputs, then x):

    y_t[c] = bias[c] + sum_{j < W} weight[c, j] u_{t + j}[c]         (optionally silu(y))
    conv state after p tokens = u_p .. u_{p+W-2}, stored as [C, W - 1] (oldest column first)

So a conv checkpoint is a gather of W - 1 inputs, no arithmetic. The kernel tiles (b, T, C);
the program whose time tile holds a position writes the state of every table entry there
(and the final state), in the same launch as the conv itself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from marconi.kernels._triton import tl, triton
from marconi.kernels.checkpoints import check_pool, store_states_ref, valid_entries


@triton.jit
def _load_inputs(x, s0, b, pos, offs_c, mask_c, C, T, s_xb, s_xt, s_xc,
                 S0: tl.constexpr, HAS_S0: tl.constexpr):
    """u at positions `pos` [BLOCK] (negative: the carried state), channels offs_c.

    Returns [BLOCK, BLOCK_C] float32.
    """
    in_x = (pos >= 0) & (pos < T)
    v = tl.load(x + b * s_xb + pos[:, None] * s_xt + offs_c[None, :] * s_xc,
                mask=in_x[:, None] & mask_c[None, :], other=0.0).to(tl.float32)
    if HAS_S0:
        in_s = (pos < 0) & (pos >= -S0)
        v += tl.load(s0 + b * C * S0 + offs_c[None, :] * S0 + (S0 + pos)[:, None],
                     mask=in_s[:, None] & mask_c[None, :], other=0.0).to(tl.float32)
    return v


@triton.jit
def _causal_conv1d_ckpt_kernel(
        x, weight, bias, s0, y, sT, ck_pos, ck_slot, pool,
        T, C, K, s_xb, s_xt, s_xc, s_yb, s_yt, s_yc, pool_slot_stride,
        W: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_S0: tl.constexpr, SILU: tl.constexpr,
        HAS_CKPT: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr,
        BLOCK_S: tl.constexpr):
    b = tl.program_id(0)
    pid_t = tl.program_id(1)
    offs_c = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    t0 = pid_t * BLOCK_T
    offs_t = t0 + tl.arange(0, BLOCK_T)

    acc = tl.zeros((BLOCK_T, BLOCK_C), dtype=tl.float32)
    for j in tl.static_range(W):
        wj = tl.load(weight + offs_c * W + j, mask=mask_c, other=0.0).to(tl.float32)
        acc += wj[None, :] * _load_inputs(x, s0, b, offs_t - (W - 1) + j, offs_c, mask_c, C, T,
                                          s_xb, s_xt, s_xc, W - 1, HAS_S0)
    if HAS_BIAS:
        acc += tl.load(bias + offs_c, mask=mask_c, other=0.0).to(tl.float32)[None, :]
    if SILU:
        acc = acc * tl.sigmoid(acc)
    tl.store(y + b * s_yb + offs_t[:, None] * s_yt + offs_c[None, :] * s_yc,
             acc.to(y.dtype.element_ty), mask=(offs_t < T)[:, None] & mask_c[None, :])

    # States at positions in (lo, hi]: this tile's; the first tile also owns position 0.
    lo = tl.where(pid_t > 0, t0, -1)
    hi = t0 + BLOCK_T
    offs_s = tl.arange(0, BLOCK_S)
    state_offs = offs_c[:, None] * (W - 1) + offs_s[None, :]             # inside one [C, W-1] state
    mask_cs = mask_c[:, None] & (offs_s < W - 1)[None, :]
    if (T > lo) & (T <= hi):
        u = _load_inputs(x, s0, b, T - (W - 1) + offs_s, offs_c, mask_c, C, T,
                         s_xb, s_xt, s_xc, W - 1, HAS_S0)
        tl.store(sT + b * C * (W - 1) + state_offs, tl.trans(u).to(sT.dtype.element_ty),
                 mask=mask_cs)
    if HAS_CKPT:
        for k in range(0, K):
            p = tl.load(ck_pos + b * K + k)
            slot = tl.load(ck_slot + b * K + k).to(tl.int64)
            if (slot >= 0) & (p > lo) & (p <= hi) & (p <= T):
                u = _load_inputs(x, s0, b, p - (W - 1) + offs_s, offs_c, mask_c, C, T,
                                 s_xb, s_xt, s_xc, W - 1, HAS_S0)
                tl.store(pool + slot * pool_slot_stride + state_offs,
                         tl.trans(u).to(pool.dtype.element_ty), mask=mask_cs)


def _launch(x, weight, bias, s0, y, sT, pos, slot, pool, silu, block_t, block_c):
    b, t, C = x.shape
    W = weight.shape[1]
    assert weight.shape == (C, W) and weight.is_contiguous() and W >= 2, weight.shape
    assert bias is None or bias.shape == (C,)
    assert sT.shape == (b, C, W - 1) and sT.is_contiguous()
    assert y.shape == x.shape, (y.shape, x.shape)
    assert s0 is None or (s0.shape == sT.shape and s0.is_contiguous())
    assert t >= 1
    block_c = min(triton.next_power_of_2(C), block_c)
    block_t = min(triton.next_power_of_2(t), block_t)
    has_ckpt = pool is not None
    grid = (b, triton.cdiv(t, block_t), triton.cdiv(C, block_c))
    _causal_conv1d_ckpt_kernel[grid](
        x, weight, bias if bias is not None else weight, s0 if s0 is not None else sT, y, sT,
        pos if has_ckpt else sT, slot if has_ckpt else sT, pool if has_ckpt else sT,
        t, C, pos.shape[1] if has_ckpt else 0, *x.stride(), *y.stride(),
        pool.stride(0) if has_ckpt else 0,
        W=W, HAS_BIAS=bias is not None, HAS_S0=s0 is not None, SILU=silu, HAS_CKPT=has_ckpt,
        BLOCK_T=block_t, BLOCK_C=block_c, BLOCK_S=triton.next_power_of_2(W - 1))


def _weight_2d(weight: Tensor) -> Tensor:
    return weight.reshape(weight.shape[0], weight.shape[-1])      # [C, 1, W] (nn.Conv1d) or [C, W]


def causal_conv1d_ckpt(x: Tensor, weight: Tensor, bias: Tensor | None = None,
                       state: Tensor | None = None, ckpt_pos: Tensor | None = None,
                       ckpt_slot: Tensor | None = None, ckpt_pool: Tensor | None = None,
                       silu: bool = False, block_t: int = 64,
                       block_c: int = 64,
                       out: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """Depthwise causal conv with conv-state checkpoints (Triton).

    x [B, T, C]; weight [C, W] or [C, 1, W]; bias [C] or None; state [B, C, W-1] or None
    (zeros); ckpt_pos, ckpt_slot [B, K] int32 (see checkpoints.py); ckpt_pool [S, C, W-1]
    written in place at the listed slots. `silu` applies silu to y.
    Returns y [B, T, C] (x.dtype) and the state after T tokens [B, C, W-1] (state.dtype, or
    x.dtype); `out` = (y, state) buffers to write instead of allocating.
    """
    weight = _weight_2d(weight)
    b, t, C = x.shape
    W = weight.shape[1]
    if t == 0:
        return causal_conv1d_ckpt_ref(x, weight, bias, state, ckpt_pos, ckpt_slot, ckpt_pool, silu)
    if ckpt_pool is not None:
        check_pool(ckpt_pool, None, (C, W - 1), "causal_conv1d_ckpt")
    y, sT = out if out is not None else (
        torch.empty_like(x),
        torch.empty(b, C, W - 1, device=x.device,
                    dtype=state.dtype if state is not None else x.dtype))
    _launch(x, weight.contiguous(), bias, state.contiguous() if state is not None else None, y, sT,
            ckpt_pos.contiguous() if ckpt_pool is not None else None,
            ckpt_slot.contiguous() if ckpt_pool is not None else None, ckpt_pool, silu,
            block_t, block_c)
    return y, sT


def causal_conv1d_ckpt_ref(x: Tensor, weight: Tensor, bias: Tensor | None = None,
                           state: Tensor | None = None, ckpt_pos: Tensor | None = None,
                           ckpt_slot: Tensor | None = None, ckpt_pool: Tensor | None = None,
                           silu: bool = False) -> tuple[Tensor, Tensor]:
    """Reference for `causal_conv1d_ckpt`: F.conv1d over (state, x) and slices of it."""
    weight = _weight_2d(weight)
    b, T, C = x.shape
    W = weight.shape[1]
    if state is None:
        state = x.new_zeros(b, C, W - 1)
    u = torch.cat([state.float(), x.float().transpose(1, 2)], dim=-1)      # [B, C, W-1+T]
    y = F.conv1d(u, weight.float()[:, None, :], bias.float() if bias is not None else None,
                 groups=C)
    if silu:
        y = F.silu(y)
    if ckpt_pool is not None:
        check_pool(ckpt_pool, None, (C, W - 1), "causal_conv1d_ckpt_ref")
        bi, pos, slots = valid_entries(ckpt_pos, ckpt_slot, T)
        cols = pos[:, None] + torch.arange(W - 1, device=x.device)         # [E, W-1]
        taken = u[bi[:, None], :, cols].transpose(1, 2)                      # [E, C, W-1]
        store_states_ref(ckpt_pool, None, slots, taken)
    return (y.transpose(1, 2).to(x.dtype).contiguous(),
            u[:, :, T:].to(state.dtype).contiguous())

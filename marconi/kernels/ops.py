"""The checkpointing scans and conv as `torch.library` ops (namespace `marconi`).

Importing this module registers three ops; each traces as one node (`torch.export`,
`torch.fx`), runs under `FakeTensorMode` through its fake implementation, and is counted by
`FlopCounterMode` through a formula registered on the op packet (a Triton `JITFunction`
cannot be a formula target under `TRITON_INTERPRET=1`, planning-and-kernels.md §1.3):

    marconi::ssd_scan_ckpt        Mamba2 scan + state checkpoints     (ssd_scan.py)
    marconi::selective_scan_ckpt  Mamba1 scan + state checkpoints     (selective_scan.py)
    marconi::causal_conv1d_ckpt   depthwise causal conv + conv states  (causal_conv.py)

The pools are mutated in place (`mutates_args`). Each op runs its Triton kernel where
`use_triton` says so (CUDA tensors, or CPU under the interpreter) and its `*_ref` otherwise.
`mamba2_scan_ckpt`, `mamba1_scan_ckpt` and `conv1d_ckpt` below are the same calls with
keyword defaults.

FLOP formulas follow passes/ops.py (the recurrent form, a multiply-add is 2 FLOPs, exp is
not counted) so that a model traced with or without checkpoint emission costs the same:
emitting a state is a store, not arithmetic, in the recurrent form. The conv counts
2·B·T·C·W like torch's conv formula (bias and silu, elementwise, are not counted).

`marconi.passes.ops.install_kernels(device)` puts the Triton scans under passes'
`marconi::ssd_scan` and `marconi::selective_scan` (kernels never import passes).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from torch.utils.flop_counter import register_flop_formula

from marconi.kernels._triton import use_triton
from marconi.kernels.causal_conv import causal_conv1d_ckpt, causal_conv1d_ckpt_ref
from marconi.kernels.selective_scan import selective_scan_ckpt, selective_scan_ckpt_ref
from marconi.kernels.ssd_scan import ssd_scan_ckpt, ssd_scan_ckpt_ref

_POOLS = ("ckpt_pool", "ckpt_scale")


def _pick(triton_fn, ref_fn, *tensors):
    return triton_fn if use_triton(*tensors) else ref_fn


# ---------------------------------------------------------------- Mamba2

@torch.library.custom_op("marconi::ssd_scan_ckpt", mutates_args=_POOLS)
def ssd_scan_ckpt_op(x: Tensor, dt: Tensor, A: Tensor, Bm: Tensor, Cm: Tensor, h0: Optional[Tensor],
                     ckpt_pos: Optional[Tensor], ckpt_slot: Optional[Tensor],
                     ckpt_pool: Optional[Tensor],
                     ckpt_scale: Optional[Tensor]) -> tuple[Tensor, Tensor]:
    """x [B, T, H, P]; dt [B, T, H]; A [H]; Bm, Cm [B, T, G, N]; h0 [B, H, P, N] | None;
    ckpt_pos, ckpt_slot [B, K]; ckpt_pool [S, H, P, N] (int8: ckpt_scale [S, H, P])
    -> y [B, T, H, P], h_T [B, H, P, N]."""
    fn = _pick(ssd_scan_ckpt, ssd_scan_ckpt_ref, x, dt, A, Bm, Cm, h0, ckpt_pos, ckpt_slot,
               ckpt_pool)
    return fn(x, dt, A, Bm, Cm, h0, ckpt_pos, ckpt_slot, ckpt_pool, ckpt_scale)


@ssd_scan_ckpt_op.register_fake
def _(x, dt, A, Bm, Cm, h0, ckpt_pos, ckpt_slot, ckpt_pool, ckpt_scale):
    b, _, H, P = x.shape
    dtype = h0.dtype if h0 is not None else torch.float32
    return torch.empty_like(x), x.new_empty(b, H, P, Bm.shape[-1], dtype=dtype)


@register_flop_formula(torch.ops.marconi.ssd_scan_ckpt)
def _ssd_scan_ckpt_flops(x_shape, dt_shape, a_shape, b_shape, *args, out_shape=None, **kwargs):
    b, t, h, p = x_shape
    n = b_shape[3]
    # per (t, h, p, n): decay*h, dtx*B, +, C*h, sum = 5; per (t, h, p): dt*x; per (t, h): dt*A
    return b * t * h * (p * (5 * n + 1) + 1)


def mamba2_scan_ckpt(x: Tensor, dt: Tensor, A: Tensor, Bm: Tensor, Cm: Tensor,
                     h0: Tensor | None = None, ckpt_pos: Tensor | None = None,
                     ckpt_slot: Tensor | None = None, ckpt_pool: Tensor | None = None,
                     ckpt_scale: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """`marconi::ssd_scan_ckpt` with keyword defaults (shapes in `ssd_scan.ssd_scan_ckpt`)."""
    return ssd_scan_ckpt_op(x, dt, A, Bm, Cm, h0, ckpt_pos, ckpt_slot, ckpt_pool, ckpt_scale)


# ---------------------------------------------------------------- Mamba1

@torch.library.custom_op("marconi::selective_scan_ckpt", mutates_args=_POOLS)
def selective_scan_ckpt_op(x: Tensor, dt: Tensor, A: Tensor, Bm: Tensor, Cm: Tensor,
                           h0: Optional[Tensor], ckpt_pos: Optional[Tensor],
                           ckpt_slot: Optional[Tensor], ckpt_pool: Optional[Tensor],
                           ckpt_scale: Optional[Tensor]) -> tuple[Tensor, Tensor]:
    """x, dt [B, T, D]; A [D, N]; Bm, Cm [B, T, N]; h0 [B, D, N] | None; ckpt_pos, ckpt_slot
    [B, K]; ckpt_pool [S, D, N] (int8: ckpt_scale [S, D]) -> y [B, T, D], h_T [B, D, N]."""
    fn = _pick(selective_scan_ckpt, selective_scan_ckpt_ref, x, dt, A, Bm, Cm, h0, ckpt_pos,
               ckpt_slot, ckpt_pool)
    return fn(x, dt, A, Bm, Cm, h0, ckpt_pos, ckpt_slot, ckpt_pool, ckpt_scale)


@selective_scan_ckpt_op.register_fake
def _(x, dt, A, Bm, Cm, h0, ckpt_pos, ckpt_slot, ckpt_pool, ckpt_scale):
    dtype = h0.dtype if h0 is not None else torch.float32
    return torch.empty_like(x), x.new_empty(x.shape[0], x.shape[2], A.shape[1], dtype=dtype)


@register_flop_formula(torch.ops.marconi.selective_scan_ckpt)
def _selective_scan_ckpt_flops(x_shape, dt_shape, a_shape, *args, out_shape=None, **kwargs):
    b, t, d = x_shape
    n = a_shape[1]
    # per (t, d, n): dt*A, decay*h, (dt x)*B, +, C*h, sum = 6; per (t, d): dt*x = 1
    return b * t * d * (6 * n + 1)


def mamba1_scan_ckpt(x: Tensor, dt: Tensor, A: Tensor, Bm: Tensor, Cm: Tensor,
                     h0: Tensor | None = None, ckpt_pos: Tensor | None = None,
                     ckpt_slot: Tensor | None = None, ckpt_pool: Tensor | None = None,
                     ckpt_scale: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """`marconi::selective_scan_ckpt` with keyword defaults (shapes in `selective_scan`)."""
    return selective_scan_ckpt_op(x, dt, A, Bm, Cm, h0, ckpt_pos, ckpt_slot, ckpt_pool, ckpt_scale)


# ---------------------------------------------------------------- causal conv

@torch.library.custom_op("marconi::causal_conv1d_ckpt", mutates_args=("ckpt_pool",))
def causal_conv1d_ckpt_op(x: Tensor, weight: Tensor, bias: Optional[Tensor],
                          state: Optional[Tensor], ckpt_pos: Optional[Tensor],
                          ckpt_slot: Optional[Tensor],
                          ckpt_pool: Optional[Tensor], silu: bool) -> tuple[Tensor, Tensor]:
    """x [B, T, C]; weight [C, W] or [C, 1, W]; bias [C] | None; state [B, C, W-1] | None;
    ckpt_pos, ckpt_slot [B, K]; ckpt_pool [S, C, W-1] -> y [B, T, C], state [B, C, W-1]."""
    fn = _pick(causal_conv1d_ckpt, causal_conv1d_ckpt_ref, x, weight, bias, state, ckpt_pos,
               ckpt_slot, ckpt_pool)
    return fn(x, weight, bias, state, ckpt_pos, ckpt_slot, ckpt_pool, silu)


@causal_conv1d_ckpt_op.register_fake
def _(x, weight, bias, state, ckpt_pos, ckpt_slot, ckpt_pool, silu):
    dtype = state.dtype if state is not None else x.dtype
    width = weight.shape[-1]
    return torch.empty_like(x), x.new_empty(x.shape[0], x.shape[2], width - 1, dtype=dtype)


@register_flop_formula(torch.ops.marconi.causal_conv1d_ckpt)
def _causal_conv1d_ckpt_flops(x_shape, w_shape, *args, out_shape=None, **kwargs):
    b, t, c = x_shape
    return 2 * b * t * c * w_shape[-1]


def conv1d_ckpt(x: Tensor, weight: Tensor, bias: Tensor | None = None, state: Tensor | None = None,
                ckpt_pos: Tensor | None = None, ckpt_slot: Tensor | None = None,
                ckpt_pool: Tensor | None = None, silu: bool = False) -> tuple[Tensor, Tensor]:
    """`marconi::causal_conv1d_ckpt` with keyword defaults (shapes in `causal_conv`)."""
    return causal_conv1d_ckpt_op(x, weight, bias, state, ckpt_pos, ckpt_slot, ckpt_pool, silu)

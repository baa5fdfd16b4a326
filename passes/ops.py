"""Recurrent scans and causal attention as `torch.library.custom_op`s (namespace `marconi`).

Each op has three parts, in this order:

1. the eager implementation: plain PyTorch, a sequential scan over time. This is the
   reference semantics of the layer (slow, obviously correct);
2. `register_fake`: output shapes only, so the op runs under `FakeTensorMode`, on the meta
   device and inside `torch.export` as one graph node whose outputs carry the final state;
3. a FLOP formula registered with `torch.utils.flop_counter.register_flop_formula`, so
   `FlopCounterMode` and the graph passes count the op at what it costs.

Every scan takes an initial state and returns the final state, so a prefill can continue
after a cached prefix. Shapes use B batch, T new tokens, S keys, H heads.

FLOP convention (as in `torch.utils.flop_counter`): a multiply-add is 2 FLOPs, an
elementwise multiply or add is 1, transcendental functions (exp) are not counted. The
per-element counts below follow the sequential recurrences written in the eager bodies.

CPU SDPA (`aten._scaled_dot_product_flash_attention_for_cpu`) has no FLOP formula in torch;
`register_cpu_sdpa_formula()` adds one that counts a causal call at the score entries it
computes (about half the dense matrix, planning-and-kernels.md §1.3).

`install_kernels(device)` serves the two scans with the Triton kernels of `marconi.kernels`
on one device type; the fake impls and FLOP formulas stay these.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.flop_counter import register_flop_formula

# the package is light: each kernel module (and Triton) loads on first attribute access
import marconi.kernels as kernels


def _prod(shape) -> int:
    out = 1
    for s in shape:
        out *= s
    return out


# ---------------------------------------------------------------- causal attention

def causal_entries(n_queries, n_keys, window: int = 0):
    """Score entries a causal (optionally sliding-window) attention computes.

    Queries are the last `n_queries` of `n_keys` positions (bottom-right aligned); query i
    sees key j iff 0 <= (n_keys - n_queries + i) - j < window (window 0: unbounded).
    Sum over i of min(window, n_keys - n_queries + i + 1).
    """
    offset = n_keys - n_queries
    if window <= 0:
        return n_queries * offset + n_queries * (n_queries + 1) // 2
    # queries whose visible span is still below the window, then the rest capped at it
    short = max(0, min(n_queries, window - 1 - offset))
    full = n_queries - short
    return short * offset + short * (short + 1) // 2 + full * window


def _attention_mask(n_queries: int, n_keys: int, window: int, device) -> Tensor:
    i = torch.arange(n_queries, device=device).unsqueeze(1)
    j = torch.arange(n_keys, device=device).unsqueeze(0)
    dist = i + (n_keys - n_queries) - j                                # [T, S]
    keep = dist >= 0
    if window > 0:
        keep = keep & (dist < window)
    return keep


@torch.library.custom_op("marconi::causal_attention", mutates_args=())
def causal_attention(q: Tensor, k: Tensor, v: Tensor, window: int, scale: float) -> Tensor:
    """q [B, H, T, D], k [B, Hkv, S, D], v [B, Hkv, S, Dv] -> [B, H, T, Dv].

    The T queries are the last T of the S key positions; `window` > 0 limits each query to
    the `window` most recent keys including itself.
    """
    rep = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(rep, dim=1)
    v = v.repeat_interleave(rep, dim=1)
    keep = _attention_mask(q.shape[2], k.shape[2], window, q.device)
    scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * scale  # [B, H, T, S]
    scores = scores.masked_fill(~keep, float("-inf"))
    return torch.matmul(torch.softmax(scores, dim=-1), v.float()).to(q.dtype)


@causal_attention.register_fake
def _(q, k, v, window, scale):
    return q.new_empty(*q.shape[:3], v.shape[3])


@register_flop_formula(torch.ops.marconi.causal_attention)
def _causal_attention_flops(q_shape, k_shape, v_shape, window, scale, *args, out_shape=None,
                            **kwargs):
    b, h, t, d = q_shape
    s, dv = k_shape[2], v_shape[3]
    # QK^T and PV: one multiply-add per visible score entry and channel
    return 2 * b * h * (d + dv) * causal_entries(t, s, window)


# ---------------------------------------------------------------- Mamba1 selective scan

@torch.library.custom_op("marconi::selective_scan", mutates_args=())
def selective_scan(x: Tensor, dt: Tensor, A: Tensor, Bm: Tensor, Cm: Tensor,
                   h0: Tensor) -> tuple[Tensor, Tensor]:
    """Mamba1 (arXiv 2312.00752, Alg. 2): h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t; y_t = h_t C_t.

    x, dt [B, T, D]; A [D, N]; Bm, Cm [B, T, N]; h0 [B, D, N] -> y [B, T, D], h_T [B, D, N].
    """
    h = h0.float()
    ys = []
    for t in range(x.shape[1]):
        dA = torch.exp(dt[:, t, :, None].float() * A.float())                # [B, D, N]
        dBx = (dt[:, t] * x[:, t]).float()[:, :, None] * Bm[:, t, None, :].float()
        h = dA * h + dBx
        ys.append((h * Cm[:, t, None, :].float()).sum(-1))                  # [B, D]
    y = torch.stack(ys, dim=1) if ys else x.new_zeros(x.shape).float()
    return y.to(x.dtype), h.to(h0.dtype)


@selective_scan.register_fake
def _(x, dt, A, Bm, Cm, h0):
    return torch.empty_like(x), torch.empty_like(h0)


@register_flop_formula(torch.ops.marconi.selective_scan)
def _selective_scan_flops(x_shape, dt_shape, a_shape, b_shape, c_shape, h_shape, *args,
                          out_shape=None, **kwargs):
    b, t, d = x_shape
    n = a_shape[1]
    # per (t, d, n): dt*A, decay*h, (dt x)*B, +, C*h, sum = 6; per (t, d): dt*x = 1
    return b * t * d * (6 * n + 1)


# ---------------------------------------------------------------- Mamba2 SSD scan

@torch.library.custom_op("marconi::ssd_scan", mutates_args=())
def ssd_scan(x: Tensor, dt: Tensor, A: Tensor, Bm: Tensor, Cm: Tensor,
             h0: Tensor) -> tuple[Tensor, Tensor]:
    """Mamba2 SSD in recurrent form (arXiv 2405.21060, §3): scalar decay per head.

    x [B, T, H, P]; dt [B, T, H]; A [H]; Bm, Cm [B, T, G, N] (H divisible by G);
    h0 [B, H, P, N] -> y [B, T, H, P], h_T [B, H, P, N].
    h_t = exp(dt_t A) h_{t-1} + (dt_t x_t) ⊗ B_t;  y_t = h_t C_t.
    """
    rep = x.shape[2] // Bm.shape[2]
    Bh = Bm.repeat_interleave(rep, dim=2).float()                            # [B, T, H, N]
    Ch = Cm.repeat_interleave(rep, dim=2).float()
    h = h0.float()
    ys = []
    for t in range(x.shape[1]):
        decay = torch.exp(dt[:, t].float() * A.float())                      # [B, H]
        dtx = (dt[:, t, :, None] * x[:, t]).float()                          # [B, H, P]
        h = decay[:, :, None, None] * h + dtx[..., None] * Bh[:, t, :, None, :]
        ys.append((h * Ch[:, t, :, None, :]).sum(-1))                        # [B, H, P]
    y = torch.stack(ys, dim=1) if ys else x.new_zeros(x.shape).float()
    return y.to(x.dtype), h.to(h0.dtype)


@ssd_scan.register_fake
def _(x, dt, A, Bm, Cm, h0):
    return torch.empty_like(x), torch.empty_like(h0)


@register_flop_formula(torch.ops.marconi.ssd_scan)
def _ssd_scan_flops(x_shape, dt_shape, a_shape, b_shape, c_shape, h_shape, *args,
                    out_shape=None, **kwargs):
    b, t, h, p = x_shape
    n = b_shape[3]
    # per (t, h, p, n): decay*h, dtx*B, +, C*h, sum = 5; per (t, h, p): dt*x; per (t, h): dt*A
    return b * t * h * (p * (5 * n + 1) + 1)


# ---------------------------------------------------------------- delta rules (GDN, KDA)

def _delta_rule(q, k, v, g, beta, h0):
    """S_t = diag(exp g_t) S_{t-1};  S_t += k_t ⊗ beta_t (v_t - S_t^T k_t);  o_t = S_t^T q_t.

    q, k [B, T, H, K]; v [B, T, H, V]; g [B, T, H] or [B, T, H, K] (log decay, scalar per head
    for GDN, per key channel for KDA); beta [B, T, H]; S [B, H, K, V].
    """
    S = h0.float()
    outs = []
    for t in range(q.shape[1]):
        gt = g[:, t].float()
        decay = torch.exp(gt)[..., None] if gt.dim() == 3 else torch.exp(gt)[..., None, None]
        S = S * decay
        kt, vt = k[:, t].float(), v[:, t].float()                            # [B, H, K], [B, H, V]
        mem = (S * kt[..., None]).sum(-2)                                    # [B, H, V]
        delta = (vt - mem) * beta[:, t].float()[..., None]
        S = S + kt[..., None] * delta[..., None, :]
        outs.append((S * q[:, t].float()[..., None]).sum(-2))                # [B, H, V]
    o = torch.stack(outs, dim=1) if outs else v.new_zeros(v.shape).float()
    return o.to(v.dtype), S.to(h0.dtype)


def _delta_rule_flops(q_shape, v_shape):
    b, t, h, k = q_shape
    dv = v_shape[3]
    # per step and head: decay K·V, S^T k 2KV, (v - mem)·beta 2V, k ⊗ delta + S 2KV, S^T q 2KV
    return b * t * h * (7 * k * dv + 2 * dv)


@torch.library.custom_op("marconi::gated_delta_scan", mutates_args=())
def gated_delta_scan(q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor,
                     h0: Tensor) -> tuple[Tensor, Tensor]:
    """Gated delta rule (arXiv 2412.06464, eq. 10): scalar decay g [B, T, H] per head.

    q, k [B, T, H, K]; v [B, T, H, V]; beta [B, T, H]; h0 [B, H, K, V] -> o [B, T, H, V], S_T.
    """
    return _delta_rule(q, k, v, g, beta, h0)


@gated_delta_scan.register_fake
def _(q, k, v, g, beta, h0):
    return torch.empty_like(v), torch.empty_like(h0)


@register_flop_formula(torch.ops.marconi.gated_delta_scan)
def _gated_delta_flops(q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs):
    return _delta_rule_flops(q_shape, v_shape)


@torch.library.custom_op("marconi::kda_scan", mutates_args=())
def kda_scan(q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor,
             h0: Tensor) -> tuple[Tensor, Tensor]:
    """Kimi delta attention (arXiv 2510.26692): the delta rule with per-channel decay g [B, T, H, K].

    q, k [B, T, H, K]; v [B, T, H, V]; beta [B, T, H]; h0 [B, H, K, V] -> o [B, T, H, V], S_T.
    """
    return _delta_rule(q, k, v, g, beta, h0)


@kda_scan.register_fake
def _(q, k, v, g, beta, h0):
    return torch.empty_like(v), torch.empty_like(h0)


@register_flop_formula(torch.ops.marconi.kda_scan)
def _kda_flops(q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs):
    return _delta_rule_flops(q_shape, v_shape)


# ---------------------------------------------------------------- gated linear attention

@torch.library.custom_op("marconi::linear_attention_scan", mutates_args=())
def linear_attention_scan(q: Tensor, k: Tensor, v: Tensor, g: Tensor,
                          h0: Tensor) -> tuple[Tensor, Tensor]:
    """Gated linear attention with a scalar log-decay per head (RetNet/Lightning style).

    S_t = exp(g_t) S_{t-1} + k_t ⊗ v_t;  o_t = S_t^T q_t.
    q, k [B, T, H, K]; v [B, T, H, V]; g [B, T, H]; h0 [B, H, K, V] -> o [B, T, H, V], S_T.
    """
    S = h0.float()
    outs = []
    for t in range(q.shape[1]):
        S = S * torch.exp(g[:, t].float())[..., None, None]
        S = S + k[:, t].float()[..., None] * v[:, t].float()[..., None, :]
        outs.append((S * q[:, t].float()[..., None]).sum(-2))
    o = torch.stack(outs, dim=1) if outs else v.new_zeros(v.shape).float()
    return o.to(v.dtype), S.to(h0.dtype)


@linear_attention_scan.register_fake
def _(q, k, v, g, h0):
    return torch.empty_like(v), torch.empty_like(h0)


@register_flop_formula(torch.ops.marconi.linear_attention_scan)
def _linear_attention_flops(q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs):
    b, t, h, k = q_shape
    dv = v_shape[3]
    # per step and head: decay K·V, k ⊗ v + S 2KV, S^T q 2KV
    return b * t * h * 5 * k * dv


# ---------------------------------------------------------------- CPU SDPA

_CPU_SDPA = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu


def _cpu_sdpa_flops(query, key, value, dropout_p=0.0, is_causal=False, *args,
                    attn_mask=None, scale=None, out_val=None, **kwargs):
    """FLOPs of CPU SDPA: dense, or causal at the entries it computes.

    torch's causal SDPA aligns the mask top-left: query i sees keys 0..i. An explicit
    `attn_mask` is counted dense (the CPU kernel computes every masked entry).
    """
    b, h, t, d = query.shape
    s, dv = key.shape[2], value.shape[3]
    if is_causal:
        m = min(t, s)
        visible = m * (m + 1) // 2 + (t - m) * s
    else:
        visible = t * s
    return 2 * b * h * (d + dv) * visible


def register_cpu_sdpa_formula() -> None:
    """Register the CPU SDPA FLOP formula (torch ships none for this op); idempotent."""
    from torch.utils.flop_counter import flop_registry
    if _CPU_SDPA not in flop_registry:
        register_flop_formula(_CPU_SDPA, get_raw=True)(_cpu_sdpa_flops)


# ---------------------------------------------------------------- the scans on the Triton kernels

def _without_checkpoints(scan):
    """A kernel of the checkpointing scan `scan` with this module's scan signature."""
    def kernel(x, dt, A, Bm, Cm, h0):
        return scan(x, dt, A, Bm, Cm, h0)
    return kernel


def install_kernels(device: str = "cuda") -> tuple[str, ...]:
    """Serve `marconi::ssd_scan` / `marconi::selective_scan` with the Triton scans on
    `device` ("cuda"; "cpu" only makes sense under TRITON_INTERPRET=1). Same signatures and
    results (y in x.dtype, final state in h0.dtype). Returns the op names it registered."""
    scans = {"marconi::ssd_scan": kernels.ssd_scan_ckpt,
             "marconi::selective_scan": kernels.selective_scan_ckpt}
    for name, scan in scans.items():
        if (name, device) not in _INSTALLED:
            torch.library.register_kernel(name, device, _without_checkpoints(scan))
            _INSTALLED.add((name, device))
    return tuple(scans)


_INSTALLED: set[tuple[str, str]] = set()

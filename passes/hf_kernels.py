"""Kernel substitution for Hugging Face models: their scans become `marconi::` ops.

transformers 5.x routes every recurrent scan of a hybrid model through a module-level
function of its modeling file (`mamba2_chunk_scan`, `mamba_selective_scan`,
`torch_chunk_gated_delta_rule`, `chunk_kimi_delta_attention`, …), the hook it uses to
swap in CUDA kernels. While the passes analyse a model, `substitute_kernels(model)` puts
our custom ops in their place, with the same signature and semantics:

- the scan is then one op with a FLOP formula that counts the recurrence (the reference
  torch paths are chunked or Python loops, whose counts depend on chunk padding);
- the layer is classified by the op it calls (`graph_passes.OP_RULES`), never by name;
- everything runs on the meta device (no loops over tokens, no memory).

Attention goes through transformers' `AttentionInterface` as `marconi_causal`, which
calls `marconi::causal_attention`: causal, bottom-right aligned, optional sliding window.
Functions not listed here (conv helpers, decode-step updates) run as written.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Callable

import torch
import torch.nn.functional as F

from marconi.errors import UnsupportedModelError
from marconi.passes import ops  # noqa: F401  (registers torch.ops.marconi.*)

ATTENTION_NAME = "marconi_causal"


def _l2norm(x):
    return x * torch.rsqrt(x.pow(2).sum(-1, keepdim=True) + 1e-6)


def ssd_chunk_scan(hidden_states, dt, A, B, C, chunk_size=None, D=None, z=None, dt_bias=None,
                   initial_states=None, dt_softplus=False, dt_limit=(0.0, float("inf")),
                   return_final_states=False, **kwargs):
    """`mamba2_chunk_scan` (mamba_ssm's mamba_chunk_scan_combined): x [B, T, H, P],
    dt [B, T, H], A [H], B, C [B, T, G, N], initial_states [B, H, P, N]."""
    b, _, h, p = hidden_states.shape
    if dt_bias is not None:
        dt = dt + dt_bias.to(dt.dtype)
    if dt_softplus:
        dt = F.softplus(dt)
    dt = torch.clamp(dt, min=dt_limit[0], max=dt_limit[1])
    h0 = initial_states if initial_states is not None else hidden_states.new_zeros(
        b, h, p, B.shape[-1], dtype=torch.float32)
    y, state = torch.ops.marconi.ssd_scan(hidden_states, dt, A, B, C, h0)
    if D is not None:
        y = y + hidden_states * D[:, None].to(y.dtype)
    if z is not None:
        y = y * F.silu(z.reshape(y.shape))
    return (y, state) if return_final_states else y


def selective_scan(hidden_states, dt, A, B, C, D=None, z=None, delta_bias=None,
                   delta_softplus=False, return_last_state=False, **kwargs):
    """`mamba_selective_scan` (mamba_ssm's selective_scan_fn): x, dt, z [B, D, T], A [D, N],
    B, C [B, N, T]. Like the transformers reference, the scan starts from a zero state."""
    if delta_bias is not None:
        dt = dt + delta_bias.to(dt.dtype)[..., None]
    if delta_softplus:
        dt = F.softplus(dt)
    x = hidden_states.transpose(1, 2)                                        # [B, T, D]
    # the reference promotes its zero state to float32 at the first step (exp(dt·A) is float)
    h0 = x.new_zeros(x.shape[0], x.shape[2], A.shape[-1], dtype=torch.float32)
    y, state = torch.ops.marconi.selective_scan(x, dt.transpose(1, 2), A, B.transpose(1, 2),
                                                C.transpose(1, 2), h0)
    y = y.transpose(1, 2)
    if D is not None:
        y = y + hidden_states * D[None, :, None]
    if z is not None:
        y = y * F.silu(z)
    return (y, state) if return_last_state else y


def _delta_rule(op, query, key, value, g, beta, initial_state, output_final_state,
                use_qk_l2norm_in_kernel):
    dtype = query.dtype
    rep = value.shape[2] // key.shape[2]
    query, key = (t.repeat_interleave(rep, dim=2).float() for t in (query, key))
    if use_qk_l2norm_in_kernel:
        query, key = _l2norm(query), _l2norm(key)
    query = query * query.shape[-1] ** -0.5
    h0 = initial_state.float() if initial_state is not None else query.new_zeros(
        value.shape[0], value.shape[2], key.shape[-1], value.shape[-1])
    out, state = op(query, key, value.float(), g.float(), beta.float(), h0)
    return out.to(dtype), (state if output_final_state else None)


def gated_delta_rule(query, key, value, g, beta, chunk_size=64, initial_state=None,
                     output_final_state=False, use_qk_l2norm_in_kernel=False, **kwargs):
    """`torch_chunk_gated_delta_rule` / `torch_recurrent_gated_delta_rule` (FLA's chunk /
    fused_recurrent_gated_delta_rule): q, k [B, T, Hk, K], v [B, T, Hv, V], g, beta [B, T, Hv]."""
    return _delta_rule(torch.ops.marconi.gated_delta_scan, query, key, value, g, beta,
                       initial_state, output_final_state, use_qk_l2norm_in_kernel)


def kimi_delta_rule(query, key, value, g, beta, chunk_size=64, initial_state=None,
                    output_final_state=False, use_qk_l2norm_in_kernel=False, **kwargs):
    """`chunk_kimi_delta_attention` / `recurrent_kimi_delta_attention` (FLA's chunk_kda):
    g [B, T, H, K] is a per-channel log decay."""
    return _delta_rule(torch.ops.marconi.kda_scan, query, key, value, g, beta,
                       initial_state, output_final_state, use_qk_l2norm_in_kernel)


SUBSTITUTES: dict[str, Callable] = {
    "mamba2_chunk_scan": ssd_chunk_scan,
    "mamba_selective_scan": selective_scan,
    "torch_chunk_gated_delta_rule": gated_delta_rule,
    "torch_recurrent_gated_delta_rule": gated_delta_rule,
    "chunk_kimi_delta_attention": kimi_delta_rule,
    "recurrent_kimi_delta_attention": kimi_delta_rule,
}


def causal_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                     sliding_window=None, **kwargs):
    """An `AttentionInterface` function: q [B, H, T, D], k, v [B, Hkv, S, D] -> [B, T, H, Dv].

    The T queries are the last T of the S positions (a prefill after a cached prefix, one
    unpadded sequence); the mask transformers built for it is that causal mask.
    """
    if getattr(module, "is_causal", True) is False:
        raise UnsupportedModelError(type(module).__name__, "bidirectional attention (is_causal "
                                    "False): a prefix cache needs causal attention")
    window = sliding_window or getattr(module, "sliding_window", None) or 0
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    out = torch.ops.marconi.causal_attention(query, key, value, int(window), float(scale))
    return out.transpose(1, 2).contiguous(), None


def register_attention() -> None:
    """Register `marconi_causal` with transformers' AttentionInterface (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    AttentionInterface.register(ATTENTION_NAME, causal_attention)
    AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)


@contextlib.contextmanager
def substitute_kernels(model: torch.nn.Module):
    """Within the block, the modeling modules of `model` call our ops for their scans."""
    modules = {sys.modules[type(m).__module__] for m in model.modules()
               if type(m).__module__ in sys.modules}
    saved = []
    try:
        for module in modules:
            for name, substitute in SUBSTITUTES.items():
                if hasattr(module, name):
                    saved.append((module, name, getattr(module, name)))
                    setattr(module, name, substitute)
        yield
    finally:
        for module, name, original in reversed(saved):
            setattr(module, name, original)


def substituted_names(model: torch.nn.Module) -> list[str]:
    """Names of the functions `substitute_kernels` replaces for `model` (for reports)."""
    modules = {sys.modules[type(m).__module__] for m in model.modules()
               if type(m).__module__ in sys.modules}
    return sorted({name for module in modules for name in SUBSTITUTES if hasattr(module, name)})

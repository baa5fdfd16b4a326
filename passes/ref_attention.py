"""Reference attention layers: GQA softmax attention (optionally sliding-window) and MLA.

Both keep a per-token KV cache; the score computation is the `marconi::causal_attention`
op, whose FLOP formula counts only the entries a causal (windowed) kernel computes.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from marconi.layers import AttentionParams, MLAParams
from marconi.passes import ops  # noqa: F401  (registers torch.ops.marconi.*)
from marconi.passes.ref_common import CacheDtypes, RMSNorm, linear, rotary


def _append(cache: Tensor, new: Tensor, dim: int, keep: int) -> tuple[Tensor, Tensor]:
    """Concatenate new tokens to a cached tensor; return (all, what to keep in the cache).

    `keep` > 0 caps the cache at the `keep` most recent tokens (sliding window).
    """
    full = torch.cat([cache.to(new.dtype), new], dim=dim)
    if keep <= 0:
        return full, full.to(cache.dtype)
    start = torch.sym_max(full.shape[dim] - keep, 0)
    return full, full.narrow(dim, start, full.shape[dim] - start).to(cache.dtype)


class Attention(nn.Module):
    """Multi-head / grouped-query attention with RoPE; `window` makes it sliding-window."""

    def __init__(self, d_model: int, p: AttentionParams, dtypes: CacheDtypes):
        super().__init__()
        self.n_heads, self.n_kv, self.head_dim = p.n_heads, p.n_kv_heads, p.head_dim
        self.window = p.window or 0
        self.dtypes = dtypes
        self.q_proj = linear(d_model, p.n_heads * p.head_dim)
        self.k_proj = linear(d_model, p.n_kv_heads * p.head_dim)
        self.v_proj = linear(d_model, p.n_kv_heads * p.head_dim)
        self.o_proj = linear(p.n_heads * p.head_dim, d_model)

    def init_state(self, batch: int, device) -> dict[str, Tensor]:
        shape = (batch, self.n_kv, 0, self.head_dim)
        return {"k": torch.zeros(shape, device=device, dtype=self.dtypes.kv),
                "v": torch.zeros(shape, device=device, dtype=self.dtypes.kv)}

    def forward(self, x: Tensor, state: dict[str, Tensor], positions: Tensor):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)  # [B, H, T, D]
        k = self.k_proj(x).view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
        q, k = rotary(q, positions), rotary(k, positions)
        # the window covers the query itself, so W - 1 earlier tokens stay cached
        keep = self.window - 1 if self.window else 0
        k_all, k_keep = _append(state["k"], k, 2, keep)
        v_all, v_keep = _append(state["v"], v, 2, keep)
        o = torch.ops.marconi.causal_attention(q, k_all, v_all, self.window,
                                               1.0 / math.sqrt(self.head_dim))
        o = o.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim)
        return self.o_proj(o), {"k": k_keep, "v": v_keep}


class MLA(nn.Module):
    """Multi-head latent attention (DeepSeek-V2, arXiv 2405.04434 §2.1), prefill form.

    The cache holds the compressed latent c_kv [B, S, r] and the shared rotary key
    k_rope [B, S, dr]; keys and values of every cached token are up-projected again at
    each prefill (no weight absorption), which is what a prefill kernel does.
    """

    def __init__(self, d_model: int, p: MLAParams, dtypes: CacheDtypes):
        super().__init__()
        self.p, self.dtypes = p, dtypes
        qk_dim = p.qk_nope_head_dim + p.qk_rope_head_dim
        if p.q_lora_rank:
            self.q_a = linear(d_model, p.q_lora_rank)
            self.q_norm = RMSNorm(p.q_lora_rank)
            self.q_b = linear(p.q_lora_rank, p.n_heads * qk_dim)
        else:
            self.q_proj = linear(d_model, p.n_heads * qk_dim)
        self.kv_a = linear(d_model, p.kv_lora_rank + p.qk_rope_head_dim)
        self.kv_norm = RMSNorm(p.kv_lora_rank)
        self.kv_b = linear(p.kv_lora_rank, p.n_heads * (p.qk_nope_head_dim + p.v_head_dim))
        self.o_proj = linear(p.n_heads * p.v_head_dim, d_model)

    def init_state(self, batch: int, device) -> dict[str, Tensor]:
        dt = self.dtypes.kv
        return {"c_kv": torch.zeros(batch, 0, self.p.kv_lora_rank, device=device, dtype=dt),
                "k_rope": torch.zeros(batch, 0, self.p.qk_rope_head_dim, device=device,
                                      dtype=dt)}

    def forward(self, x: Tensor, state: dict[str, Tensor], positions: Tensor):
        p = self.p
        b, t, _ = x.shape
        h, dn, dr, dv = p.n_heads, p.qk_nope_head_dim, p.qk_rope_head_dim, p.v_head_dim
        q = self.q_b(self.q_norm(self.q_a(x))) if p.q_lora_rank else self.q_proj(x)
        q = q.view(b, t, h, dn + dr).transpose(1, 2)                          # [B, H, T, dn+dr]
        q_nope, q_rope = q[..., :dn], rotary(q[..., dn:], positions)
        latent = self.kv_a(x)                                                 # [B, T, r+dr]
        c_kv = self.kv_norm(latent[..., :p.kv_lora_rank])
        k_rope = rotary(latent[..., p.kv_lora_rank:].unsqueeze(1), positions).squeeze(1)
        c_all, c_keep = _append(state["c_kv"], c_kv, 1, 0)                    # [B, S, r]
        r_all, r_keep = _append(state["k_rope"], k_rope, 1, 0)                # [B, S, dr]
        s = c_all.shape[1]
        kv = self.kv_b(c_all).view(b, s, h, dn + dv).transpose(1, 2)          # [B, H, S, dn+dv]
        k = torch.cat([kv[..., :dn], r_all.unsqueeze(1).expand(b, h, s, dr)], dim=-1)
        o = torch.ops.marconi.causal_attention(torch.cat([q_nope, q_rope], dim=-1), k,
                                               kv[..., dn:], 0, 1.0 / math.sqrt(dn + dr))
        o = o.transpose(1, 2).reshape(b, t, h * dv)
        return self.o_proj(o), {"c_kv": c_keep, "k_rope": r_keep}

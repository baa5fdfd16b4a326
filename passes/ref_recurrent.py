"""Reference recurrent layers: Mamba1, Mamba2, GDN, KDA, gated linear attention, short conv.

Each keeps a fixed-size cache entry: a recurrent state (the scan's final state, in the
state dtype) and a conv state (the last d_conv - 1 inputs of its causal conv, in the conv
dtype). The scans are the `marconi::*` custom ops of `passes.ops`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from marconi.layers import (GDNParams, KDAParams, LinearAttentionParams, Mamba1Params,
                            Mamba2Params, ShortConvParams)
from marconi.passes import ops  # noqa: F401  (registers torch.ops.marconi.*)
from marconi.passes.ref_common import CacheDtypes, CausalConv, RMSNorm, linear


def _zeros(dtypes: CacheDtypes, device, *shape) -> Tensor:
    return torch.zeros(*shape, device=device, dtype=dtypes.state)


class Mamba1(nn.Module):
    """Mamba selective SSM block (arXiv 2312.00752, Fig. 3)."""

    def __init__(self, d_model: int, p: Mamba1Params, dtypes: CacheDtypes):
        super().__init__()
        self.p, self.dtypes = p, dtypes
        di, n = p.d_inner, p.d_state
        self.in_proj = linear(d_model, 2 * di)
        self.conv = CausalConv(di, p.d_conv)
        self.x_proj = linear(di, p.dt_rank + 2 * n)
        self.dt_proj = linear(p.dt_rank, di, bias=True)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, n + 1, dtype=torch.float32)
                                            ).repeat(di, 1))
        self.D = nn.Parameter(torch.ones(di))
        self.out_proj = linear(di, d_model)

    def init_state(self, batch: int, device) -> dict[str, Tensor]:
        return {"ssm": _zeros(self.dtypes, device, batch, self.p.d_inner, self.p.d_state),
                "conv": self.conv.init_state(batch, device, self.dtypes.conv)}

    def forward(self, x: Tensor, state: dict[str, Tensor], positions: Tensor):
        p = self.p
        xs, z = self.in_proj(x).chunk(2, dim=-1)                              # [B, T, Di] each
        xs, conv = self.conv(xs, state["conv"])
        xs = F.silu(xs)
        dt, bm, cm = self.x_proj(xs).split([p.dt_rank, p.d_state, p.d_state], dim=-1)
        dt = F.softplus(self.dt_proj(dt))
        y, ssm = torch.ops.marconi.selective_scan(xs, dt, -torch.exp(self.A_log.float()),
                                                  bm, cm, state["ssm"])
        y = (y + xs * self.D) * F.silu(z)
        return self.out_proj(y), {"ssm": ssm, "conv": conv}


class Mamba2(nn.Module):
    """Mamba2 block (arXiv 2405.21060, §7): one in_proj to (z, x, B, C, dt), SSD scan."""

    def __init__(self, d_model: int, p: Mamba2Params, dtypes: CacheDtypes):
        super().__init__()
        self.p, self.dtypes = p, dtypes
        di, gn = p.d_inner, p.n_groups * p.d_state
        self.conv_dim = di + 2 * gn
        self.in_proj = linear(d_model, 2 * di + 2 * gn + p.n_heads)
        self.conv = CausalConv(self.conv_dim, p.d_conv)
        self.A_log = nn.Parameter(torch.log(torch.linspace(1, 16, p.n_heads)))
        self.dt_bias = nn.Parameter(torch.zeros(p.n_heads))
        self.D = nn.Parameter(torch.ones(p.n_heads))
        self.norm = RMSNorm(di)
        self.out_proj = linear(di, d_model)

    def init_state(self, batch: int, device) -> dict[str, Tensor]:
        p = self.p
        return {"ssm": _zeros(self.dtypes, device, batch, p.n_heads, p.head_dim, p.d_state),
                "conv": self.conv.init_state(batch, device, self.dtypes.conv)}

    def forward(self, x: Tensor, state: dict[str, Tensor], positions: Tensor):
        p = self.p
        b, t, _ = x.shape
        z, xbc, dt = self.in_proj(x).split([p.d_inner, self.conv_dim, p.n_heads], dim=-1)
        xbc, conv = self.conv(xbc, state["conv"])
        xbc = F.silu(xbc)
        gn = p.n_groups * p.d_state
        xs, bm, cm = xbc.split([p.d_inner, gn, gn], dim=-1)
        xs = xs.reshape(b, t, p.n_heads, p.head_dim)                          # [B, T, H, P]
        dt = F.softplus(dt + self.dt_bias)                                    # [B, T, H]
        y, ssm = torch.ops.marconi.ssd_scan(
            xs, dt, -torch.exp(self.A_log.float()),
            bm.reshape(b, t, p.n_groups, p.d_state), cm.reshape(b, t, p.n_groups, p.d_state),
            state["ssm"])
        y = (y + xs * self.D[:, None]).reshape(b, t, p.d_inner)
        y = self.norm(y * F.silu(z))
        return self.out_proj(y), {"ssm": ssm, "conv": conv}


def _l2norm(x: Tensor) -> Tensor:
    return x * torch.rsqrt(x.pow(2).sum(-1, keepdim=True) + 1e-6)


class GatedDeltaNet(nn.Module):
    """Gated DeltaNet layer as in Qwen3-Next (arXiv 2412.06464): conv over q, k, v, then
    the gated delta rule with a scalar decay per value head, gated RMSNorm output."""

    def __init__(self, d_model: int, p: GDNParams, dtypes: CacheDtypes):
        super().__init__()
        self.p, self.dtypes = p, dtypes
        self.key_dim, self.value_dim = p.n_k_heads * p.head_k_dim, p.n_v_heads * p.head_v_dim
        self.qkv_proj = linear(d_model, 2 * self.key_dim + self.value_dim)
        self.z_proj = linear(d_model, self.value_dim)
        self.ab_proj = linear(d_model, 2 * p.n_v_heads)
        self.conv = CausalConv(2 * self.key_dim + self.value_dim, p.d_conv, bias=False)
        self.A_log = nn.Parameter(torch.zeros(p.n_v_heads))
        self.dt_bias = nn.Parameter(torch.ones(p.n_v_heads))
        self.norm = RMSNorm(p.head_v_dim)
        self.o_proj = linear(self.value_dim, d_model)

    def init_state(self, batch: int, device) -> dict[str, Tensor]:
        p = self.p
        return {"ssm": _zeros(self.dtypes, device, batch, p.n_v_heads, p.head_k_dim,
                              p.head_v_dim),
                "conv": self.conv.init_state(batch, device, self.dtypes.conv)}

    def forward(self, x: Tensor, state: dict[str, Tensor], positions: Tensor):
        p = self.p
        b, t, _ = x.shape
        qkv, conv = self.conv(self.qkv_proj(x), state["conv"])
        q, k, v = F.silu(qkv).split([self.key_dim, self.key_dim, self.value_dim], dim=-1)
        rep = p.n_v_heads // p.n_k_heads
        q = _l2norm(q.reshape(b, t, p.n_k_heads, p.head_k_dim)).repeat_interleave(rep, dim=2)
        k = _l2norm(k.reshape(b, t, p.n_k_heads, p.head_k_dim)).repeat_interleave(rep, dim=2)
        v = v.reshape(b, t, p.n_v_heads, p.head_v_dim)
        a, beta = self.ab_proj(x).chunk(2, dim=-1)                            # [B, T, Hv] each
        g = -torch.exp(self.A_log.float()) * F.softplus(a.float() + self.dt_bias)
        o, ssm = torch.ops.marconi.gated_delta_scan(q * p.head_k_dim ** -0.5, k, v, g,
                                                    torch.sigmoid(beta), state["ssm"])
        z = self.z_proj(x).reshape(b, t, p.n_v_heads, p.head_v_dim)
        o = (self.norm(o) * F.silu(z)).reshape(b, t, self.value_dim)
        return self.o_proj(o), {"ssm": ssm, "conv": conv}


class KimiDeltaAttention(nn.Module):
    """Kimi delta attention (arXiv 2510.26692): the delta rule with a per-channel decay
    from a low-rank gate, separate short convs on q, k and v, sigmoid output gate."""

    def __init__(self, d_model: int, p: KDAParams, dtypes: CacheDtypes):
        super().__init__()
        self.p, self.dtypes = p, dtypes
        inner = p.n_heads * p.head_dim
        self.qkv_proj = linear(d_model, 3 * inner)
        self.conv = CausalConv(3 * inner, p.d_conv, bias=False)
        self.f_a = linear(d_model, p.head_dim)
        self.f_b = linear(p.head_dim, inner)
        self.b_proj = linear(d_model, p.n_heads)
        self.g_a = linear(d_model, p.head_dim)
        self.g_b = linear(p.head_dim, inner)
        self.A_log = nn.Parameter(torch.zeros(p.n_heads))
        self.dt_bias = nn.Parameter(torch.ones(inner))
        self.norm = RMSNorm(p.head_dim)
        self.o_proj = linear(inner, d_model)

    def init_state(self, batch: int, device) -> dict[str, Tensor]:
        p = self.p
        return {"ssm": _zeros(self.dtypes, device, batch, p.n_heads, p.head_dim, p.head_dim),
                "conv": self.conv.init_state(batch, device, self.dtypes.conv)}

    def forward(self, x: Tensor, state: dict[str, Tensor], positions: Tensor):
        p = self.p
        b, t, _ = x.shape
        shape = (b, t, p.n_heads, p.head_dim)
        qkv, conv = self.conv(self.qkv_proj(x), state["conv"])
        q, k, v = F.silu(qkv).chunk(3, dim=-1)
        q, k, v = _l2norm(q.reshape(shape)), _l2norm(k.reshape(shape)), v.reshape(shape)
        g = F.softplus(self.f_b(self.f_a(x)).float() + self.dt_bias).reshape(shape)
        g = -torch.exp(self.A_log.float())[:, None] * g                       # [B, T, H, K]
        o, ssm = torch.ops.marconi.kda_scan(q * p.head_dim ** -0.5, k, v, g,
                                            torch.sigmoid(self.b_proj(x)), state["ssm"])
        gate = torch.sigmoid(self.g_b(self.g_a(x))).reshape(shape)
        o = (self.norm(o) * gate).reshape(b, t, p.n_heads * p.head_dim)
        return self.o_proj(o), {"ssm": ssm, "conv": conv}


class LinearAttention(nn.Module):
    """Gated linear attention: a scalar data-dependent decay per head, optional short conv."""

    def __init__(self, d_model: int, p: LinearAttentionParams, dtypes: CacheDtypes):
        super().__init__()
        self.p, self.dtypes = p, dtypes
        inner = p.n_heads * p.head_dim
        self.qkv_proj = linear(d_model, 3 * inner)
        self.conv = CausalConv(3 * inner, p.d_conv, bias=False) if p.d_conv else None
        self.g_proj = linear(d_model, p.n_heads)
        self.norm = RMSNorm(p.head_dim)
        self.o_proj = linear(inner, d_model)

    def init_state(self, batch: int, device) -> dict[str, Tensor]:
        p = self.p
        state = {"ssm": _zeros(self.dtypes, device, batch, p.n_heads, p.head_dim, p.head_dim)}
        if self.conv is not None:
            state["conv"] = self.conv.init_state(batch, device, self.dtypes.conv)
        return state

    def forward(self, x: Tensor, state: dict[str, Tensor], positions: Tensor):
        p = self.p
        b, t, _ = x.shape
        qkv = self.qkv_proj(x)
        new_state = {}
        if self.conv is not None:
            qkv, new_state["conv"] = self.conv(qkv, state["conv"])
            qkv = F.silu(qkv)
        q, k, v = (u.reshape(b, t, p.n_heads, p.head_dim) for u in qkv.chunk(3, dim=-1))
        g = F.logsigmoid(self.g_proj(x).float())                              # [B, T, H]
        o, new_state["ssm"] = torch.ops.marconi.linear_attention_scan(
            q * p.head_dim ** -0.5, _l2norm(k), v, g, state["ssm"])
        o = self.norm(o).reshape(b, t, p.n_heads * p.head_dim)
        return self.o_proj(o), new_state


class ShortConv(nn.Module):
    """LFM2's gated short convolution: y = out(C ⊙ conv(B ⊙ x)) (LFM2 model card)."""

    def __init__(self, d_model: int, p: ShortConvParams, dtypes: CacheDtypes):
        super().__init__()
        self.dtypes = dtypes
        self.in_proj = linear(d_model, 3 * d_model)
        self.conv = CausalConv(d_model, p.d_conv, bias=False)
        self.out_proj = linear(d_model, d_model)

    def init_state(self, batch: int, device) -> dict[str, Tensor]:
        return {"conv": self.conv.init_state(batch, device, self.dtypes.conv)}

    def forward(self, x: Tensor, state: dict[str, Tensor], positions: Tensor):
        bg, cg, xs = self.in_proj(x).chunk(3, dim=-1)
        y, conv = self.conv(bg * xs, state["conv"])
        return self.out_proj(cg * y), {"conv": conv}

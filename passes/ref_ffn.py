"""Reference feed-forward layers: dense MLP (plain or gated) and mixture of experts.

They hold no cache; they are layers of their own so that their FLOPs are reported per
layer as in `model.yaml`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from marconi.layers import MLPParams, MoEParams
from marconi.passes.ref_common import CacheDtypes, linear


class MLP(nn.Module):
    """up → act → down, or SwiGLU (silu(gate) ⊙ up → down) when `gated`."""

    def __init__(self, d_model: int, p: MLPParams | int, dtypes: CacheDtypes | None = None,
                 gated: bool | None = None):
        super().__init__()
        d_ff = p if isinstance(p, int) else p.d_ff
        self.gated = gated if gated is not None else (not isinstance(p, int) and p.gated)
        self.up = linear(d_model, d_ff)
        self.gate = linear(d_model, d_ff) if self.gated else None
        self.down = linear(d_ff, d_model)

    def init_state(self, batch: int, device) -> dict[str, Tensor]:
        return {}

    def forward(self, x: Tensor, state: dict[str, Tensor] | None = None,
                positions: Tensor | None = None):
        h = F.silu(self.gate(x)) * self.up(x) if self.gated else F.gelu(self.up(x))
        return self.down(h), {}


class MoE(nn.Module):
    """Top-k routed experts (+ optional always-on shared experts).

    Each token runs through exactly `top_k` experts: expert weights are gathered per
    (token, choice) and applied with one batched matmul, so the work (and its FLOP count)
    is that of top_k experts whatever the routing.
    """

    def __init__(self, d_model: int, p: MoEParams, dtypes: CacheDtypes):
        super().__init__()
        self.p = p
        e, f = p.n_experts, p.d_ff_expert
        self.router = linear(d_model, e)
        self.w_up = nn.Parameter(torch.randn(e, d_model, f) / d_model ** 0.5)
        self.w_gate = nn.Parameter(torch.randn(e, d_model, f) / d_model ** 0.5) if p.gated \
            else None
        self.w_down = nn.Parameter(torch.randn(e, f, d_model) / f ** 0.5)
        self.shared = (MLP(d_model, p.n_shared_experts * p.d_ff_shared, gated=p.gated)
                       if p.n_shared_experts else None)

    def init_state(self, batch: int, device) -> dict[str, Tensor]:
        return {}

    def forward(self, x: Tensor, state: dict[str, Tensor] | None = None,
                positions: Tensor | None = None):
        b, t, d = x.shape
        k = self.p.top_k
        flat = x.reshape(b * t, d)
        weights, chosen = torch.softmax(self.router(flat).float(), dim=-1).topk(k, dim=-1)
        weights = (weights / weights.sum(-1, keepdim=True)).to(x.dtype)      # [BT, k]
        chosen = chosen.reshape(-1)                                           # [BT*k]
        xs = flat.repeat_interleave(k, dim=0).unsqueeze(1)                    # [BT*k, 1, D]
        up = torch.bmm(xs, self.w_up[chosen])                                 # [BT*k, 1, F]
        h = F.silu(torch.bmm(xs, self.w_gate[chosen])) * up if self.p.gated else F.gelu(up)
        out = torch.bmm(h, self.w_down[chosen]).reshape(b * t, k, d)
        out = (out * weights.unsqueeze(-1)).sum(1).reshape(b, t, d)
        if self.shared is not None:
            out = out + self.shared(x)[0]
        return out, {}

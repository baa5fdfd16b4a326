"""Building blocks shared by the reference layers: dtypes, norms, rotary, causal conv.

Every layer of the reference model (`passes.reference_model`) is a small module with

    init_state(batch, device) -> dict[str, Tensor]       # an empty cache entry
    forward(x [B, T, D], state, positions [T]) -> (y [B, T, D], new state)

State dicts are the cache: KV tensors grow with the sequence, recurrent and conv states
keep a fixed shape. Their dtypes come from `CacheDtypes`, so the bytes a cache entry
weighs can be read off its tensors.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclasses.dataclass(frozen=True)
class CacheDtypes:
    """Storage dtypes of one model's cache and the dtype it computes in."""

    compute: torch.dtype = torch.float32
    kv: torch.dtype = torch.float32
    state: torch.dtype = torch.float32
    conv: torch.dtype = torch.float32


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Build parameters in `dtype` (torch's default dtype, restored on exit)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (xf * self.weight.float()).to(x.dtype)


def rotary(x: Tensor, positions: Tensor, base: float = 10000.0) -> Tensor:
    """Rotate-half RoPE on the last dim of x [B, H, T, D] at positions [T].

    Computed with broadcasting multiplies (no matmul), so it adds no counted FLOPs.
    """
    d = x.shape[-1]
    half = d // 2
    inv_freq = base ** (-torch.arange(0, half, device=x.device, dtype=torch.float32) / half)
    angles = positions.to(torch.float32)[:, None] * inv_freq[None, :]       # [T, D/2]
    cos, sin = angles.cos(), angles.sin()
    x1, x2 = x[..., :half].float(), x[..., half:2 * half].float()
    rotated = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
    if 2 * half < d:
        rotated = torch.cat([rotated, x[..., 2 * half:].float()], dim=-1)
    return rotated.to(x.dtype)


class CausalConv(nn.Module):
    """Depthwise causal conv1d over time that carries its last `width - 1` inputs as state."""

    def __init__(self, channels: int, width: int, bias: bool = True):
        super().__init__()
        self.channels, self.width = channels, width
        self.weight = nn.Parameter(torch.randn(channels, 1, width) / width)
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None

    def init_state(self, batch: int, device, dtype: torch.dtype) -> Tensor:
        return torch.zeros(batch, self.channels, self.width - 1, device=device, dtype=dtype)

    def forward(self, x: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """x [B, T, C], state [B, C, W-1] -> y [B, T, C], new state [B, C, W-1]."""
        xt = torch.cat([state.to(x.dtype), x.transpose(1, 2)], dim=-1)     # [B, C, W-1+T]
        y = F.conv1d(xt, self.weight.to(x.dtype), self.bias, groups=self.channels)
        new_state = xt[:, :, xt.shape[-1] - (self.width - 1):]
        return y.transpose(1, 2), new_state.to(state.dtype)


def linear(d_in: int, d_out: int, bias: bool = False) -> nn.Linear:
    return nn.Linear(d_in, d_out, bias=bias)

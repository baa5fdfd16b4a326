"""The reference hybrid model built from a `ModelSpec`, with an explicit cache object.

    model = HybridLM(spec)                                  # random weights, float32
    logits, cache = model(prompt_ids)                       # prefill from nothing
    more, cache = model(next_ids, cache)                    # continue after the cached prefix

Continuing after a cached prefix gives the same logits as prefilling the whole sequence
(tests/test_passes_reference.py). The cache holds, per layer, the KV of every cached token
(attention, MLA) or a fixed-size recurrent + conv state, in the dtypes of `CacheDtypes`;
what a cache entry weighs is read off these tensors.

`build_fake(spec)` builds the same model under `FakeTensorMode`: no weights, no memory,
any size. Layers are looked up in `LAYERS` (one class per `LayerKind`).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch
from torch import Tensor, nn
from torch._subclasses.fake_tensor import FakeTensorMode

from marconi.layers import PARAMS, LayerKind, LayerParams
from marconi.passes.ops import install_kernels
from marconi.passes.ref_attention import MLA, Attention
from marconi.passes.ref_common import CacheDtypes, RMSNorm, default_dtype
from marconi.passes.ref_ffn import MLP, MoE
from marconi.passes.ref_recurrent import (GatedDeltaNet, KimiDeltaAttention, LinearAttention,
                                          Mamba1, Mamba2, ShortConv)
from marconi.spec import ModelSpec
from marconi.units import DType

LAYERS: dict[LayerKind, type[nn.Module]] = {
    LayerKind.ATTENTION: Attention,
    LayerKind.MLA: MLA,
    LayerKind.MAMBA1: Mamba1,
    LayerKind.MAMBA2: Mamba2,
    LayerKind.GDN: GatedDeltaNet,
    LayerKind.KDA: KimiDeltaAttention,
    LayerKind.LINEAR_ATTENTION: LinearAttention,
    LayerKind.SHORT_CONV: ShortConv,
    LayerKind.MLP: MLP,
    LayerKind.MOE: MoE,
}


def torch_dtype(dtype: DType) -> torch.dtype:
    return getattr(torch, dtype.torch_name)


def spec_dtypes(spec: ModelSpec) -> CacheDtypes:
    """The dtypes a spec asks for: compute and KV in `dtype`, states in their own dtypes."""
    compute = torch_dtype(spec.dtype)
    if compute.itemsize < 2:        # 8-bit KV: compute in bfloat16, store in 8 bits
        compute = torch.bfloat16
    return CacheDtypes(compute=compute, kv=torch_dtype(spec.dtype),
                       state=torch_dtype(spec.state_dtype), conv=torch_dtype(spec.conv_dtype))


@dataclasses.dataclass(frozen=True)
class HybridCache:
    """Per-layer cache tensors after `length` tokens (one dict per layer, {} for MLP/MoE)."""

    layers: tuple[dict[str, Tensor], ...]
    length: int

    def tensors(self) -> list[tuple[int, str, Tensor]]:
        """(layer index, name, tensor) of every cache tensor, in layer order."""
        return [(i, name, t) for i, layer in enumerate(self.layers)
                for name, t in sorted(layer.items())]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for _, _, t in self.tensors())


class HybridBlock(nn.Module):
    """Pre-norm residual wrapper around one layer."""

    def __init__(self, layer: nn.Module, d_model: int, parallel: bool):
        super().__init__()
        self.norm = RMSNorm(d_model)
        self.mixer = layer
        self.parallel = parallel


class HybridLM(nn.Module):
    """Embedding, the spec's layers (pre-norm residual blocks), final norm, LM head."""

    def __init__(self, spec: ModelSpec, dtypes: CacheDtypes | None = None):
        super().__init__()
        self.spec = spec
        self.dtypes = dtypes or CacheDtypes()
        d = spec.d_model
        self.embed = nn.Embedding(spec.vocab_size, d)
        self.layers = nn.ModuleList(
            HybridBlock(LAYERS[ls.kind](d, ls.params, self.dtypes), d, ls.parallel)
            for ls in spec.layers)
        self.norm = RMSNorm(d)
        self.lm_head = nn.Linear(d, spec.vocab_size, bias=False)

    def new_cache(self, batch: int = 1, device=None) -> HybridCache:
        device = device or self.embed.weight.device
        return HybridCache(tuple(block.mixer.init_state(batch, device)
                                 for block in self.layers), 0)

    def forward(self, input_ids: Tensor, cache: HybridCache | None = None,
                positions: Tensor | None = None) -> tuple[Tensor, HybridCache]:
        """input_ids [B, T] after the cached prefix -> logits [B, T, V], updated cache."""
        if input_ids.is_cuda:
            _serve_scans_with_triton()
        if cache is None:
            cache = self.new_cache(input_ids.shape[0], input_ids.device)
        t = input_ids.shape[1]
        if positions is None:
            positions = torch.arange(cache.length, cache.length + t, device=input_ids.device)
        h = self.embed(input_ids).to(self.dtypes.compute)                     # [B, T, D]
        block_in = h
        states = []
        for block, state in zip(self.layers, cache.layers):
            if not block.parallel:          # a parallel layer reads the previous layer's input
                block_in = h
            out, new_state = block.mixer(block.norm(block_in), state, positions)
            h = h + out
            states.append(new_state)
        logits = self.lm_head(self.norm(h))
        return logits, HybridCache(tuple(states), cache.length + t)


def _serve_scans_with_triton() -> None:
    """On CUDA, run the scan ops on the Triton kernels of `marconi.kernels` (issue 7 §5);
    on CPU the ops keep their eager PyTorch references. Registration is idempotent."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return          # no Triton: the eager references serve CUDA tensors too
    install_kernels("cuda")


def build(spec: ModelSpec, dtypes: CacheDtypes | None = None, seed: int = 0) -> HybridLM:
    """A runnable model with seeded random weights (tiny configs: tests and examples)."""
    torch.manual_seed(seed)
    model = HybridLM(spec, dtypes)
    return model.to(dtypes.compute) if dtypes else model


def build_fake(spec: ModelSpec, dtypes: CacheDtypes,
               mode: FakeTensorMode) -> HybridLM:
    """The model with fake parameters in `dtypes.compute`: shapes only, no memory."""
    with default_dtype(dtypes.compute), mode:
        return HybridLM(spec, dtypes)


# ---------------------------------------------------------------- tiny twins of real specs

_TINY: dict[LayerKind, Callable[[LayerParams], dict]] = {
    LayerKind.ATTENTION: lambda p: {
        "n_heads": 4, "n_kv_heads": 2 if p.n_kv_heads < p.n_heads else 4, "head_dim": 8,
        **({"window": 8} if p.window else {})},
    LayerKind.MLA: lambda p: {
        "n_heads": 2, "kv_lora_rank": 8, "qk_rope_head_dim": 4, "qk_nope_head_dim": 8,
        "v_head_dim": 8, **({"q_lora_rank": 12} if p.q_lora_rank else {})},
    LayerKind.MAMBA1: lambda p: {"d_state": 4, "expand": 2, "d_conv": p.d_conv, "dt_rank": 4},
    LayerKind.MAMBA2: lambda p: {"d_state": 8, "head_dim": 8, "n_heads": 8,
                                 "n_groups": 2 if p.n_groups > 1 else 1, "d_conv": p.d_conv},
    LayerKind.GDN: lambda p: {"n_k_heads": 2, "n_v_heads": 4 if p.n_v_heads > p.n_k_heads
                              else 2, "head_k_dim": 8, "head_v_dim": 8, "d_conv": p.d_conv},
    LayerKind.KDA: lambda p: {"n_heads": 2, "head_dim": 8, "d_conv": p.d_conv},
    LayerKind.LINEAR_ATTENTION: lambda p: {"n_heads": 2, "head_dim": 8, "d_conv": p.d_conv},
    LayerKind.SHORT_CONV: lambda p: {"d_conv": p.d_conv},
    LayerKind.MLP: lambda p: {"d_ff": 64, "gated": p.gated},
    LayerKind.MOE: lambda p: {"n_experts": 4, "top_k": min(2, p.top_k), "d_ff_expert": 16,
                              "n_shared_experts": min(1, p.n_shared_experts),
                              "gated": p.gated},
}


def tiny_spec(spec: ModelSpec, d_model: int = 32, vocab_size: int = 64) -> ModelSpec:
    """A runnable twin of `spec`: the same layer kinds, order, options (GQA, windows,
    gating, groups, conv widths) and dtypes, with tiny dimensions."""
    layers = tuple(
        dataclasses.replace(ls, params=PARAMS[ls.kind].parse(
            _TINY[ls.kind](ls.params), d_model, f"tiny.layers[{ls.index}]"))
        for ls in spec.layers)
    return dataclasses.replace(spec, name=f"{spec.name}-tiny", d_model=d_model,
                               vocab_size=vocab_size, layers=layers, path="")

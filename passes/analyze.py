"""`build_cost_model`: from a ModelSpec or HFConfig to a CostModel, without memory.

Steps for a `model.yaml` spec:

1. build the reference model (`passes.reference_model`) under `FakeTensorMode`;
2. sizes: run fake prefills of a few lengths and read the bytes of the cache tensors the
   model returns (`passes.state_size`);
3. FLOPs: count a prefill of n tokens after a p-token cache at the points of
   `passes.fit` with `FlopCounterMode`, per layer, and solve for the exact polynomial.

Hugging Face configs go through `passes.hf`, which builds the transformers model on the
meta device and feeds the same two measurements.
"""

from __future__ import annotations

import logging
from typing import Iterable

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.flop_counter import FlopCounterMode

from marconi.errors import SpecError, UnsupportedModelError
from marconi.layers import LayerKind
from marconi.passes.cost_model import CostModel, LayerCost
from marconi.passes.fit import FitError, fit_many
from marconi.passes.layout import get_layout
from marconi.passes.ops import register_cpu_sdpa_formula
from marconi.passes.reference_model import HybridCache, HybridLM, build_fake, spec_dtypes
from marconi.passes.state_size import CacheTensor, LayerSizes, measure_sizes
from marconi.spec import HFConfig, ModelSpec
from marconi.units import DType

log = logging.getLogger(__name__)

_KV_NAMES = ("k", "v", "c_kv", "k_rope")


def build_cost_model(source: ModelSpec | HFConfig, dtype: DType | None = None,
                     state_dtype: DType | None = None, layout: str = "model") -> CostModel:
    """CostModel of `source` at the given storage dtypes and cache layout."""
    register_cpu_sdpa_formula()
    if isinstance(source, HFConfig):
        from marconi.passes.hf import build_hf_cost_model
        return build_hf_cost_model(source, dtype=dtype, state_dtype=state_dtype, layout=layout)
    if not isinstance(source, ModelSpec):
        raise SpecError("model", f"expected a ModelSpec or HFConfig, got "
                        f"{type(source).__name__}")
    spec = source.with_dtypes(dtype, state_dtype)
    runner = ReferenceRunner(spec)
    where = spec.path or spec.name
    sizes = measure_sizes(runner.cache_tensors, get_layout(layout), where)
    flops = fit_layer_flops(runner.layer_flops, where)
    layers = tuple(_layer_cost(i, ls.kind, ls.params, sizes.get(i, LayerSizes()),
                               flops.get(runner.layer_name(i)))
                   for i, ls in enumerate(spec.layers))
    return CostModel(model=spec.name, dtype=spec.dtype.value,
                     state_dtype=spec.state_dtype.value, layers=layers,
                     conv_dtype=spec.conv_dtype.value, layout=layout,
                     source_fingerprint=spec.fingerprint())


def fit_layer_flops(evaluate, where: str):
    try:
        return fit_many(evaluate)
    except FitError as e:
        raise UnsupportedModelError(where, f"prefill FLOPs are not a polynomial of degree "
                                    f"<= 2 in (new, cached) tokens: {e}") from e


class ReferenceRunner:
    """Fake prefills of the reference model: cache tensors and per-layer FLOP counts."""

    def __init__(self, spec: ModelSpec):
        self.spec = spec
        self.mode = FakeTensorMode()
        self.model: HybridLM = build_fake(spec, spec_dtypes(spec), self.mode)

    def layer_name(self, index: int) -> str:
        return f"layers.{index}.mixer"

    def cache_after(self, length: int) -> HybridCache:
        with self.mode:
            if length == 0:
                return self.model.new_cache(1)
            return self.model(torch.zeros(1, length, dtype=torch.long))[1]

    def cache_tensors(self, length: int) -> Iterable[CacheTensor]:
        cache = self.cache_after(length)
        for layer, name, tensor in cache.tensors():
            mixer = self.model.layers[layer].mixer
            role = "kv" if name in _KV_NAMES else ("conv" if name == "conv" else "recurrent")
            kernel = mixer.conv.width if role == "conv" else 0
            yield CacheTensor(layer, name, role, tensor, kernel)

    def layer_flops(self, n: int, p: int) -> dict[str, int]:
        """FLOPs of each layer for a prefill of n tokens after p cached ones."""
        cache = self.cache_after(p)
        with self.mode, FlopCounterMode(display=False) as counter:
            self.model(torch.zeros(1, n, dtype=torch.long), cache)
        prefix = type(self.model).__name__ + "."
        counts = counter.get_flop_counts()
        out = {}
        for i in range(len(self.model.layers)):
            name = self.layer_name(i)
            out[name] = int(sum(counts.get(prefix + name, {}).values()))
        return out


def _layer_cost(index: int, kind: LayerKind, params, sizes: LayerSizes, flops) -> LayerCost:
    label = kind.value
    if kind is LayerKind.ATTENTION and sizes.window:
        label = "sliding_attention"
    if sizes.window and flops.c_np != 2 * flops.c_nn:
        # LayerCost.prefill_flops caps score entries; that needs the quadratic part to be
        # exactly c·(n·p + n²/2), i.e. to come from causal score entries alone
        raise UnsupportedModelError(f"layers[{index}]", "sliding-window layer whose quadratic "
                                    "FLOPs are not causal score entries; expected c_np = 2·c_nn")
    return LayerCost(index=index, kind=kind, name=f"layers.{index}.mixer",
                     kv_bytes_per_token=sizes.kv_bytes_per_token,
                     recurrent_state_bytes=sizes.recurrent_state_bytes,
                     conv_state_bytes=sizes.conv_state_bytes, window=sizes.window,
                     flops=flops, label=label)

"""`build_cost_model`: from a ModelSpec or HFConfig to a CostModel, without memory.

For a `model.yaml` spec (the graph route):

1. build each distinct layer of the reference model (`passes.reference_model`) on the
   meta device and trace it with `torch.export`, token and cache lengths dynamic
   (`passes.trace`); identical layers share one trace;
2. run the graph passes (`passes.graph_passes`): classify the layer from its ops, read
   cache sizes off the symbolic shapes of its cache inputs, count FLOPs node by node at
   sample (n, p) points and solve for the exact polynomial (`passes.fit`).

`ReferenceRunner` is the slow, obviously-correct route beside it: fake prefills of the
whole model, the bytes of the cache tensors it returns and `FlopCounterMode` per module.
The tests check that both routes agree exactly.

Hugging Face configs go through `passes.hf`.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Iterable

import torch
from torch.utils.flop_counter import FlopCounterMode

from marconi.errors import SpecError, UnsupportedModelError
from marconi.layers import LayerKind, show_int
from marconi.passes.cost_model import CostModel, LayerCost
from marconi.passes.fit import FitError, fit_many
from marconi.passes.hf import build_hf_cost_model
from marconi.passes.layer_analysis import LayerAnalysis, analyze_layer, layer_cost
from marconi.passes.layout import Layout, get_layout
from marconi.passes.ops import register_cpu_sdpa_formula
from marconi.passes.reference_model import LAYERS, HybridCache, HybridLM, spec_dtypes
from marconi.passes.ref_common import CacheDtypes, default_dtype
from marconi.passes.state_size import CacheTensor, LayerSizes, measure_sizes
from marconi.passes.trace import trace_layer
from marconi.spec import HFConfig, LayerSpec, ModelSpec
from marconi.units import DType, format_bytes

log = logging.getLogger(__name__)

_KV_NAMES = ("k", "v", "c_kv", "k_rope")
MAX_CHECKPOINT_BYTES = 2**40       # 1 TiB


def build_cost_model(source: ModelSpec | HFConfig, dtype: DType | None = None,
                     state_dtype: DType | None = None, layout: str = "model") -> CostModel:
    """CostModel of `source` at the given storage dtypes and cache layout (refused above
    1 TiB per checkpoint: `check_sizes`)."""
    register_cpu_sdpa_formula()
    if isinstance(source, HFConfig):
        cost = build_hf_cost_model(source, dtype=dtype, state_dtype=state_dtype, layout=layout)
        check_sizes(cost, lambda layer: (f"{source.path or source.name}: {layer.name}", ""))
    elif isinstance(source, ModelSpec):
        cost = _spec_cost_model(source, dtype, state_dtype, layout)
        check_sizes(cost, lambda layer: _spec_field(source, source.layers[layer.index]))
    else:
        raise SpecError("model", f"expected a ModelSpec or HFConfig, got "
                        f"{type(source).__name__}")
    return cost


def _spec_cost_model(source: ModelSpec, dtype: DType | None, state_dtype: DType | None,
                     layout: str) -> CostModel:
    spec = source.with_dtypes(dtype, state_dtype)
    lay = get_layout(layout)
    where = spec.path or spec.name
    analyses = analyze_spec_layers(spec, where)
    layers = tuple(_layer_cost(ls, analyses[(ls.kind, ls.params)], lay)
                   for ls in spec.layers)
    return CostModel(model=spec.name, dtype=spec.dtype.value,
                     state_dtype=spec.state_dtype.value, layers=layers,
                     conv_dtype=spec.conv_dtype.value, layout=layout,
                     source_fingerprint=spec.fingerprint())


def check_sizes(cost: CostModel, culprit) -> None:
    """Refuse a model whose one checkpoint, or one token's KV, is above 1 TiB.

    Real hybrids hold well under 1 GiB per checkpoint; past 1 TiB a dimension is a typo,
    and the planner's int64 byte counts would overflow on it. `culprit(layer)` gives the
    (where, value) an error names for the layer holding the most.
    """
    for what, total, of_layer in (
            ("one checkpoint holds", cost.state_bytes(), lambda l: l.state_bytes),
            ("one token's KV is", cost.kv_bytes_per_token, lambda l: l.kv_bytes_per_token)):
        if total > MAX_CHECKPOINT_BYTES:
            where, value = culprit(max(cost.layers, key=of_layer))
            raise SpecError(where, f"{value}{what} {format_bytes(total)}; expected at "
                            f"most {format_bytes(MAX_CHECKPOINT_BYTES)}")


def _spec_field(spec: ModelSpec, layer: LayerSpec) -> tuple[str, str]:
    """The block field an error names for a layer: its largest dimension, the one a typo
    most likely inflated (`model.yaml: blocks.M.d_state`)."""
    fields = {k: v for k, v in dataclasses.asdict(layer.params).items()
              if isinstance(v, int) and not isinstance(v, bool)}
    name = max(fields, key=fields.get)
    entry = f"blocks.{layer.block}" if layer.block is not None else f"layers[{layer.index}]"
    file = Path(spec.path).name if spec.path else spec.name
    return f"{file}: {entry}.{name}", f"{show_int(fields[name])}; "


def analyze_spec_layers(spec: ModelSpec, where: str) -> dict[tuple, LayerAnalysis]:
    """Trace and analyse each distinct (kind, params) layer of `spec` once."""
    dtypes = spec_dtypes(spec)
    out: dict[tuple, LayerAnalysis] = {}
    for ls in spec.layers:
        key = (ls.kind, ls.params)
        if key not in out:
            layer_where = f"{where}: layers[{ls.index}] ({ls.kind.value})"
            out[key] = analyze_block(ls.kind, ls.params, spec.d_model, dtypes, layer_where)
    return out


_BLOCKS: dict[tuple, LayerAnalysis] = {}


def analyze_block(kind: LayerKind, params, d_model: int, dtypes: CacheDtypes,
                  where: str) -> LayerAnalysis:
    """Trace one reference layer and run the graph passes over it.

    A pure function of frozen inputs, memoised per process: specs that share a block (and
    the tests, which analyse many specs) trace it once.
    """
    key = (kind, params, d_model, dtypes)
    if key in _BLOCKS:
        return _BLOCKS[key]
    layer = build_meta_layer(LayerSpec(0, kind, params), d_model, dtypes)
    analysis = analyze_layer(trace_layer(layer, d_model, dtypes.compute, where), where)
    if analysis.classification.kind is not kind:
        raise UnsupportedModelError(where, f"the traced graph classifies as "
                                    f"{analysis.classification.kind.value}")
    log.debug("%s: %s", where, analysis)
    _BLOCKS[key] = analysis
    return analysis


def build_meta_layer(ls: LayerSpec, d_model: int, dtypes: CacheDtypes) -> torch.nn.Module:
    with default_dtype(dtypes.compute), torch.device("meta"):
        return LAYERS[ls.kind](d_model, ls.params, dtypes)


def reference_cost_model(spec: ModelSpec, layout: str = "model") -> CostModel:
    """The same CostModel by the slow route: whole-model fake prefills (`ReferenceRunner`)."""
    register_cpu_sdpa_formula()
    runner = ReferenceRunner(spec)
    where = spec.path or spec.name
    sizes = measure_sizes(runner.cache_tensors, get_layout(layout), where)
    flops = fit_layer_flops(runner.layer_flops, where)
    layers = []
    for ls in spec.layers:
        size = sizes.get(ls.index, LayerSizes())
        label = "sliding_attention" if ls.kind is LayerKind.ATTENTION and size.window \
            else ls.kind.value
        layers.append(layer_cost(ls.index, ls.kind, label, runner.layer_name(ls.index), size,
                                 flops[runner.layer_name(ls.index)]))
    return CostModel(model=spec.name, dtype=spec.dtype.value,
                     state_dtype=spec.state_dtype.value, layers=tuple(layers),
                     conv_dtype=spec.conv_dtype.value, layout=layout,
                     source_fingerprint=spec.fingerprint())


def fit_layer_flops(evaluate, where: str):
    try:
        return fit_many(evaluate)
    except FitError as e:
        raise UnsupportedModelError(where, f"prefill FLOPs are not a polynomial of degree "
                                    f"<= 2 in (new, cached) tokens: {e}") from e


class ReferenceRunner:
    """Whole-model prefills on the meta device: cache tensors and per-layer FLOP counts."""

    def __init__(self, spec: ModelSpec):
        self.spec = spec
        dtypes = spec_dtypes(spec)
        with default_dtype(dtypes.compute), torch.device("meta"):
            self.model = HybridLM(spec, dtypes)

    def layer_name(self, index: int) -> str:
        return f"layers.{index}.mixer"

    def cache_after(self, length: int) -> HybridCache:
        if length == 0:
            return self.model.new_cache(1, "meta")
        return self.model(torch.zeros(1, length, dtype=torch.long, device="meta"))[1]

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
        with FlopCounterMode(display=False) as counter:
            self.model(torch.zeros(1, n, dtype=torch.long, device="meta"), cache)
        prefix = type(self.model).__name__ + "."
        counts = counter.get_flop_counts()
        out = {}
        for i in range(len(self.model.layers)):
            name = self.layer_name(i)
            out[name] = int(sum(counts.get(prefix + name, {}).values()))
        return out


def _layer_cost(ls: LayerSpec, analysis: LayerAnalysis, layout: Layout) -> LayerCost:
    sizes = analysis.sizes(layout)
    return layer_cost(ls.index, analysis.classification.kind, analysis.classification.label,
                      f"layers.{ls.index}.mixer", sizes, analysis.flops)

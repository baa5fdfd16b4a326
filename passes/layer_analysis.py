"""One traced layer → kind, cache sizes and exact FLOP polynomial (the graph route).

Runs the passes of `passes.graph_passes` over a `TracedLayer`: classification, state
annotation, then the FLOP interpreter at the sample points of `passes.fit`. `layer_cost`
turns one layer's sizes and FLOPs into its `LayerCost` (both routes: spec and HF).
"""

from __future__ import annotations

import dataclasses

from marconi.errors import UnsupportedModelError
from marconi.layers import LayerKind
from marconi.passes.cost_model import FlopPoly, LayerCost
from marconi.passes.fit import CHECK_POINTS, FIT_POINTS, FitError, fit_poly, fit_windowed
from marconi.passes.graph_passes import (Classification, StateInfo, annotate_state,
                                         classify_layer, count_flops)
from marconi.passes.layout import Layout
from marconi.passes.state_size import LayerSizes
from marconi.passes.trace import TracedLayer


@dataclasses.dataclass(frozen=True)
class LayerAnalysis:
    classification: Classification
    states: tuple[StateInfo, ...]
    flops: FlopPoly

    def sizes(self, layout: Layout) -> LayerSizes:
        """Cache sizes of this layer, conv state re-sized to `layout`'s column count."""
        kv = [s for s in self.states if s.role == "kv"]
        windows = [s.window for s in kv if s.window]
        recurrent = sum(s.fixed_bytes for s in self.states if s.role == "recurrent")
        conv = 0
        for s in (s for s in self.states if s.role == "conv"):
            if s.conv_columns:
                width = layout.conv_width(s.conv_columns, s.conv_kernel)
                conv += s.fixed_bytes // s.conv_columns * width
            else:
                conv += s.fixed_bytes
        return LayerSizes(sum(s.bytes_per_token for s in kv), recurrent, conv,
                          max(windows) if windows else None)


def analyze_layer(traced: TracedLayer, where: str) -> LayerAnalysis:
    gm = traced.graph_module
    kind = classify_layer(gm, len(traced.state_names), where)
    states = annotate_state(gm, traced.state_names, traced.growing, where)
    samples = {pt: count_flops(gm, traced.inputs(*pt)) for pt in FIT_POINTS + CHECK_POINTS}
    try:
        flops = fit_windowed(samples, kind.window) if kind.window else fit_poly(samples)
    except FitError as e:
        raise UnsupportedModelError(where, f"prefill FLOPs are not a polynomial of degree "
                                    f"<= 2 in (new, cached) tokens: {e}") from e
    analysis = LayerAnalysis(kind, tuple(states[k] for k in traced.state_names), flops)
    held = [s.window for s in analysis.states if s.role == "kv"]
    if kind.window and any(h != kind.window - 1 for h in held):
        # LayerCost.window is the KV tokens held; its FLOP cap assumes span = held + 1
        raise UnsupportedModelError(where, f"sliding window of {kind.window} keys but the "
                                    f"cache holds {held} tokens; expected {kind.window - 1}")
    return analysis


def layer_cost(index: int, kind: LayerKind, label: str, name: str, sizes: LayerSizes,
               flops) -> LayerCost:
    if sizes.window and flops.c_np != 2 * flops.c_nn:
        # LayerCost.prefill_flops caps score entries; that needs the quadratic part to be
        # exactly c·(n·p + n²/2), i.e. to come from causal score entries alone
        raise UnsupportedModelError(f"layers[{index}]", "sliding-window layer whose quadratic "
                                    "FLOPs are not causal score entries; expected c_np = 2·c_nn")
    return LayerCost(index=index, kind=kind, name=name,
                     kv_bytes_per_token=sizes.kv_bytes_per_token,
                     recurrent_state_bytes=sizes.recurrent_state_bytes,
                     conv_state_bytes=sizes.conv_state_bytes, window=sizes.window,
                     flops=flops, label=label)

"""Model variants of the paper's microbenchmarks, derived in code from a base ModelSpec.

Marconi's Fig. 12 (background/marconi.md §6.3) varies the 7B hybrid in two ways:

- layer mix (Fig. 12a): (SSM, attention) layer counts (32, 4), (30, 5), (28, 7), (24, 12)
  and (0, 36), i.e. Attention:SSM 1:8, 1:6, 1:4, 1:2 and a pure Transformer;
- state size (Fig. 12b): the SSM state dimension d_state 128, 64, 32, 16.

Each variant is a frozen `ModelSpec` copy of the base: same layer parameters, only the
counts (layer mix) or `d_state` (state size) changed. In a layer-mix variant the layers
come in groups of (k recurrent, 1 attention), each mixer followed by one MLP, as in the
7B spec (24 Mamba2 + 4 attention + 28 MLP); neither state bytes nor prefill FLOPs depend
on the order.
"""

from __future__ import annotations

import dataclasses

from marconi.layers import LayerKind
from marconi.spec import LayerSpec, ModelSpec

# (recurrent layers, attention layers) of Fig. 12a, most recurrent first
LAYER_MIXES: tuple[tuple[int, int], ...] = ((32, 4), (30, 5), (28, 7), (24, 12), (0, 36))
D_STATES: tuple[int, ...] = (16, 32, 64, 128)


def mix_label(n_recurrent: int, n_attention: int) -> str:
    if n_recurrent == 0:
        return "Transformer"
    return f"1:{n_recurrent // n_attention}"


def _first(spec: ModelSpec, pred) -> LayerSpec:
    for layer in spec.layers:
        if pred(layer):
            return layer
    raise ValueError(f"{spec.name}: no layer matches")


def layer_mix_variant(base: ModelSpec, n_recurrent: int, n_attention: int) -> ModelSpec:
    """`base` with `n_recurrent` recurrent and `n_attention` attention layers.

    The recurrent, attention and MLP layers are copies of the base's first of each kind.
    """
    if n_attention < 1 or (n_recurrent and n_recurrent % n_attention):
        raise ValueError(f"({n_recurrent}, {n_attention}): expected a whole number of "
                         "recurrent layers per attention layer")
    recurrent = _first(base, lambda ls: ls.kind.is_recurrent)
    attention = _first(base, lambda ls: ls.kind is LayerKind.ATTENTION)
    mlp = _first(base, lambda ls: ls.kind in (LayerKind.MLP, LayerKind.MOE))
    per_group = n_recurrent // n_attention
    order: list[LayerSpec] = []
    for _ in range(n_attention):
        for mixer in [recurrent] * per_group + [attention]:
            order += [mixer, mlp]
    layers = tuple(dataclasses.replace(ls, index=i) for i, ls in enumerate(order))
    return dataclasses.replace(
        base, name=f"{base.name}-{n_recurrent}r{n_attention}a", layers=layers, path="",
        source=f"derived from {base.name}: {n_recurrent} {recurrent.kind.value} + "
               f"{n_attention} attention + {len(layers) // 2} {mlp.kind.value} layers "
               "(Marconi Fig. 12a)")


def d_state_variant(base: ModelSpec, d_state: int) -> ModelSpec:
    """`base` with every recurrent layer's `d_state` set to `d_state`."""
    layers = []
    changed = 0
    for ls in base.layers:
        fields = {f.name for f in dataclasses.fields(ls.params)}
        if ls.kind.is_recurrent and "d_state" in fields:
            ls = dataclasses.replace(ls, params=dataclasses.replace(ls.params, d_state=d_state))
            changed += 1
        layers.append(ls)
    if not changed:
        raise ValueError(f"{base.name}: no recurrent layer has a d_state")
    return dataclasses.replace(
        base, name=f"{base.name}-dstate{d_state}", layers=tuple(layers), path="",
        source=f"derived from {base.name}: d_state {d_state} (Marconi Fig. 12b)")

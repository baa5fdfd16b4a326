"""Trace one layer with `torch.export` on the meta device, sequence dims dynamic.

A layer is traced as the call `(x [1, T, D], positions [T], state tensors) -> (y, new
state tensors)`: T (new tokens) and the length of every cache tensor that grows with the
sequence are dynamic dims, so one graph covers every (n, p). Identical layers (same kind
and parameters) share one trace.

The exported graph module keeps `meta['val']` (fake tensors with symbolic shapes) and
`nn_module_stack` on every node; `passes.graph_passes` reads them.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn
from torch.export import Dim, export

from marconi.errors import UnsupportedModelError

EXAMPLE_TOKENS = 3      # example n and p for tracing; dynamic dims start at 2


@dataclasses.dataclass(frozen=True)
class TracedLayer:
    """The exported graph of one layer and how its inputs are laid out."""

    graph_module: torch.fx.GraphModule
    layer: nn.Module                 # the meta-device module that was traced
    state_names: tuple[str, ...]     # cache tensor names, in input/output order
    growing: frozenset[str]          # names of cache tensors traced with a dynamic length
    d_model: int
    dtype: torch.dtype               # compute dtype of the activations
    _states: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

    def inputs(self, n: int, p: int) -> list[Tensor]:
        """Meta inputs for n new tokens after a p-token cache built by the layer itself."""
        if p not in self._states:
            self._states[p] = prefill_state(self.layer, self.d_model, self.dtype, p)
        state = self._states[p]
        x = torch.zeros(1, n, self.d_model, device="meta", dtype=self.dtype)
        positions = torch.arange(p, p + n, device="meta")
        return [x, positions, *(state[k] for k in self.state_names)]


class _LayerCall(nn.Module):
    def __init__(self, layer: nn.Module, names: tuple[str, ...]):
        super().__init__()
        self.layer, self.names = layer, names

    def forward(self, x: Tensor, positions: Tensor, state: list[Tensor]):
        y, new = self.layer(x, dict(zip(self.names, state)), positions)
        return (y, *(new[k] for k in self.names))


def prefill_state(layer: nn.Module, d_model: int, dtype: torch.dtype,
                  length: int) -> dict[str, Tensor]:
    """The layer's cache entry after prefilling `length` tokens (meta tensors)."""
    state = layer.init_state(1, "meta")
    if length == 0:
        return state
    x = torch.zeros(1, length, d_model, device="meta", dtype=dtype)
    return layer(x, state, torch.arange(length, device="meta"))[1]


def trace_layer(layer: nn.Module, d_model: int, dtype: torch.dtype, where: str) -> TracedLayer:
    """Export `layer` (built on the meta device) with dynamic token and cache lengths."""
    names = tuple(sorted(layer.init_state(1, "meta")))
    # growth is read between 1 and 2 cached tokens, below any sliding window of >= 3
    short = prefill_state(layer, d_model, dtype, 1)
    longer = prefill_state(layer, d_model, dtype, 2)
    state = prefill_state(layer, d_model, dtype, EXAMPLE_TOKENS)
    n = Dim("n", min=2)
    state_dims, growing, lengths = [], set(), {}
    for name in names:
        grown = [i for i, (a, b) in enumerate(zip(short[name].shape, longer[name].shape))
                 if a != b]
        if len(grown) > 1:
            raise UnsupportedModelError(where, f"cache tensor {name!r} grows in more than "
                                        "one dim; expected a single sequence dim")
        if grown:
            # tensors that track the same cached length share one dim
            growing.add(name)
            length = (short[name].shape[grown[0]], state[name].shape[grown[0]])
            dim = lengths.setdefault(length, Dim(f"cached_{len(lengths)}", min=2))
            state_dims.append({grown[0]: dim})
        else:
            state_dims.append(None)
    x = torch.zeros(1, EXAMPLE_TOKENS, d_model, device="meta", dtype=dtype)
    positions = torch.arange(EXAMPLE_TOKENS, device="meta")
    args = (x, positions, [state[k] for k in names])
    try:
        program = export(_LayerCall(layer, names), args,
                         dynamic_shapes=({1: n}, {0: n}, state_dims))
    except Exception as e:  # export raises many types; name the layer, keep the cause
        raise UnsupportedModelError(where, f"torch.export failed: {type(e).__name__}: "
                                    f"{str(e).splitlines()[0]}") from e
    return TracedLayer(program.module(), layer, names, frozenset(growing), d_model, dtype)

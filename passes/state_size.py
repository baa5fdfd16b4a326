"""Per-layer cache sizes read off the tensors a model's cache holds at several lengths.

A tensor whose bytes grow with the number of cached tokens is KV (bytes per token = the
slope; a sliding window shows as a cap at a long length); a tensor of constant size is a
fixed state, recurrent or conv by the role its cache gives it. Nothing here knows a layer
formula: the sizes are whatever the model's cache allocates.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterable

from torch import Tensor

from marconi.errors import UnsupportedModelError
from marconi.passes.layout import Layout

ROLES = ("kv", "recurrent", "conv")

# lengths at which the cache is sampled: two short ones for the slope (below any sliding
# window of 3 or more tokens), one long one that shows window caps
SHORT_LENGTHS = (1, 2)
LONG_LENGTH = 1 << 20


@dataclasses.dataclass(frozen=True)
class CacheTensor:
    """One tensor of one layer's cache entry."""

    layer: int
    name: str
    role: str                  # one of ROLES
    tensor: Tensor
    conv_kernel: int = 0       # taps of the conv this state feeds (role "conv")

    @property
    def nbytes(self) -> int:
        return self.tensor.numel() * self.tensor.element_size()


@dataclasses.dataclass(frozen=True)
class LayerSizes:
    kv_bytes_per_token: int = 0
    recurrent_state_bytes: int = 0
    conv_state_bytes: int = 0
    window: int | None = None


def measure_sizes(cache_at: Callable[[int], Iterable[CacheTensor]], layout: Layout,
                  where: str) -> dict[int, LayerSizes]:
    """Sizes per layer from the cache after SHORT_LENGTHS and LONG_LENGTH tokens."""
    samples = {length: {(c.layer, c.name): c for c in cache_at(length)}
               for length in (*SHORT_LENGTHS, LONG_LENGTH)}
    short_a, short_b = (samples[length] for length in SHORT_LENGTHS)
    if set(short_a) != set(short_b) or set(short_a) != set(samples[LONG_LENGTH]):
        raise UnsupportedModelError(where, "the cache holds different tensors at different "
                                    "lengths; expected one fixed set of tensors per layer")
    acc: dict[int, dict] = {}
    for key, a in short_a.items():
        b, big = short_b[key], samples[LONG_LENGTH][key]
        entry = acc.setdefault(a.layer, {"kv": 0, "recurrent": 0, "conv": 0, "window": None})
        growth = b.nbytes - a.nbytes
        if growth:
            if a.role != "kv":
                raise UnsupportedModelError(
                    where, f"layer {a.layer} cache tensor {a.name!r} ({a.role}) grows with the "
                    f"sequence; expected a fixed-size state")
            per_token, rem = divmod(growth, SHORT_LENGTHS[1] - SHORT_LENGTHS[0])
            if rem:
                raise UnsupportedModelError(where, f"layer {a.layer} cache tensor {a.name!r} "
                                            f"grows by a fractional number of bytes per token")
            entry["kv"] += per_token
            held = big.nbytes // per_token
            if held < LONG_LENGTH:
                entry["window"] = max(entry["window"] or 0, held)
        elif a.role == "conv":
            entry["conv"] += _conv_bytes(a, layout)
        elif a.role == "recurrent":
            entry["recurrent"] += a.nbytes
        elif a.nbytes:
            # a KV tensor that does not grow (e.g. an unused slot): no bytes per token
            raise UnsupportedModelError(where, f"layer {a.layer} KV tensor {a.name!r} does "
                                        f"not grow with the sequence")
    return {layer: LayerSizes(e["kv"], e["recurrent"], e["conv"], e["window"])
            for layer, e in acc.items()}


def _conv_bytes(c: CacheTensor, layout: Layout) -> int:
    """Bytes of a conv state [B, C, columns] under `layout` (columns re-sized from the kernel)."""
    columns = c.tensor.shape[-1]
    if layout.conv_columns == "model" or columns == 0:
        return c.nbytes
    if not c.conv_kernel:
        raise UnsupportedModelError(f"layer {c.layer}", f"conv state {c.name!r} has no known "
                                    "kernel width; cannot apply an engine layout")
    return c.nbytes // columns * layout.conv_width(columns, c.conv_kernel)

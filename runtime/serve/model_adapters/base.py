"""What the wrapper needs from a model family: run it, and read or rebuild its cache.

A `ModelAdapter` hides one family's cache object (our `HybridCache`, transformers'
`DynamicCache`) behind four operations on a batch-1 *working cache*:

    cache = adapter.new_cache()                       # empty
    logits, cache = adapter.forward(ids, cache)       # ids [1, T] -> logits [1, T, V]
    adapter.kv(cache)        -> [Tensor [S, *row]]   # every KV tensor, token-major views
    adapter.states(cache)    -> [Tensor [1, *shape]] # every fixed-size state (recurrent, conv)
    cache = adapter.restore(kv, states, length)       # rebuild a working cache at `length`

`layout()` lists the tensors (`TensorSpec`, in the order of `kv()` and `states()`), read off
the cache the model itself allocates after one token, so the pools hold exactly what the
model's cache holds (and what `passes.build_cost_model` measures in the "model" layout).

`continues_prefill` says whether a forward of several tokens after a restored state is
exact. It is not for transformers' Jamba: its CPU scan starts from a zero state whenever
more than one token is fed (`mamba_selective_scan`, "Initial hidden state is not
supported"), so after a hit the wrapper feeds that family one token at a time.
"""

from __future__ import annotations

import abc
import dataclasses
import math

import torch
from torch import Tensor

from marconi.errors import UnsupportedModelError
from marconi.passes import build_cost_model
from marconi.passes.cost_model import CostModel
from marconi.spec import HFConfig, ModelSpec
from marconi.units import DType

ROLES = ("kv", "recurrent", "conv")


def storage_dtype(dtype: torch.dtype) -> DType:
    """The `DType` of a torch storage dtype (float8 variants map to FLOAT8)."""
    for d in DType:
        if getattr(torch, d.torch_name, None) == dtype:
            return d
    if "float8" in str(dtype):
        return DType.FLOAT8
    raise UnsupportedModelError("model", f"cache dtype {dtype}; expected one of "
                                f"{', '.join(d.value for d in DType)} (cast the model, e.g. "
                                "model.bfloat16())")


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One cache tensor of one layer.

    `row` is its shape without the batch (and, for KV, without the sequence) dimension:
    KV bytes per token or a state's bytes per sequence are `prod(row) * itemsize`.
    """

    layer: int
    name: str
    role: str                    # one of ROLES
    row: tuple[int, ...]
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        return math.prod(self.row) * self.dtype.itemsize


@dataclasses.dataclass(frozen=True)
class CacheLayout:
    kv: tuple[TensorSpec, ...]
    states: tuple[TensorSpec, ...]

    @property
    def kv_bytes_per_token(self) -> int:
        return sum(s.nbytes for s in self.kv)

    @property
    def state_bytes(self) -> int:
        return sum(s.nbytes for s in self.states)


class ModelAdapter(abc.ABC):
    """One model family. Subclasses register in `marconi.runtime.serve.model_adapters.ADAPTERS`."""

    family: str = ""
    continues_prefill: bool = True

    def __init__(self, model: torch.nn.Module):
        self.model = model

    @classmethod
    @abc.abstractmethod
    def matches(cls, model: torch.nn.Module) -> bool:
        """Whether this adapter serves `model`."""

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def vocab_size(self) -> int:
        """Input ids the model embeds: 0 … vocab_size − 1."""
        return self.model.get_input_embeddings().num_embeddings

    @abc.abstractmethod
    def source(self) -> ModelSpec | HFConfig:
        """The spec or config `passes.build_cost_model` analyses for this model, with the
        storage dtypes this model's cache really uses."""

    def cost_model(self) -> CostModel:
        """CostModel of this model in its own cache layout (sizes equal `layout()`)."""
        return build_cost_model(self.source(), layout="model")

    @abc.abstractmethod
    def new_cache(self):
        """An empty batch-1 working cache."""

    @abc.abstractmethod
    def forward(self, ids: Tensor, cache) -> tuple[Tensor, object]:
        """ids [1, T] after the cache's tokens -> logits [1, T, V] (float32), updated cache."""

    @abc.abstractmethod
    def kv(self, cache) -> list[Tensor]:
        """KV tensors of the working cache as [S, *row] views, in `layout().kv` order."""

    @abc.abstractmethod
    def states(self, cache) -> list[Tensor]:
        """Fixed-size states of the working cache, [1, *row] each, in `layout().states` order."""

    @abc.abstractmethod
    def restore(self, kv: list[Tensor], states: list[Tensor] | None, length: int):
        """A working cache after `length` tokens: kv [length, *row] each, states [1, *row]
        each (None only for length 0). The cache owns its tensors (no aliasing)."""

    @abc.abstractmethod
    def layout(self) -> CacheLayout:
        """The cache tensors this model keeps (shapes and dtypes, no data)."""

    def check_supported(self) -> None:
        """Raise UnsupportedModelError for a model this adapter recognises but cannot serve."""

    def generation_settings(self) -> dict:
        """The generation settings the model carries (transformers' `generation_config`: the
        fields it sets), read by `CachedModel.generate` as transformers reads them: a call's
        arguments override them one by one. Empty for a model that carries none."""
        return {}

    @property
    def max_positions(self) -> int | None:
        """The longest sequence the model's config allows (caps the default new-token
        budget, as transformers caps it), or None."""
        return None

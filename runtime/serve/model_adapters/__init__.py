"""Model families the wrapper can serve, each behind a `ModelAdapter` (see base.py).

`adapter_for(model)` picks the first registered adapter that matches, in `ADAPTERS` order.
"""

from __future__ import annotations

from marconi.errors import UnsupportedModelError
from marconi.runtime.serve.model_adapters.base import CacheLayout, ModelAdapter, TensorSpec
from marconi.runtime.serve.model_adapters.hf import FAMILIES, HFAdapter
from marconi.runtime.serve.model_adapters.reference import ReferenceAdapter

ADAPTERS: tuple[type[ModelAdapter], ...] = (ReferenceAdapter, HFAdapter)


def adapter_for(model) -> ModelAdapter:
    """The adapter serving `model`, checked; UnsupportedModelError if none does."""
    for cls in ADAPTERS:
        if cls.matches(model):
            adapter = cls(model)
            adapter.check_supported()
            return adapter
    raise UnsupportedModelError(
        type(model).__name__, "not a model marconi.wrap knows; expected our reference "
        f"HybridLM or a Hugging Face model of type {', '.join(sorted(FAMILIES))}")


__all__ = ["ADAPTERS", "CacheLayout", "ModelAdapter", "TensorSpec", "adapter_for"]

"""Adapter for our reference hybrid model (`marconi.passes.reference_model.HybridLM`).

Its cache is a `HybridCache`: per layer a dict of tensors. KV tensors are `k`, `v`
[1, Hkv, S, D] (attention) and `c_kv`, `k_rope` [1, S, r] (MLA); every other tensor is a
fixed-size state (`ssm` recurrent, `conv` conv). A forward of several tokens after any
cache is exact (tests/test_passes_reference.py), so `continues_prefill` holds.
"""

from __future__ import annotations

from torch import Tensor

from marconi.errors import UnsupportedModelError
from marconi.passes.reference_model import HybridCache, HybridLM
from marconi.runtime.serve.model_adapters.base import (CacheLayout, ModelAdapter, TensorSpec,
                                                 storage_dtype)
from marconi.spec import ModelSpec

# KV tensor name -> its sequence dimension in the batch-ful tensor
_KV_SEQ_DIM = {"k": 2, "v": 2, "c_kv": 1, "k_rope": 1}


class ReferenceAdapter(ModelAdapter):
    family = "reference"
    continues_prefill = True

    @classmethod
    def matches(cls, model) -> bool:
        return isinstance(model, HybridLM)

    def check_supported(self) -> None:
        for i, block in enumerate(self.model.layers):
            if getattr(block.mixer, "window", 0):
                raise UnsupportedModelError(
                    f"{self.model.spec.name}: layers[{i}]", "sliding-window attention drops "
                    "KV as the sequence grows, which a prefix cache of per-token KV does not "
                    "model; expected full attention")

    @property
    def vocab_size(self) -> int:
        return self.model.spec.vocab_size

    def source(self) -> ModelSpec:
        d = self.model.dtypes
        return self.model.spec.with_dtypes(storage_dtype(d.kv), storage_dtype(d.state),
                                           storage_dtype(d.conv))

    def new_cache(self) -> HybridCache:
        return self.model.new_cache(1, self.device)

    def forward(self, ids: Tensor, cache: HybridCache) -> tuple[Tensor, HybridCache]:
        logits, cache = self.model(ids, cache)
        return logits.float(), cache

    def _split(self, cache: HybridCache):
        kv, states = [], []
        for layer, name, t in cache.tensors():
            (kv if name in _KV_SEQ_DIM else states).append((layer, name, t))
        return kv, states

    def kv(self, cache: HybridCache) -> list[Tensor]:
        return [t[0].movedim(_KV_SEQ_DIM[name] - 1, 0) for _, name, t in self._split(cache)[0]]

    def states(self, cache: HybridCache) -> list[Tensor]:
        return [t for _, _, t in self._split(cache)[1]]

    def restore(self, kv: list[Tensor], states: list[Tensor] | None,
                length: int) -> HybridCache:
        template = self.new_cache()
        if length == 0:
            return template
        kv_it, state_it = iter(kv), iter(states)
        layers = []
        for entry in template.layers:
            rebuilt = {}
            for name in sorted(entry):
                if name in _KV_SEQ_DIM:
                    rows = next(kv_it)                                   # [length, *row]
                    assert rows.shape[0] == length, (name, rows.shape, length)
                    rebuilt[name] = rows.movedim(0, _KV_SEQ_DIM[name] - 1).unsqueeze(0) \
                        .contiguous()
                else:
                    rebuilt[name] = next(state_it).clone()
            layers.append(rebuilt)
        return HybridCache(tuple(layers), length)

    def layout(self) -> CacheLayout:
        kv, states = self._split(self.new_cache())
        return CacheLayout(
            kv=tuple(TensorSpec(layer, name, "kv", tuple(t[0].movedim(
                _KV_SEQ_DIM[name] - 1, 0).shape[1:]), t.dtype) for layer, name, t in kv),
            states=tuple(TensorSpec(layer, name, "conv" if name == "conv" else "recurrent",
                                    tuple(t.shape[1:]), t.dtype) for layer, name, t in states))

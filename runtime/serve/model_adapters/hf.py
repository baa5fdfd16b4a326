"""Adapter for Hugging Face hybrid models through transformers' own cache classes.

transformers 5.x keeps every hybrid family's cache in one `DynamicCache` built from the
config: per layer a `DynamicLayer` (keys, values [1, H, S, D]), a `LinearAttentionLayer`
(conv_states[i] [1, C, d_conv], recurrent_states[i]), both at once
(`LinearAttentionAndFullAttentionLayer`: Falcon-H1, Zamba2's hybrid layers) or a
`DummyLayer` (MLP/MoE). The adapter reads those tensors after a forward and rebuilds a
fresh `DynamicCache` holding restored copies, through the layers' own initialisers, so the
model sees exactly the cache it would have built itself.

Families are listed in `FAMILIES` by `model_type`; each says whether a forward of several
tokens after a restored state is exact (see `base.py` on Jamba).
"""

from __future__ import annotations

import dataclasses
import inspect

import torch
from torch import Tensor

from marconi.errors import UnsupportedModelError
from marconi.passes import build_cost_model
from marconi.passes.hf import cache_keyword
from marconi.runtime.serve.model_adapters.base import (CacheLayout, ModelAdapter, TensorSpec,
                                                       storage_dtype)
from marconi.spec import HFConfig


@dataclasses.dataclass(frozen=True)
class HFFamily:
    model_type: str
    continues_prefill: bool = True
    note: str = ""


FAMILIES: dict[str, HFFamily] = {f.model_type: f for f in (
    HFFamily("jamba", continues_prefill=False,
             note="the torch selective scan ignores the cached SSM state for T > 1 "
                  "(transformers.models.mamba.modeling_mamba.mamba_selective_scan)"),
    HFFamily("bamba"),
    HFFamily("nemotron_h"),
    HFFamily("zamba2"),
    HFFamily("falcon_h1"),
    HFFamily("granitemoehybrid"),
    HFFamily("qwen3_next"),
    HFFamily("qwen3_5_text"),
    HFFamily("kimi_linear"),
)}


def _cache_classes():
    from transformers.cache_utils import (DynamicCache, DynamicLayer, DynamicSlidingWindowLayer,
                                          LinearAttentionCacheLayerMixin)
    return DynamicCache, DynamicLayer, DynamicSlidingWindowLayer, LinearAttentionCacheLayerMixin


class HFAdapter(ModelAdapter):
    family = "hf"

    def __init__(self, model):
        super().__init__(model)
        self.model_type = model.config.model_type
        self.hf_family = FAMILIES.get(self.model_type)
        self.continues_prefill = self.hf_family.continues_prefill if self.hf_family else True
        self._layout: CacheLayout | None = None
        self._forward_args = set(inspect.signature(model.forward).parameters)

    @classmethod
    def matches(cls, model) -> bool:
        try:
            from transformers import PreTrainedModel
        except ImportError:
            return False
        return isinstance(model, PreTrainedModel)

    def check_supported(self) -> None:
        if self.hf_family is None:
            raise UnsupportedModelError(
                f"{type(self.model).__name__}", f"model_type {self.model_type!r} is not a "
                f"supported hybrid family; expected one of {', '.join(sorted(FAMILIES))}")
        _, _, sliding, _ = _cache_classes()
        if any(isinstance(layer, sliding) for layer in self._probe_cache().layers):
            raise UnsupportedModelError(f"{type(self.model).__name__}", "sliding-window "
                                        "attention layers are not supported; expected full "
                                        "attention")

    def source(self) -> HFConfig:
        config = self.model.config
        name = getattr(config, "name_or_path", "") or self.model_type
        return HFConfig(path=f"<{type(self.model).__name__}>", model_type=self.model_type,
                        config=config.to_dict(), name=str(name))

    def generation_settings(self) -> dict:
        config = self.model.generation_config
        return {k: v for k, v in config.to_dict().items() if v is not None}

    @property
    def max_positions(self) -> int | None:
        return getattr(self.model.config, "max_position_embeddings", None)

    def cost_model(self):
        layout = self.layout()
        kv = layout.kv[0].dtype if layout.kv else self.model.dtype
        state = next((s.dtype for s in layout.states if s.role == "recurrent"), kv)
        return build_cost_model(self.source(), dtype=storage_dtype(kv),
                                state_dtype=storage_dtype(state), layout="model")

    # ------------------------------------------------------------------ running
    def new_cache(self):
        dynamic_cache, *_ = _cache_classes()
        return dynamic_cache(config=self.model.config)

    def forward(self, ids: Tensor, cache) -> tuple[Tensor, object]:
        # Positions are passed explicitly: Bamba (transformers 5.23) numbers the tokens of
        # every forward from 0 when none are given, even after a cache of past tokens.
        past = cache.get_seq_length()
        positions = torch.arange(past, past + ids.shape[1], device=ids.device).unsqueeze(0)
        name = cache_keyword(self._forward_args)
        out = self.model(input_ids=ids, use_cache=True, position_ids=positions,
                         **{name: cache})
        return out.logits.float(), getattr(out, name)

    # ------------------------------------------------------------------ cache tensors
    def _entries(self, cache):
        """(layer, name, role, tensor) of every initialised tensor, in a fixed order."""
        _, dynamic_layer, _, linear = _cache_classes()
        out = []
        for i, layer in enumerate(cache.layers):
            if isinstance(layer, linear):
                for s in range(layer.number_of_states):
                    if layer.is_conv_states_initialized[s]:
                        out.append((i, f"conv.{s}", "conv", layer.conv_states[s]))
                    if layer.is_recurrent_states_initialized[s]:
                        out.append((i, f"recurrent.{s}", "recurrent", layer.recurrent_states[s]))
            if isinstance(layer, dynamic_layer) and getattr(layer, "is_initialized", False):
                out.append((i, "keys", "kv", layer.keys))
                out.append((i, "values", "kv", layer.values))
        return out

    def kv(self, cache) -> list[Tensor]:
        return [t[0].transpose(0, 1) for _, _, role, t in self._entries(cache) if role == "kv"]

    def states(self, cache) -> list[Tensor]:
        return [t for _, _, role, t in self._entries(cache) if role != "kv"]

    def restore(self, kv: list[Tensor], states: list[Tensor] | None, length: int):
        cache = self.new_cache()
        if length == 0:
            return cache
        layout = self.layout()
        for spec, rows in zip(layout.kv[0::2], zip(kv[0::2], kv[1::2])):
            keys, values = (r.transpose(0, 1).unsqueeze(0).contiguous() for r in rows)
            cache.layers[spec.layer].update(keys, values)          # [1, H, length, D]
        for spec, t in zip(layout.states, states):
            layer = cache.layers[spec.layer]
            kind, s = spec.name.split(".")
            s = int(s)
            if kind == "conv":
                layer.lazy_initialization(conv_states=t, state_idx=s, conv_kernel_size=t.shape[-1])
                layer.conv_states[s].copy_(t)
            else:
                layer.lazy_initialization(recurrent_states=t, state_idx=s)
                layer.recurrent_states[s].copy_(t)
            layer.has_previous_state[s] = True
            # transformers 5.25 counts a linear-attention layer's tokens as its conv state is
            # updated, and the cache's length (hence the positions) is the first layer's
            counted = getattr(layer, "cumulative_length_linear", None)
            if counted is not None:
                counted.fill_(length)
        return cache

    def _probe_cache(self):
        """The model's own cache after one token: every layer's tensors initialised."""
        cache = self.new_cache()
        with torch.no_grad():
            self.forward(torch.zeros(1, 1, dtype=torch.long, device=self.device), cache)
        return cache

    def layout(self) -> CacheLayout:
        if self._layout is None:
            entries = self._entries(self._probe_cache())
            self._layout = CacheLayout(
                kv=tuple(TensorSpec(i, n, r, (t.shape[1], t.shape[3]), t.dtype)
                         for i, n, r, t in entries if r == "kv"),
                states=tuple(TensorSpec(i, n, r, tuple(t.shape[1:]), t.dtype)
                             for i, n, r, t in entries if r != "kv"))
        return self._layout

"""CostModel: bytes a cache entry costs and FLOPs a hit saves, per layer and in total.

This is the one result of `passes/` that the rest of the toolkit uses. It is plain frozen
data; the analysis passes fill it in from the traced graph (`passes.analyze`).

Units: bytes for memory, FLOPs (multiply-add = 2 FLOPs) for compute, tokens for lengths.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from marconi.layers import LayerKind


@dataclasses.dataclass(frozen=True)
class FlopPoly:
    """FLOPs of a prefill of `n` new tokens over `p` cached tokens, exact, degree ≤ 2.

    flops(n, p) = n·c_n + n²·c_nn + n·p·c_np + p·c_p + p²·c_pp + c_1.
    Prefill cost is a polynomial of degree ≤ 2 in (n, p): linear layers are linear in n,
    causal attention costs ~n²/2 + n·p score entries (planning-and-kernels.md §1.4).
    """

    c_n: float = 0.0
    c_nn: float = 0.0
    c_np: float = 0.0
    c_p: float = 0.0
    c_pp: float = 0.0
    c_1: float = 0.0

    def __call__(self, n: float, p: float = 0) -> float:
        return (n * self.c_n + n * n * self.c_nn + n * p * self.c_np
                + p * self.c_p + p * p * self.c_pp + self.c_1)

    def __add__(self, other: FlopPoly) -> FlopPoly:
        return FlopPoly(*(a + b for a, b in zip(dataclasses.astuple(self),
                                                dataclasses.astuple(other))))

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class LayerCost:
    index: int
    kind: LayerKind
    name: str                         # module path in the traced model, e.g. "layers.3.mixer"
    kv_bytes_per_token: int = 0       # attention K+V (MLA: latent + rope) per token
    recurrent_state_bytes: int = 0    # fixed recurrent state (SSM h, GDN/KDA S) per sequence
    conv_state_bytes: int = 0         # fixed conv state per sequence
    window: int | None = None         # sliding-window cap on KV tokens, None = unbounded
    flops: FlopPoly = FlopPoly()
    label: str = ""                   # classification detail, e.g. "sliding_attention"

    @property
    def state_bytes(self) -> int:
        """Fixed per-sequence state: recurrent + conv."""
        return self.recurrent_state_bytes + self.conv_state_bytes

    def kv_bytes(self, tokens: int) -> int:
        held = tokens if self.window is None else min(tokens, self.window)
        return self.kv_bytes_per_token * held

    def prefill_flops(self, n: float, p: float = 0) -> float:
        """FLOPs of this layer for n new tokens after p cached ones.

        Without a window this is `flops(n, p)`. With one, `window` is the number of KV
        tokens held and each query sees at most `window + 1` keys (itself included): the
        score entries Σ_{i=1..n} (p + i) = n·p + n(n+1)/2 of the fitted polynomial (whose
        quadratic part is c_np·(n·p + n²/2)) are replaced by Σ_{i=1..n} min(window+1, p+i).
        """
        full = self.flops(n, p)
        if not self.window or not self.flops.c_np:
            return full
        per_entry = self.flops.c_np
        return full - per_entry * causal_entries(n, p, None) \
            + per_entry * causal_entries(n, p, self.window + 1)


def causal_entries(n: float, p: float, span: int | None) -> float:
    """Σ_{i=1..n} min(span, p + i): attention score entries of n queries after p cached
    tokens when each query sees at most `span` keys (None: unbounded)."""
    if span is None or p + n <= span:
        return n * p + n * (n + 1) / 2
    m = max(0.0, min(n, span - p))          # queries still inside the span
    return m * p + m * (m + 1) / 2 + (n - m) * span


@dataclasses.dataclass(frozen=True)
class CostModel:
    """Per-layer and total cache sizes and prefill FLOPs of one model at given dtypes.

    A hit on a cached prefix of p tokens for a request of p + n tokens skips the prefill of
    those p tokens: `saved_flops(p, n) = prefill_flops(p + n, 0) - prefill_flops(n, p)`.
    A checkpoint costs `state_bytes()` plus the KV of its prefix (shared along radix paths).
    """

    model: str
    dtype: str
    state_dtype: str
    layers: tuple[LayerCost, ...]
    conv_dtype: str = ""
    layout: str = "model"             # "model" (the model's own cache) or an engine layout
    source_fingerprint: str = ""      # fingerprint of the spec / config it came from
    notes: tuple[str, ...] = ()

    def __post_init__(self):
        total = FlopPoly()
        for layer in self.layers:
            total = total + layer.flops
        object.__setattr__(self, "_total_flops", total)
        unwindowed = FlopPoly()
        for layer in self.layers:
            if not layer.window:
                unwindowed = unwindowed + layer.flops
        object.__setattr__(self, "_unwindowed_flops", unwindowed)
        object.__setattr__(self, "_kv_per_token", sum(l.kv_bytes_per_token for l in self.layers
                                                      if l.window is None))
        object.__setattr__(self, "_windowed", tuple(l for l in self.layers if l.window))
        object.__setattr__(self, "_state", sum(l.state_bytes for l in self.layers))

    # ------------------------------------------------------------------ sizes
    @property
    def kv_bytes_per_token(self) -> int:
        """KV bytes per token of all layers (sliding-window layers counted per token too)."""
        return sum(layer.kv_bytes_per_token for layer in self.layers)

    def kv_bytes(self, tokens: int) -> int:
        """KV bytes of a `tokens`-long prefix, sliding-window layers capped at their window."""
        return self._kv_per_token * tokens + sum(l.kv_bytes(tokens) for l in self._windowed)

    def state_bytes(self) -> int:
        """Bytes of one checkpoint: every layer's recurrent + conv state."""
        return self._state

    @property
    def checkpoint_break_even_tokens(self) -> float:
        """Tokens of KV that weigh as much as one checkpoint (inf for a model without KV)."""
        per_token = self.kv_bytes_per_token
        return self._state / per_token if per_token else float("inf")

    # ------------------------------------------------------------------ FLOPs
    @property
    def flops(self) -> FlopPoly:
        """Total prefill FLOP polynomial (all layers, embedding/lm-head excluded).

        Sliding-window layers enter it uncapped; `prefill_flops` applies their windows.
        """
        return self._total_flops

    def prefill_flops(self, n: float, p: float = 0) -> float:
        """FLOPs to prefill `n` new tokens after `p` cached ones."""
        return self._unwindowed_flops(n, p) + sum(l.prefill_flops(n, p) for l in self._windowed)

    def saved_flops(self, p: float, n: float) -> float:
        """FLOPs a hit on a `p`-token prefix saves a request of `p + n` tokens."""
        return self.prefill_flops(p + n, 0) - self.prefill_flops(n, p)

    # ------------------------------------------------------------------ identity
    def fingerprint(self) -> str:
        """Stable hash of everything a plan depends on (sizes, FLOPs, dtypes).

        Names are left out: `marconi-plan config.json` names a model after its file or
        folder, `marconi.wrap` after the loaded model's `name_or_path`, and a plan made by
        one must be accepted by the other when their caches and costs are the same.
        """
        doc = self.to_dict(include_layers=True)
        del doc["model"]
        for layer in doc["layers"]:
            del layer["name"], layer["label"]
        blob = json.dumps(doc, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def to_dict(self, include_layers: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model": self.model, "dtype": self.dtype, "state_dtype": self.state_dtype,
            "conv_dtype": self.conv_dtype or self.dtype, "layout": self.layout,
            "totals": {
                "kv_bytes_per_token": self.kv_bytes_per_token,
                "state_bytes": self.state_bytes(),
                "checkpoint_break_even_tokens": self.checkpoint_break_even_tokens,
                "flops": self.flops.to_dict(),
            },
        }
        if include_layers:
            out["layers"] = [{
                "index": l.index, "kind": l.kind.value, "name": l.name, "label": l.label,
                "kv_bytes_per_token": l.kv_bytes_per_token, "state_bytes": l.state_bytes,
                "recurrent_state_bytes": l.recurrent_state_bytes,
                "conv_state_bytes": l.conv_state_bytes, "window": l.window,
                "flops": l.flops.to_dict(),
            } for l in self.layers]
        return out

"""Layer kinds and their parameters: the vocabulary of `model.yaml`.

Each kind has one frozen parameter dataclass, registered with `@register_kind`. A field
without a default is required; a field whose default is `None` is derived from `d_model`
(or another field) by the class's `resolve`. Sizes are in elements, never bytes: byte
counts come from `passes/`, which reads them off the traced graph.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, ClassVar

from marconi.errors import SpecError

# Bounds on sizes, given or derived. No real model comes near them (d_model and d_ff are
# below 2^17, the widest experts layers 2^10 experts); the passes build tensors of up to
# three dimensions times small factors, which at 2^18 each stay far below the 2^63 bytes
# torch can size. A larger value is a typo, refused here instead of overflowing in torch.
MAX_DIM = 2**18                    # a dimension or count of a layer, d_model
MAX_VOCAB = 2**24                  # vocab_size: only the embedding and logits are that wide
MAX_TOKENS = 2**31                 # a length in tokens (window, chunk_size)


class LayerKind(enum.Enum):
    ATTENTION = "attention"          # softmax attention; `window` makes it sliding-window
    MLA = "mla"                      # multi-head latent attention (DeepSeek/Kimi)
    MAMBA1 = "mamba1"                # selective scan (Mamba, Jamba)
    MAMBA2 = "mamba2"                # SSD (Mamba2, Nemotron-H, Granite-4.0-H, Falcon-H1, Zamba2)
    GDN = "gdn"                      # gated delta net (Qwen3-Next, Qwen3.5)
    KDA = "kda"                      # Kimi delta attention (Kimi-Linear)
    LINEAR_ATTENTION = "linear_attention"  # plain (gated) linear attention
    SHORT_CONV = "short_conv"        # gated short convolution (LFM2)
    MLP = "mlp"
    MOE = "moe"

    @property
    def is_recurrent(self) -> bool:
        """Holds a fixed-size state updated in place (hits only at exact checkpoints)."""
        return self in _RECURRENT

    @property
    def has_kv(self) -> bool:
        """Holds a per-token KV cache that can be cut at any prefix."""
        return self in (LayerKind.ATTENTION, LayerKind.MLA)


_RECURRENT = frozenset({LayerKind.MAMBA1, LayerKind.MAMBA2, LayerKind.GDN, LayerKind.KDA,
                        LayerKind.LINEAR_ATTENTION, LayerKind.SHORT_CONV})

PARAMS: dict[LayerKind, type[LayerParams]] = {}


def register_kind(kind: LayerKind):
    """Class decorator: make `cls` the parameter type of `kind` (refuses duplicates)."""
    def deco(cls):
        if kind in PARAMS:
            raise ValueError(f"layer kind {kind.value} registered twice")
        cls.kind = kind
        PARAMS[kind] = cls
        return cls
    return deco


@dataclasses.dataclass(frozen=True)
class LayerParams:
    kind: ClassVar[LayerKind]

    @classmethod
    def parse(cls, raw: dict[str, Any], d_model: int, where: str) -> LayerParams:
        """Build from a raw mapping, checking names, types and signs; then `resolve`."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - set(fields))
        if unknown:
            raise SpecError(f"{where}.{unknown[0]}",
                            f"unknown field for kind {cls.kind.value}; expected one of "
                            f"{', '.join(fields)}")
        values = {}
        for name, f in fields.items():
            required = (f.default is dataclasses.MISSING
                        and f.default_factory is dataclasses.MISSING)
            if name not in raw:
                if required:
                    raise SpecError(f"{where}.{name}",
                                    f"missing required field for kind {cls.kind.value}")
                continue
            values[name] = _check_value(raw[name], f, f"{where}.{name}")
        resolved = cls(**values).resolve(d_model, where)
        for name, f in fields.items():
            value = getattr(resolved, name)
            if name not in raw and isinstance(value, int) and not isinstance(value, bool) \
                    and value > f.metadata.get("max", MAX_DIM):
                raise SpecError(f"{where}.{name}", f"{show_int(value)}, derived from the "
                                f"fields given; expected at most {f.metadata.get('max', MAX_DIM)}")
        return resolved

    def resolve(self, d_model: int, where: str) -> LayerParams:
        """Fill derived fields; check cross-field constraints."""
        return self


def _check_value(value: Any, f: dataclasses.Field, where: str) -> Any:
    typ = str(f.type)
    if "bool" in typ:
        if not isinstance(value, bool):
            raise SpecError(where, f"expected true or false, got {value!r}")
        return value
    if "int" in typ:
        if value is None and "None" in typ:
            return None
        return check_size(value, where, allow_zero=f.metadata.get("allow_zero", False),
                          most=f.metadata.get("max", MAX_DIM))
    if "str" in typ:
        if not isinstance(value, str):
            raise SpecError(where, f"expected a string, got {value!r}")
        return value
    raise AssertionError(f"unhandled field type {typ}")  # internal: a new field type


def check_size(value: Any, where: str, allow_zero: bool = False, most: int = MAX_DIM) -> int:
    """An integer size: positive (or zero where allowed), at most `most`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(where, f"expected an integer, got {value!r}")
    if value <= 0 and not allow_zero:
        raise SpecError(where, f"must be positive, got {value}")
    if value < 0:
        raise SpecError(where, f"must not be negative, got {value}")
    if value > most:
        raise SpecError(where, f"{show_int(value)}; expected at most {most}")
    return value


def show_int(value: int) -> str:
    """An integer as an error shows it: exact up to 10^15, else 1e+30 (str() of an int past
    4300 digits raises, and nobody reads 31 zeros)."""
    if abs(value) < 10**15:
        return str(value)
    if value.bit_length() < 1000:
        return f"{float(value):.3g}"
    return f"an integer of {value.bit_length()} bits"


def _zero_ok(default):
    return dataclasses.field(default=default, metadata={"allow_zero": True})


def _derive(obj, **values):
    return dataclasses.replace(obj, **values)


@register_kind(LayerKind.ATTENTION)
@dataclasses.dataclass(frozen=True)
class AttentionParams(LayerParams):
    n_heads: int
    n_kv_heads: int | None = None     # default n_heads (MHA)
    head_dim: int | None = None       # default d_model // n_heads
    window: int | None = dataclasses.field(   # sliding window in tokens; None = full attention
        default=None, metadata={"max": MAX_TOKENS})

    def resolve(self, d_model, where):
        n_kv = self.n_kv_heads or self.n_heads
        if self.n_heads % n_kv:
            raise SpecError(f"{where}.n_kv_heads",
                            f"{n_kv} does not divide n_heads {self.n_heads}")
        return _derive(self, n_kv_heads=n_kv, head_dim=self.head_dim or d_model // self.n_heads)


@register_kind(LayerKind.MLA)
@dataclasses.dataclass(frozen=True)
class MLAParams(LayerParams):
    n_heads: int
    kv_lora_rank: int
    qk_rope_head_dim: int
    qk_nope_head_dim: int
    v_head_dim: int
    q_lora_rank: int | None = None    # None: q is projected directly from the hidden state


@register_kind(LayerKind.MAMBA1)
@dataclasses.dataclass(frozen=True)
class Mamba1Params(LayerParams):
    d_state: int
    expand: int = 2
    d_inner: int | None = None        # default expand * d_model
    d_conv: int = 4
    dt_rank: int | None = None        # default ceil(d_model / 16)

    def resolve(self, d_model, where):
        return _derive(self, d_inner=self.d_inner or self.expand * d_model,
                       dt_rank=self.dt_rank or -(-d_model // 16))


@register_kind(LayerKind.MAMBA2)
@dataclasses.dataclass(frozen=True)
class Mamba2Params(LayerParams):
    d_state: int
    head_dim: int = 64
    n_heads: int | None = None        # default expand * d_model // head_dim
    expand: int = 2
    n_groups: int = 1
    d_conv: int = 4

    @property
    def d_inner(self) -> int:
        return self.n_heads * self.head_dim

    def resolve(self, d_model, where):
        n_heads = self.n_heads or self.expand * d_model // self.head_dim
        if n_heads % self.n_groups:
            raise SpecError(f"{where}.n_groups",
                            f"{self.n_groups} does not divide n_heads {n_heads}")
        return _derive(self, n_heads=n_heads)


@register_kind(LayerKind.GDN)
@dataclasses.dataclass(frozen=True)
class GDNParams(LayerParams):
    n_k_heads: int
    n_v_heads: int
    head_k_dim: int
    head_v_dim: int
    d_conv: int = 4

    def resolve(self, d_model, where):
        if self.n_v_heads % self.n_k_heads:
            raise SpecError(f"{where}.n_k_heads",
                            f"{self.n_k_heads} does not divide n_v_heads {self.n_v_heads}")
        return self


@register_kind(LayerKind.KDA)
@dataclasses.dataclass(frozen=True)
class KDAParams(LayerParams):
    n_heads: int
    head_dim: int
    d_conv: int = 4


@register_kind(LayerKind.LINEAR_ATTENTION)
@dataclasses.dataclass(frozen=True)
class LinearAttentionParams(LayerParams):
    n_heads: int
    head_dim: int | None = None       # default d_model // n_heads
    d_conv: int = _zero_ok(0)         # 0: no short convolution before the recurrence

    def resolve(self, d_model, where):
        return _derive(self, head_dim=self.head_dim or d_model // self.n_heads)


@register_kind(LayerKind.SHORT_CONV)
@dataclasses.dataclass(frozen=True)
class ShortConvParams(LayerParams):
    d_conv: int = 3                   # LFM2's L_cache


@register_kind(LayerKind.MLP)
@dataclasses.dataclass(frozen=True)
class MLPParams(LayerParams):
    d_ff: int
    gated: bool = False               # SwiGLU-style (3 matrices) instead of 2


@register_kind(LayerKind.MOE)
@dataclasses.dataclass(frozen=True)
class MoEParams(LayerParams):
    n_experts: int
    top_k: int
    d_ff_expert: int
    n_shared_experts: int = _zero_ok(0)
    d_ff_shared: int | None = None    # default d_ff_expert
    gated: bool = True

    def resolve(self, d_model, where):
        if self.top_k > self.n_experts:
            raise SpecError(f"{where}.top_k",
                            f"{self.top_k} exceeds n_experts {self.n_experts}")
        return _derive(self, d_ff_shared=self.d_ff_shared or self.d_ff_expert)


def kind_names() -> str:
    return ", ".join(k.value for k in PARAMS)

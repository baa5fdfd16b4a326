"""The example model specs reproduce the published sizes of the real models they describe.

Expected figures are the table in shared/docs/background/engines.md §4 ("Real hybrid model
configs and sizes"), which derives them from the models' public config.json files. The
closed forms below are that table's formulas, applied to the parsed spec (not to passes/):

    KV B/token     = Σ_attn 2·n_kv·head_dim·b          (MLA: Σ (kv_lora_rank + rope)·b)
    Mamba2 state   = n_heads·head_dim·d_state,  conv = (n_heads·head_dim + 2·n_groups·d_state)·(d_conv−1)
    Mamba1 state   = d_inner·d_state,           conv = d_inner·(d_conv−1)
    GDN state      = n_v·d_k·d_v,               conv = (2·n_k·d_k + n_v·d_v)·(d_conv−1)
    KDA state      = n_h·d·d,                   conv = 3·n_h·d·(d_conv−1)

"state/seq bf16" stores everything in bf16; "(fp32 ssm)" stores the recurrent state in fp32
and the conv state in bf16, which is what every example spec declares (state_dtype float32,
conv_dtype = dtype = bfloat16). "Break-even" is state bytes (bf16) / KV bytes per token;
"vLLM block" is the attention block size (multiple of 16) whose per-layer page holds one
per-layer state (fp32 SSM).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from helpers import EXAMPLES
from marconi.layers import LayerKind
from marconi.spec import LayerSpec, ModelSpec, load_model
from marconi.units import DType

MiB = 1 << 20


@dataclass(frozen=True)
class Published:
    """One row of engines.md §4."""

    counts: dict[LayerKind, int]      # layers per kind in the spec
    kv_bytes_per_token: int
    state_mib_bf16: float             # as printed: 1 decimal
    state_mib_fp32_ssm: float
    break_even_tokens: int
    vllm_block: int


A, M1, M2, G, K, MLA, F, E = (LayerKind.ATTENTION, LayerKind.MAMBA1, LayerKind.MAMBA2,
                              LayerKind.GDN, LayerKind.KDA, LayerKind.MLA, LayerKind.MLP,
                              LayerKind.MOE)

TABLE = {
    "jamba-1.5-mini": Published({A: 4, M1: 28, F: 16, E: 16}, 16_384, 8.3, 15.3, 532, 144),
    "nemotron-h-8b": Published({A: 4, M2: 24, F: 24}, 16_384, 49.4, 97.4, 3_162, 1040),
    "nemotron-nano-9b-v2": Published({A: 4, M2: 27, F: 25}, 16_384, 69.4, 136.9, 4_442, 1312),
    "granite-4.0-h-small": Published({A: 4, M2: 36, E: 40}, 16_384, 73.7, 145.7, 4_719, 1040),
    "falcon-h1-1.5b": Published({A: 24, M2: 24, F: 24}, 24_576, 36.5, 72.5, 1_557, 3104),
    "zamba2-7b": Published({A: 13, M2: 81, F: 13}, 372_736, 74.3, 145.2, 209, 80),
    "qwen3-next-80b-a3b": Published({A: 12, G: 36, E: 48}, 24_576, 37.7, 73.7, 1_608, 1056),
    "qwen3.5-9b": Published({A: 8, G: 24, F: 32}, 32_768, 25.1, 49.1, 804, 528),
    "kimi-linear-48b-a3b": Published({MLA: 7, K: 20, F: 1, E: 26}, 8_064, 21.4, 41.4, 2_783,
                                     1888),
}


# ---------------------------------------------------------------- closed forms (elements)

def _mamba2(p):
    return p.n_heads * p.head_dim * p.d_state, \
        (p.n_heads * p.head_dim + 2 * p.n_groups * p.d_state) * (p.d_conv - 1)


def _mamba1(p):
    return p.d_inner * p.d_state, p.d_inner * (p.d_conv - 1)


def _gdn(p):
    return p.n_v_heads * p.head_k_dim * p.head_v_dim, \
        (2 * p.n_k_heads * p.head_k_dim + p.n_v_heads * p.head_v_dim) * (p.d_conv - 1)


def _kda(p):
    return p.n_heads * p.head_dim * p.head_dim, 3 * p.n_heads * p.head_dim * (p.d_conv - 1)


# kind -> (recurrent state elements, conv state elements) per layer
STATE_ELEMENTS = {LayerKind.MAMBA2: _mamba2, LayerKind.MAMBA1: _mamba1,
                  LayerKind.GDN: _gdn, LayerKind.KDA: _kda}

# kind -> KV elements per token per layer
KV_ELEMENTS = {
    LayerKind.ATTENTION: lambda p: 2 * p.n_kv_heads * p.head_dim,
    LayerKind.MLA: lambda p: p.kv_lora_rank + p.qk_rope_head_dim,
}


def layer_state_bytes(layer: LayerSpec, spec: ModelSpec) -> int:
    ssm, conv = STATE_ELEMENTS[layer.kind](layer.params)
    return ssm * spec.state_dtype.nbytes + conv * spec.conv_dtype.nbytes


def state_bytes(spec: ModelSpec) -> int:
    return sum(layer_state_bytes(l, spec) for l in spec.layers if l.kind.is_recurrent)


def layer_kv_bytes(layer: LayerSpec, spec: ModelSpec) -> int:
    return KV_ELEMENTS[layer.kind](layer.params) * spec.dtype.nbytes


def kv_bytes_per_token(spec: ModelSpec) -> int:
    return sum(layer_kv_bytes(l, spec) for l in spec.layers if l.kind.has_kv)


def vllm_block(spec: ModelSpec) -> int:
    """Smallest multiple of 16 tokens whose per-layer KV page holds one per-layer state."""
    state = max(layer_state_bytes(l, spec) for l in spec.layers if l.kind.is_recurrent)
    page = min(layer_kv_bytes(l, spec) for l in spec.layers if l.kind.has_kv)
    return 16 * math.ceil(math.ceil(state / page) / 16)


# ---------------------------------------------------------------- tests

def _load(name: str) -> ModelSpec:
    return load_model(EXAMPLES / f"{name}.yaml")


ALL_EXAMPLES = sorted(EXAMPLES.glob("*.yaml"))


@pytest.mark.parametrize("path", ALL_EXAMPLES, ids=lambda p: p.stem)
def test_example_loads_and_cites_its_source(path: Path):
    spec = load_model(path)
    assert spec.name == path.stem
    assert spec.source, "every example names its public source"
    first = path.read_text().splitlines()[0]
    assert first.startswith("# "), "every example opens with a comment describing the model"
    assert any(layer.kind.is_recurrent for layer in spec.layers)
    assert any(layer.kind.has_kv for layer in spec.layers)


def test_table_covers_every_real_model_example():
    """Each example except the paper's synthetic 7B has a row to be checked against."""
    names = {p.stem for p in ALL_EXAMPLES} - {"marconi-7b-hybrid"}
    assert names == set(TABLE)


@pytest.mark.parametrize("name", sorted(TABLE))
def test_layer_counts(name):
    spec = _load(name)
    counts = {kind: spec.count(kind) for kind in LayerKind if spec.count(kind)}
    assert counts == TABLE[name].counts


@pytest.mark.parametrize("name", sorted(TABLE))
def test_kv_bytes_per_token(name):
    assert kv_bytes_per_token(_load(name)) == TABLE[name].kv_bytes_per_token


@pytest.mark.parametrize("name", sorted(TABLE))
def test_state_bytes_fp32_ssm(name):
    spec = _load(name)
    assert (spec.dtype, spec.state_dtype, spec.conv_dtype) == (
        DType.BFLOAT16, DType.FLOAT32, DType.BFLOAT16)
    assert round(state_bytes(spec) / MiB, 1) == TABLE[name].state_mib_fp32_ssm


@pytest.mark.parametrize("name", sorted(TABLE))
def test_state_bytes_all_bf16(name):
    spec = _load(name).with_dtypes(state_dtype=DType.BFLOAT16)
    assert round(state_bytes(spec) / MiB, 1) == TABLE[name].state_mib_bf16


@pytest.mark.parametrize("name", sorted(TABLE))
def test_break_even_tokens(name):
    spec = _load(name)
    bf16 = spec.with_dtypes(state_dtype=DType.BFLOAT16)
    assert round(state_bytes(bf16) / kv_bytes_per_token(spec)) == TABLE[name].break_even_tokens


@pytest.mark.parametrize("name", sorted(TABLE))
def test_vllm_block_size(name):
    assert vllm_block(_load(name)) == TABLE[name].vllm_block


@pytest.mark.parametrize("path", ALL_EXAMPLES, ids=lambda p: p.stem)
def test_explicit_list_gives_the_same_spec(path: Path, tmp_path):
    """Writing the pattern out as an explicit `layers:` list yields the identical model,
    so `pattern` + `repeat` in the examples is only shorthand."""
    raw = yaml.safe_load(path.read_text())
    spec = load_model(path)
    assert "pattern" in raw
    explicit = {k: v for k, v in raw.items() if k not in ("pattern", "repeat")}
    explicit["layers"] = list(raw["pattern"] * raw.get("repeat", 1))
    out = tmp_path / path.name
    out.write_text(yaml.safe_dump(explicit))
    assert load_model(out).fingerprint() == spec.fingerprint()


def test_falcon_h1_mamba_runs_parallel_to_attention():
    spec = _load("falcon-h1-1.5b")
    for layer in spec.layers:
        assert layer.parallel == (layer.kind is LayerKind.MAMBA2)
        if layer.parallel:
            assert spec.layers[layer.index - 1].kind is LayerKind.ATTENTION


# ---------------------------------------------------------------- examples/hf: a real reference

HF_EXAMPLES = sorted(p for p in (EXAMPLES.parent / "hf").iterdir() if p.is_dir())


def _hf_cache_shapes(folder: Path):
    """Run the real transformers model of a tiny config.json once and read its cache:
    per recurrent layer (state elements, conv elements over d_conv − 1 taps), and per
    attention layer the KV elements per token."""
    transformers = pytest.importorskip("transformers")
    import json

    import inspect

    import torch

    from marconi.passes.hf import cache_keyword
    raw = json.loads((folder / "config.json").read_text())
    config = transformers.AutoConfig.for_model(**raw)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    tokens = 12
    with torch.no_grad():
        cache = model(torch.randint(0, raw["vocab_size"], (1, tokens)), use_cache=True)
    recurrent, kv = [], []
    name = cache_keyword(inspect.signature(model.forward).parameters)
    for layer in getattr(cache, name).layers:
        states = getattr(layer, "recurrent_states", None) or {}
        for i, state in states.items():                 # [1, ...]: one sequence
            conv = layer.conv_states[i]                 # [1, channels, d_conv]
            recurrent.append((state.numel(), conv.shape[1] * (conv.shape[2] - 1)))
        keys = getattr(layer, "keys", None)
        if keys is not None and keys.numel():           # [1, heads, tokens, dim]
            assert keys.shape[2] == tokens
            kv.append(keys.shape[1] * keys.shape[3] + layer.values.shape[1] * layer.values.shape[3])
    return recurrent, kv


@pytest.mark.parametrize("folder", HF_EXAMPLES, ids=lambda p: p.name)
def test_hf_twin_matches_the_transformers_cache(folder: Path):
    """Each examples/hf/<name>/model.yaml describes the same model as the config.json beside
    it: the closed forms on the spec equal the cache tensors transformers allocates."""
    hf = load_model(folder)
    spec = load_model(folder / "model.yaml")
    assert hf.model_type and spec.name == folder.name
    recurrent, kv = _hf_cache_shapes(folder)
    assert recurrent == [STATE_ELEMENTS[l.kind](l.params) for l in spec.layers
                         if l.kind.is_recurrent]
    assert kv == [KV_ELEMENTS[l.kind](l.params) for l in spec.layers if l.kind.has_kv]

"""Hugging Face configs: the CostModel against the real transformers model.

For each family (the tiny real-architecture configs of examples/hf plus controls built
here): the model RUNS on CPU with transformers' own code and random weights, and the
bytes of the tensors its own cache holds after 5 and 9 tokens equal kv_bytes(L) +
state_bytes() exactly, layer by layer. FLOPs are checked against torch's FlopCounterMode
on the analysed module (the meta model with our scan ops substituted), and the
projection FLOPs against FlopCounterMode on the unmodified model.

Deliberate difference (docs/passes.md): the scans are counted by our recurrence formulas
(passes/ops.py), not by transformers' chunked torch reference, whose count depends on
chunk padding.
"""

import copy
import functools
import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

transformers = pytest.importorskip("transformers")

from marconi.errors import SpecError, UnsupportedModelError  # noqa: E402
from marconi.layers import LayerKind  # noqa: E402
from marconi.passes import build_cost_model, hf_kernels  # noqa: E402
from marconi.passes.hf import HFRunner  # noqa: E402
from marconi.spec import load_model  # noqa: E402
from marconi.units import DType  # noqa: E402

from helpers import EXAMPLES  # noqa: E402
from hf_cache import cache_bytes_per_layer, decoder_layer, real_model  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_torch_thread")

HF_DIR = EXAMPLES.parent / "hf"
CONTROLS = {
    "mamba": {"model_type": "mamba", "hidden_size": 64, "num_hidden_layers": 2,
              "state_size": 8, "expand": 2, "conv_kernel": 4, "vocab_size": 256},
    "mamba2": {"model_type": "mamba2", "hidden_size": 64, "num_hidden_layers": 2,
               "state_size": 16, "num_heads": 8, "head_dim": 16, "n_groups": 2, "expand": 2,
               "conv_kernel": 4, "chunk_size": 16, "vocab_size": 256},
    "llama": {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128,
              "vocab_size": 256},
    "lfm2": {"model_type": "lfm2", "hidden_size": 64, "num_hidden_layers": 4,
             "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128,
             "vocab_size": 256, "conv_L_cache": 3,
             "layer_types": ["conv", "conv", "full_attention", "conv"]},
    "mistral-swa": {"model_type": "mistral", "hidden_size": 64, "num_hidden_layers": 2,
                    "num_attention_heads": 4, "num_key_value_heads": 2,
                    "intermediate_size": 128, "vocab_size": 256, "sliding_window": 8},
    "bamba": {"model_type": "bamba", "hidden_size": 64, "num_hidden_layers": 3,
              "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128,
              "vocab_size": 256, "mamba_n_heads": 8, "mamba_d_head": 16, "mamba_d_state": 16,
              "mamba_n_groups": 1, "mamba_expand": 2, "mamba_d_conv": 4,
              "mamba_chunk_size": 16, "attn_layer_indices": [1]},
}
FAMILIES = sorted(p.name for p in HF_DIR.iterdir() if (p / "config.json").exists()) \
    + sorted(CONTROLS)


@pytest.fixture(scope="module")
def configs(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    for name, raw in CONTROLS.items():
        (root / name).mkdir()
        (root / name / "config.json").write_text(json.dumps({**raw, "torch_dtype": "bfloat16"}))
    return lambda name: HF_DIR / name if (HF_DIR / name).exists() else root / name


@functools.lru_cache(maxsize=None)
def _cost(folder):
    return build_cost_model(load_model(folder))


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_state_bytes_equal_the_real_transformers_cache(configs, family):
    folder = configs(family)
    cost = _cost(folder)
    for length, per_layer in cache_bytes_per_layer(real_model(folder, torch.bfloat16)):
        assert sum(per_layer) == cost.kv_bytes(length) + cost.state_bytes()
        for index, nbytes in enumerate(per_layer):
            units = [l for l in cost.layers if decoder_layer(l.name) == index]
            assert nbytes == sum(l.kv_bytes(length) + l.state_bytes for l in units), index


@pytest.mark.parametrize("family", FAMILIES)
def test_flops_equal_flop_counter_on_the_analysed_module(configs, family):
    folder = configs(family)
    cost = _cost(folder)
    runner = HFRunner(load_model(folder), None)
    prefix = type(runner.model).__name__ + "." + runner.layers_path + "."
    for n, p in ((6, 4), (9, 0)):
        with torch.no_grad(), hf_kernels.substitute_kernels(runner.model):
            cache = runner._forward(p) if p else None
            with FlopCounterMode(display=False) as counter:
                runner._forward(n, copy.deepcopy(cache))
        counts = counter.get_flop_counts()
        layers = {k for k in counts if k.startswith(prefix) and k.count(".") == prefix.count(".")}
        counted = sum(sum(counts[k].values()) for k in layers)
        ours = cost.prefill_flops(n, p)
        assert abs(ours - counted) <= 0.01 * counted, (n, p)
        if p:       # from a cache every sample point had one: exact
            assert ours == counted


@pytest.mark.parametrize("family", ["nemotron-h-tiny", "jamba-tiny", "qwen3-next-tiny",
                                    "kimi-linear-tiny", "lfm2"])
def test_projection_flops_match_the_unmodified_model(configs, family):
    """nn.Linear FLOPs of the real model (its own kernels, float32) = those of the analysed one."""
    folder = configs(family)
    model = real_model(folder, torch.float32)
    runner = HFRunner(load_model(folder), DType.FLOAT32)

    def linear_flops(m, run):
        with FlopCounterMode(display=False) as counter:
            run()
        counts = counter.get_flop_counts()
        top = type(m).__name__ + "."
        return sum(sum(counts.get(top + name, {}).values())
                   for name, sub in m.named_modules()
                   if isinstance(sub, torch.nn.Linear) and name.startswith(runner.layers_path))

    with torch.no_grad():
        real = linear_flops(model, lambda: model(torch.zeros(1, 7, dtype=torch.long)))
        with hf_kernels.substitute_kernels(runner.model):
            ours = linear_flops(runner.model, lambda: runner._forward(7))
    assert real == ours > 0


EXPECTED_KINDS = {
    "nemotron-h-tiny": ["mamba2", "mlp", "mamba2", "mlp", "mamba2", "attention", "mlp",
                        "mamba2", "attention", "mlp"],
    "lfm2": ["short_conv", "mlp", "short_conv", "mlp", "attention", "mlp", "short_conv", "mlp"],
    "mamba": ["mamba1", "mamba1"],
    "llama": ["attention", "mlp", "attention", "mlp"],
}


def test_sliding_window_as_transformers_keeps_it(configs):
    """transformers keeps window - 1 tokens, as the reference model does."""
    layers = _cost(configs("mistral-swa")).layers
    assert [(l.label, l.window) for l in layers if l.kind is LayerKind.ATTENTION] == \
        [("sliding_attention", 7)] * 2


@pytest.mark.parametrize("family", sorted(EXPECTED_KINDS))
def test_units_are_classified_from_ops(configs, family):
    assert [l.kind.value for l in _cost(configs(family)).layers] == EXPECTED_KINDS[family]


def test_mla_is_told_apart_by_its_latent_up_projection(configs):
    kinds = {l.kind for l in _cost(configs("kimi-linear-tiny")).layers}
    assert {LayerKind.KDA, LayerKind.MLA, LayerKind.MOE} <= kinds
    assert LayerKind.ATTENTION not in kinds


def test_engine_layout_and_state_dtype(configs):
    folder = configs("nemotron-h-tiny")
    model = _cost(folder)
    engine = build_cost_model(load_model(folder), state_dtype=DType.FLOAT16, layout="vllm")
    for a, b in zip(model.layers, engine.layers):
        if a.kind is LayerKind.MAMBA2:
            assert b.conv_state_bytes * 4 == a.conv_state_bytes * 3       # d_conv 4 -> 3 columns
            assert b.recurrent_state_bytes * 2 == a.recurrent_state_bytes  # float32 -> float16
    assert (model.state_dtype, engine.state_dtype) == ("float32", "float16")


def test_unknown_scan_fails_naming_module_and_ops(configs, monkeypatch):
    """Without our substitute, Mamba2's chunked torch scan is ops no rule knows."""
    monkeypatch.delitem(hf_kernels.SUBSTITUTES, "mamba2_chunk_scan")
    with pytest.raises(UnsupportedModelError) as e:
        build_cost_model(load_model(configs("nemotron-h-tiny")))
    message = str(e.value)
    assert "model.layers.0.mixer" in message and "NemotronHMamba2Mixer" in message
    assert "aten.bmm" in message or "aten.einsum" in message


def test_bidirectional_model_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "bert", "hidden_size": 32, "num_hidden_layers": 1,
        "num_attention_heads": 2, "intermediate_size": 64, "vocab_size": 64}))
    with pytest.raises(UnsupportedModelError, match="BertSelfAttention: bidirectional"):
        build_cost_model(load_model(tmp_path))


@pytest.mark.parametrize("nested", [False, True], ids=["top-level", "text-config"])
def test_absurd_layer_count_is_refused_before_transformers_builds_it(tmp_path, nested):
    """num_hidden_layers 10⁸ (a typo) made transformers build configs for minutes."""
    raw = json.loads((HF_DIR / "jamba-tiny" / "config.json").read_text())
    if nested:
        raw = {"model_type": "qwen3_5", "text_config": {"num_hidden_layers": 10**8}}
    else:
        raw["num_hidden_layers"] = 10**8
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(SpecError, match=r"config\.json: num_hidden_layers: 100000000; "
                                        r"expected at most 10000"):
        build_cost_model(load_model(tmp_path))

"""Graph passes over traced layers: classification, node.meta annotations, errors, layouts."""

import dataclasses

import pytest
import torch
from torch import nn

from marconi.errors import UnsupportedModelError
from marconi.passes import build_cost_model
from marconi.passes.analyze import build_meta_layer
from marconi.passes.graph_passes import StateInfo
from marconi.passes.layer_analysis import analyze_layer
from marconi.passes.ref_common import CacheDtypes
from marconi.passes.trace import trace_layer
from marconi.spec import parse_spec
from marconi.units import DType

from test_passes_reference import BLOCKS


pytestmark = pytest.mark.usefixtures("one_torch_thread")

EXPECTED = {
    "attention": ("attention", "attention"), "sliding": ("attention", "sliding_attention"),
    "mla": ("mla", "mla"), "mla-qlora": ("mla", "mla"), "mamba1": ("mamba1", "mamba1"),
    "mamba2": ("mamba2", "mamba2"), "gdn": ("gdn", "gdn"), "kda": ("kda", "kda"),
    "linear_attention": ("linear_attention", "linear_attention"),
    "linear_attention-noconv": ("linear_attention", "linear_attention"),
    "short_conv": ("short_conv", "short_conv"), "mlp": ("mlp", "mlp"), "moe": ("moe", "moe"),
}
ROLES = {
    "attention": {"k": "kv", "v": "kv"}, "sliding": {"k": "kv", "v": "kv"},
    "mla": {"c_kv": "kv", "k_rope": "kv"}, "mla-qlora": {"c_kv": "kv", "k_rope": "kv"},
    "mamba1": {"ssm": "recurrent", "conv": "conv"}, "mamba2": {"ssm": "recurrent", "conv": "conv"},
    "gdn": {"ssm": "recurrent", "conv": "conv"}, "kda": {"ssm": "recurrent", "conv": "conv"},
    "linear_attention": {"ssm": "recurrent", "conv": "conv"},
    "linear_attention-noconv": {"ssm": "recurrent"},
    "short_conv": {"conv": "conv"}, "mlp": {}, "moe": {},
}


def _traced(block: str):
    spec = parse_spec({"name": "g", "d_model": 32, "vocab_size": 64, "dtype": "float32",
                       "layers": [BLOCKS[block]]})
    layer = build_meta_layer(spec.layers[0], 32, CacheDtypes())
    return trace_layer(layer, 32, torch.float32, block)


@pytest.mark.parametrize("block", sorted(EXPECTED))
def test_classification_and_meta_annotations(block):
    traced = _traced(block)
    analysis = analyze_layer(traced, block)
    kind, label = EXPECTED[block]
    assert (analysis.classification.kind.value, analysis.classification.label) == (kind, label)
    nodes = list(traced.graph_module.graph.nodes)
    assert sum("marconi.kind" in n.meta for n in nodes) == 1
    states = {n.meta["marconi.state"].name: n.meta["marconi.state"].role
              for n in nodes if "marconi.state" in n.meta}
    assert states == ROLES[block]
    calls = [n for n in nodes if n.op == "call_function"]
    assert all("marconi.flops" in n.meta for n in calls)
    assert sum(n.meta["marconi.flops"] for n in calls) > 0


def test_one_trace_covers_every_length():
    traced = _traced("mamba2")
    x = next(n for n in traced.graph_module.graph.nodes if n.op == "placeholder")
    assert isinstance(x.meta["val"].shape[1], torch.SymInt)   # dynamic token dim
    attention = _traced("attention")
    analyze_layer(attention, "attention")
    kv = [n for n in attention.graph_module.graph.nodes if "marconi.state" in n.meta][0]
    assert isinstance(kv.meta["val"].shape[2], torch.SymInt)  # dynamic cached length
    assert kv.meta["marconi.state"] == StateInfo("k", "kv", bytes_per_token=2 * 8 * 4)


class CumsumRecurrence(nn.Module):
    """A made-up recurrent layer whose state update is an op no rule knows (cumsum)."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(32, 32)

    def init_state(self, batch, device):
        return {"acc": torch.zeros(batch, 32, device=device)}

    def forward(self, x, state, positions):
        run = torch.cumsum(self.proj(x), dim=1) + state["acc"][:, None]
        return run, {"acc": run[:, -1]}


def test_unknown_recurrence_names_module_and_op():
    with torch.device("meta"):
        layer = CumsumRecurrence()
    traced = trace_layer(layer, 32, torch.float32, "custom.yaml: layers[0]")
    with pytest.raises(UnsupportedModelError) as e:
        analyze_layer(traced, "custom.yaml: layers[0]")
    message = str(e.value)
    assert "custom.yaml: layers[0]" in message
    assert "module" in message and "aten.linear" in message
    assert "cumsum" in message and "CumsumRecurrence" in message


# ---------------------------------------------------------------- dtypes and layouts

def _spec(**top):
    return parse_spec({"name": "d", "d_model": 32, "vocab_size": 64,
                       "layers": [BLOCKS["mamba2"], BLOCKS["attention"]], **top})


def test_layouts_resize_conv_state():
    spec = _spec(dtype="bfloat16")
    model = build_cost_model(spec, layout="model")
    vllm = build_cost_model(spec, layout="vllm")
    hf = build_cost_model(spec, layout="transformers")
    conv_dim = 16 * 8 // 2 * 0 + 64 + 2 * 2 * 8     # d_inner 64 + 2·groups·d_state
    assert model.layers[0].conv_state_bytes == conv_dim * 3 * 2 == vllm.layers[0].conv_state_bytes
    assert hf.layers[0].conv_state_bytes == conv_dim * 4 * 2
    assert model.layers[0].recurrent_state_bytes == hf.layers[0].recurrent_state_bytes


@pytest.mark.parametrize("dtype,state,kv_token,ssm", [
    (DType.BFLOAT16, DType.FLOAT32, 2 * 2 * 8 * 2, 8 * 8 * 8 * 4),
    (DType.FLOAT8, DType.FLOAT16, 2 * 2 * 8 * 1, 8 * 8 * 8 * 2),
    (DType.FLOAT32, DType.BFLOAT16, 2 * 2 * 8 * 4, 8 * 8 * 8 * 2),
], ids=["bf16-fp32", "fp8-fp16", "fp32-bf16"])
def test_dtype_overrides(dtype, state, kv_token, ssm):
    cost = build_cost_model(_spec(), dtype=dtype, state_dtype=state)
    assert cost.layers[1].kv_bytes_per_token == kv_token
    assert cost.layers[0].recurrent_state_bytes == ssm
    assert (cost.dtype, cost.state_dtype) == (dtype.value, state.value)


def test_cost_model_is_frozen_and_fingerprinted():
    a, b = build_cost_model(_spec()), build_cost_model(_spec())
    assert a.fingerprint() == b.fingerprint()
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.layers[0].window = 3
    assert build_cost_model(_spec(), state_dtype=DType.FLOAT16).fingerprint() != a.fingerprint()

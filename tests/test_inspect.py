"""`marconi-plan inspect`: table and JSON output, stable JSON shape, one-line errors."""

import json

import pytest

from marconi.cli import main
from marconi.passes import build_cost_model
from marconi.spec import load_model

from helpers import EXAMPLES


pytestmark = pytest.mark.usefixtures("one_torch_thread")

MODEL = str(EXAMPLES / "nemotron-h-8b.yaml")


def _json(capsys, *argv):
    assert main(["inspect", *argv, "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_json_shape_is_stable(capsys):
    doc = _json(capsys, MODEL)
    assert {"model", "dtype", "state_dtype", "layers", "totals"} <= set(doc)
    assert {"kv_bytes_per_token", "state_bytes", "checkpoint_break_even_tokens"} <= \
        set(doc["totals"])
    for layer in doc["layers"]:
        assert {"index", "kind", "kv_bytes_per_token", "state_bytes", "flops"} <= set(layer)
        assert isinstance(layer["kv_bytes_per_token"], int)
        assert isinstance(layer["state_bytes"], int)
        assert set(layer["flops"]) == {"c_n", "c_nn", "c_np", "c_p", "c_pp", "c_1"}
    assert [l["index"] for l in doc["layers"]] == list(range(len(doc["layers"])))


def test_json_equals_the_library_cost_model(capsys):
    doc = _json(capsys, MODEL)
    cost = build_cost_model(load_model(MODEL))
    assert doc["totals"]["state_bytes"] == cost.state_bytes()
    assert doc["totals"]["kv_bytes_per_token"] == cost.kv_bytes_per_token
    assert sum(l["state_bytes"] for l in doc["layers"]) == cost.state_bytes()
    assert sum(l["kv_bytes_per_token"] for l in doc["layers"]) == cost.kv_bytes_per_token


@pytest.mark.parametrize("flags,dtype,state", [
    ([], "bfloat16", "float32"),
    (["--dtype", "fp16", "--state-dtype", "bf16"], "float16", "bfloat16"),
], ids=["spec-dtypes", "overridden"])
def test_dtype_flags(capsys, flags, dtype, state):
    doc = _json(capsys, MODEL, *flags)
    assert (doc["dtype"], doc["state_dtype"]) == (dtype, state)


def test_layout_flag_changes_conv_bytes(capsys):
    model = _json(capsys, MODEL)
    hf = _json(capsys, MODEL, "--layout", "transformers")
    mamba = next(i for i, l in enumerate(model["layers"]) if l["kind"] == "mamba2")
    m, h = model["layers"][mamba], hf["layers"][mamba]
    assert h["conv_state_bytes"] * 3 == m["conv_state_bytes"] * 4      # d_conv 4 vs 3 columns
    assert h["recurrent_state_bytes"] == m["recurrent_state_bytes"]


def test_table_lists_every_layer_and_totals(capsys):
    assert main(["inspect", MODEL]) == 0
    out = capsys.readouterr().out
    spec = load_model(MODEL)
    assert out.count("mamba2") >= spec.count(spec.layers[0].kind)
    assert "KV per token" in out and "state per checkpoint" in out and "break-even" in out


@pytest.mark.parametrize("argv,expected", [
    (["--dtype", "float7"], "--dtype: unknown dtype 'float7'"),
    (["--state-dtype", "x"], "--state-dtype: unknown dtype 'x'"),
], ids=["bad-dtype", "bad-state-dtype"])
def test_bad_flags_exit_2_one_line(capsys, argv, expected):
    assert main(["inspect", MODEL, *argv]) == 2
    err = capsys.readouterr()
    assert err.out == "" and len(err.err.strip().splitlines()) == 1 and expected in err.err


def test_unsupported_architecture_exit_2_names_module(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "bert", "hidden_size": 32, "num_hidden_layers": 1,
        "num_attention_heads": 2, "intermediate_size": 64, "vocab_size": 64}))
    assert main(["inspect", str(tmp_path / "config.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bert" in err.lower()

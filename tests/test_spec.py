"""model.yaml / config.json loading: every example loads; every bad spec fails precisely."""

import json
import sys
import textwrap

import pytest

from helpers import EXAMPLES
from marconi.errors import MissingExtraError, SpecError, UserError
from marconi.layers import LayerKind
from marconi.spec import HFConfig, ModelSpec, load_model, parse_spec
from marconi.units import DType

GOOD = textwrap.dedent("""\
    name: tiny
    d_model: 64
    blocks:
      M: {kind: mamba2, d_state: 16, head_dim: 16}
      A: {kind: attention, n_heads: 4, n_kv_heads: 2}
      F: {kind: mlp, d_ff: 128}
    pattern: "MFAF"
    """)


def write(tmp_path, text, name="model.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_example_loads(path):
    spec = load_model(path)
    assert isinstance(spec, ModelSpec)
    assert spec.layers and spec.source, "every example names its public source"
    assert any(layer.kind.is_recurrent for layer in spec.layers)


def test_marconi_7b_counts():
    spec = load_model(EXAMPLES / "marconi-7b-hybrid.yaml")
    assert (spec.count(LayerKind.ATTENTION), spec.count(LayerKind.MAMBA2),
            spec.count(LayerKind.MLP)) == (4, 24, 28)
    assert spec.d_model == 4096 and spec.layers[0].params.d_state == 128


def test_good_spec_derives_fields(tmp_path):
    spec = load_model(write(tmp_path, GOOD))
    mamba, attn = spec.layers[0].params, spec.layers[2].params
    assert mamba.n_heads == 2 * 64 // 16 and mamba.d_inner == 128
    assert attn.head_dim == 16 and attn.n_kv_heads == 2
    assert spec.dtype is DType.BFLOAT16 and spec.state_dtype is DType.FLOAT32
    assert spec.conv_dtype is DType.BFLOAT16


def test_explicit_layer_list_and_repeat(tmp_path):
    text = GOOD.replace('pattern: "MFAF"', 'layers: [M, {kind: mlp, d_ff: 32}]\nrepeat: 3')
    spec = load_model(write(tmp_path, text))
    assert [l.kind for l in spec.layers] == [LayerKind.MAMBA2, LayerKind.MLP] * 3
    assert [l.index for l in spec.layers] == list(range(6))


@pytest.mark.parametrize("mutate, where, what", [
    pytest.param(lambda t: t.replace('pattern: "MFAF"', "layers: [M, F, {kind: mamba3}]"),
                 "model.yaml: layers[2].kind", "unknown 'mamba3'; expected one of attention",
                 id="unknown-kind"),
    pytest.param(lambda t: t.replace("d_ff: 128", "d_ff: -5"),
                 "model.yaml: blocks.F.d_ff", "must be positive, got -5", id="negative-dim"),
    pytest.param(lambda t: t.replace("d_model: 64\n", ""),
                 "model.yaml: d_model", "missing required field", id="missing-top-field"),
    pytest.param(lambda t: t.replace("d_state: 16, ", ""),
                 "model.yaml: blocks.M.d_state", "missing required field", id="missing-field"),
    pytest.param(lambda t: t.replace("d_model: 64", "d_model: big"),
                 "model.yaml: d_model", "expected an integer, got 'big'", id="wrong-type"),
    pytest.param(lambda t: t.replace("n_heads: 4,", "n_heads: 4.5,"),
                 "model.yaml: blocks.A.n_heads", "expected an integer", id="float-for-int"),
    pytest.param(lambda t: t.replace('"MFAF"', '"MFXF"'),
                 "model.yaml: pattern[2]", "unknown block 'X'", id="unknown-block"),
    pytest.param(lambda t: t.replace("d_ff: 128", "d_ff: 128, width: 3"),
                 "model.yaml: blocks.F.width", "unknown field for kind mlp", id="unknown-field"),
    pytest.param(lambda t: t + "dtype: float99\n",
                 "model.yaml: dtype", "unknown dtype 'float99'", id="bad-dtype"),
    pytest.param(lambda t: t + "layers: [M]\n",
                 "model.yaml: layers", "exactly one of 'pattern'", id="pattern-and-layers"),
    pytest.param(lambda t: t.replace("n_kv_heads: 2", "n_kv_heads: 3"),
                 "model.yaml: blocks.A.n_kv_heads", "does not divide", id="gqa-mismatch"),
    pytest.param(lambda t: t + "frobnicate: 1\n",
                 "model.yaml: frobnicate", "unknown field", id="unknown-top-field"),
    pytest.param(lambda t: t + "repeat: 100000000\n", "model.yaml: repeat",
                 "4 × 100000000 = 400000000 layers; expected at most 10000", id="huge-repeat"),
])
def test_bad_spec_names_field(tmp_path, mutate, where, what):
    with pytest.raises(SpecError) as e:
        load_model(write(tmp_path, mutate(GOOD)))
    assert str(e.value).startswith(where + ": "), str(e.value)
    assert what in str(e.value)
    assert "\n" not in str(e.value)


def test_yaml_syntax_error_names_line(tmp_path):
    p = write(tmp_path, "name: x\nd_model: [1, 2\nblocks: {}\n")
    with pytest.raises(SpecError, match=r"model\.yaml:\d+: YAML syntax error"):
        load_model(p)


def test_missing_file(tmp_path):
    with pytest.raises(SpecError, match="no such file"):
        load_model(tmp_path / "nope.yaml")


def test_folder_without_config_json(tmp_path):
    with pytest.raises(SpecError, match=r": folder holds no config\.json; expected"):
        load_model(tmp_path)


def test_top_level_not_mapping():
    with pytest.raises(SpecError, match="expected a mapping at the top level"):
        parse_spec([1, 2])


def test_hf_config_and_folder(tmp_path):
    pytest.importorskip("transformers")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "jamba", "hidden_size": 8}))
    for arg in (tmp_path, tmp_path / "config.json"):
        src = load_model(arg)
        assert isinstance(src, HFConfig) and src.model_type == "jamba"


@pytest.mark.parametrize("text, match", [
    ("{not json", "invalid JSON"), ('{"hidden_size": 3}', "model_type"),
], ids=["syntax", "no-model-type"])
def test_bad_hf_config(tmp_path, text, match):
    pytest.importorskip("transformers")
    with pytest.raises(SpecError, match=match):
        load_model(write(tmp_path, text, "config.json"))


def test_config_json_without_transformers_names_the_extra(tmp_path, monkeypatch, capsys):
    """Checked before anything is read: even a broken config.json gets the one line."""
    from marconi.cli import main
    monkeypatch.setitem(sys.modules, "transformers", None)     # `import transformers` fails
    path = write(tmp_path, "{not json", "config.json")
    with pytest.raises(MissingExtraError) as e:
        load_model(tmp_path)
    assert str(e.value) == (f"{path}: a Hugging Face config.json needs transformers, which "
                            "is not installed; install it with: pip install 'marconi-plan[hf]'")
    assert isinstance(e.value, UserError) and isinstance(e.value, ImportError)
    assert main(["inspect", str(tmp_path)]) == 2
    out = capsys.readouterr()
    assert out.out == "" and len(out.err.strip().splitlines()) == 1
    assert "pip install 'marconi-plan[hf]'" in out.err


def test_fingerprint_tracks_content(tmp_path):
    a = load_model(write(tmp_path, GOOD))
    b = load_model(write(tmp_path, GOOD.replace("d_ff: 128", "d_ff: 256"), "b.yaml"))
    assert a.fingerprint() != b.fingerprint()
    assert a.fingerprint() == load_model(tmp_path / "model.yaml").fingerprint()


HUGE = 10**30


@pytest.mark.parametrize("mutate, expected", [
    pytest.param(lambda t: t.replace("d_state: 16", f"d_state: {HUGE}"),
                 "model.yaml: blocks.M.d_state: 1e+30; expected at most 262144", id="int-1e30"),
    pytest.param(lambda t: t.replace("d_state: 16", "d_state: 1.0e+30"),
                 "model.yaml: blocks.M.d_state: expected an integer, got 1e+30", id="float-1e30"),
    pytest.param(lambda t: t.replace("d_state: 16", "d_state: 1e30"),    # YAML 1.1: a string
                 "model.yaml: blocks.M.d_state: expected an integer, got '1e30'",
                 id="string-1e30"),
    pytest.param(lambda t: t.replace("d_state: 16", "d_state: 1" + "0" * 5000),
                 "model.yaml: unreadable value: Exceeds the limit (4300 digits)",
                 id="int-5000-digits"),
    pytest.param(lambda t: t.replace("d_model: 64", f"d_model: {HUGE}"),
                 "model.yaml: d_model: 1e+30; expected at most 262144", id="d_model"),
    pytest.param(lambda t: t.replace("name: tiny", f"name: tiny\nvocab_size: {2**24 + 1}"),
                 "model.yaml: vocab_size: 16777217; expected at most 16777216", id="vocab"),
    pytest.param(lambda t: t.replace("d_ff: 128", "d_ff: 262145"),
                 "model.yaml: blocks.F.d_ff: 262145; expected at most 262144", id="d_ff"),
    pytest.param(lambda t: t.replace("head_dim: 16}", "head_dim: 1, expand: 262144}"),
                 "model.yaml: blocks.M.n_heads: 16777216, derived from the fields given; "
                 "expected at most 262144", id="derived"),
    pytest.param(lambda t: t.replace("d_state: 16, head_dim: 16",
                                     "d_state: 262144, head_dim: 4096, n_heads: 4096"),
                 "model.yaml: blocks.M.d_state: 262144; one checkpoint holds 16.00 TiB; "
                 "expected at most 1.00 TiB", id="checkpoint-16TiB"),
    pytest.param(lambda t: t.replace("n_heads: 4, n_kv_heads: 2",
                                     "n_heads: 262144, n_kv_heads: 262144, head_dim: 262144")
                 .replace('"MFAF"', '"AAAAAAAA"'),
                 "model.yaml: blocks.A.n_heads: 262144; one token's KV is 2.00 TiB; "
                 "expected at most 1.00 TiB", id="kv-2TiB"),
])
def test_absurd_sizes_exit_2_naming_the_field(tmp_path, capsys, mutate, expected):
    """Sizes that overflowed torch (a traceback, exit 1) or the planner's int64 byte counts
    are refused with the field named: exit 2, one line on stderr, nothing on stdout."""
    from marconi.cli import main
    path = write(tmp_path, mutate(GOOD))
    assert main(["inspect", str(path)]) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert len(out.err.strip().splitlines()) == 1, out.err
    assert expected in out.err, out.err


def test_largest_real_sizes_are_accepted(tmp_path):
    """Each bound itself is accepted (the examples, real models, load above)."""
    text = GOOD.replace("name: tiny", "name: tiny\nvocab_size: 16777216") \
        .replace("d_ff: 128", "d_ff: 262144").replace("n_kv_heads: 2", "n_kv_heads: 2, "
                                                      "window: 2147483648")
    spec = load_model(write(tmp_path, text))
    assert spec.vocab_size == 2**24 and spec.layers[1].params.d_ff == 2**18
    assert spec.layers[2].params.window == 2**31

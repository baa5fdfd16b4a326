"""config.json as users have them: written by transformers' own `save_pretrained`, or by
hand with the literal Infinity / NaN of configs on the Hub.

`save_pretrained` writes every default field and encodes non-finite floats as
`{"__float__": "Infinity"}` (Nemotron-H, Bamba, Falcon-H1 and Granite-4.0-H store
`time_step_limit = (0.0, inf)`); transformers 5.24 validates config fields strictly, so
a config read with `json` alone is refused. Each family is saved into a folder,
`marconi-plan inspect FOLDER --format json` runs through the CLI, and every decoder
layer's KV and state bytes equal those of the cache the real model (built from the same
folder by `AutoConfig.from_pretrained`) holds after prefills of 5 and 9 tokens.
"""

import json
import math
import re
import subprocess
import sys

import pytest
import torch

transformers = pytest.importorskip("transformers")

from marconi.cli import main  # noqa: E402
from marconi.spec import load_model  # noqa: E402

from helpers import REPO  # noqa: E402
from hf_cache import cache_bytes_per_layer, decoder_layer, real_model  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

HF_DIR = REPO / "examples" / "hf"
BAMBA = {"model_type": "bamba", "hidden_size": 64, "num_hidden_layers": 3,
         "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128,
         "vocab_size": 256, "mamba_n_heads": 8, "mamba_d_head": 16, "mamba_d_state": 16,
         "mamba_n_groups": 1, "mamba_expand": 2, "mamba_d_conv": 4, "mamba_chunk_size": 16,
         "attn_layer_indices": [1], "torch_dtype": "bfloat16"}
FAMILIES = {"nemotron-h": "nemotron-h-tiny", "bamba": BAMBA, "falcon-h1": "falcon-h1-tiny",
            "granite-4.0-h": "granite-4.0-h-tiny-moe", "jamba": "jamba-tiny",
            "zamba2": "zamba2-tiny", "qwen3-next": "qwen3-next-tiny"}
INFINITY_ENCODED = ("nemotron-h", "bamba", "falcon-h1", "granite-4.0-h")
ENCODED_INF = {"__float__": "Infinity"}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """family -> a folder holding the config.json transformers' save_pretrained wrote."""
    root = tmp_path_factory.mktemp("saved")
    folders = {}

    def get(family):
        if family not in folders:
            source = FAMILIES[family]
            raw = source if isinstance(source, dict) else \
                json.loads((HF_DIR / source / "config.json").read_text())
            folders[family] = root / family
            transformers.AutoConfig.for_model(**raw).save_pretrained(folders[family])
        return folders[family]
    return get


def _inspect(capsys, folder) -> dict:
    rc = main(["inspect", str(folder), "--format", "json"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert out.err == ""
    return json.loads(out.out)


@pytest.mark.parametrize("family", INFINITY_ENCODED)
def test_save_pretrained_encodes_infinity(saved, family):
    """The premise of this file: without it the families below test nothing new."""
    raw = json.loads((saved(family) / "config.json").read_text())
    assert raw["time_step_limit"] == [0.0, ENCODED_INF]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_inspect_of_a_saved_folder_equals_the_real_cache(saved, capsys, family):
    folder = saved(family)
    layers = _inspect(capsys, folder)["layers"]
    assert layers
    for length, per_layer in cache_bytes_per_layer(real_model(folder, torch.bfloat16)):
        for index, nbytes in enumerate(per_layer):
            units = [l for l in layers if decoder_layer(l["name"]) == index]
            assert nbytes == sum(l["kv_bytes_per_token"] * length + l["state_bytes"]
                                 for l in units), (length, index)
        assert sum(per_layer) > 0


def test_literal_infinity_and_nan_read_as_transformers_reads_them(saved, capsys, tmp_path):
    """A hand-written config.json with the bare Infinity / NaN Python's json writes (and
    the Hub's configs carry) reads as the encoded one: the same mapping, the same sizes."""
    encoded = saved("nemotron-h")
    raw = json.loads((encoded / "config.json").read_text())
    raw["time_step_limit"] = [0.0, math.inf]
    (tmp_path / "inf").mkdir()
    (tmp_path / "inf" / "config.json").write_text(json.dumps(raw, indent=2))
    raw["time_step_floor"] = math.nan
    (tmp_path / "nan").mkdir()
    (tmp_path / "nan" / "config.json").write_text(json.dumps(raw, indent=2))
    assert "Infinity" in (tmp_path / "nan" / "config.json").read_text()
    assert "NaN" in (tmp_path / "nan" / "config.json").read_text()

    assert load_model(tmp_path / "inf").fingerprint() == load_model(encoded).fingerprint()
    source = load_model(tmp_path / "nan")
    assert source.config["time_step_limit"] == [0.0, math.inf]
    assert math.isnan(source.config["time_step_floor"])
    assert source.transformers_config.time_step_limit[1] == math.inf
    layers = _inspect(capsys, encoded)["layers"]
    for folder in (tmp_path / "inf", tmp_path / "nan"):
        assert _inspect(capsys, folder)["layers"] == layers


def test_an_unchanged_config_keeps_its_fingerprint():
    """Plans carry the fingerprint: reading through transformers must not change it
    (values computed by the json-only loader this replaced)."""
    assert load_model(HF_DIR / "nemotron-h-tiny").fingerprint() == "7fac1a628f27a91c"
    assert load_model(HF_DIR / "jamba-tiny").fingerprint() == "320087e248b73f52"


def test_a_saved_folder_inspects_with_nothing_on_stderr(saved):
    """As a user runs it: a fresh interpreter, Python's default warning filters."""
    run = subprocess.run([sys.executable, "-m", "marconi.cli", "inspect",
                          str(saved("nemotron-h")), "--format", "json"],
                         capture_output=True, text=True, cwd=REPO, timeout=600)
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    assert json.loads(run.stdout)["layers"]


@pytest.mark.parametrize("field, value, match", [
    pytest.param("hidden_size", "sixty-four", r"config\.json: hidden_size: transformers' "
                 r"NemotronHConfig refuses it: .*expected int", id="wrong-type"),
    pytest.param("time_step_limit", [0.0, "inf"], r"config\.json: time_step_limit: "
                 r"transformers' NemotronHConfig refuses it", id="bad-list-item"),
])
def test_a_field_transformers_refuses_is_named(saved, capsys, tmp_path, field, value, match):
    raw = json.loads((saved("nemotron-h") / "config.json").read_text())
    raw[field] = value
    (tmp_path / "config.json").write_text(json.dumps(raw))
    assert main(["inspect", str(tmp_path)]) == 2
    out = capsys.readouterr()
    assert out.out == "" and len(out.err.strip().splitlines()) == 1, out.err
    assert re.search(match, out.err), out.err


@pytest.mark.parametrize("value, match", [
    pytest.param(10**30, r"config\.json: ssm_state_size: 1e\+30; torch cannot size the "
                 r"model's tensors \(int64 overflow\)", id="overflow"),
    pytest.param(10**11, r"config\.json: model\.layers\.0\.mixer: one checkpoint holds "
                 r"197\.91 TiB; expected at most 1\.00 TiB", id="above-1TiB"),
])
def test_an_absurd_dimension_is_refused(capsys, tmp_path, value, match):
    """A typo in a config.json's dimension: exit 2 and one line, not a torch traceback."""
    raw = json.loads((HF_DIR / "nemotron-h-tiny" / "config.json").read_text())
    raw["ssm_state_size"] = value
    (tmp_path / "config.json").write_text(json.dumps(raw))
    assert main(["inspect", str(tmp_path)]) == 2
    out = capsys.readouterr()
    assert out.out == "" and len(out.err.strip().splitlines()) == 1, out.err
    assert re.search(match, out.err), out.err

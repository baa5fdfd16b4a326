"""`--warmup FRACTION` on `simulate` and `bound`: the window is stated, validated, honoured.

(The main job's warm-up is tested with its other end-to-end runs in test_plan_cli.py.)
"""

from __future__ import annotations

import dataclasses
import json

import pytest

import marconi.passes
from marconi.cli import main
from marconi.runtime.capacity import Capacity
from marconi.runtime.config import CacheConfig
from marconi.runtime.sim.generators import default_workload
from marconi.runtime.sim.simulator import simulate
from helpers import EXAMPLES, paper_7b_cost

MODEL = str(EXAMPLES / "marconi-7b-hybrid.yaml")


@pytest.fixture(autouse=True)
def hand_built_model(monkeypatch):
    """Skip tracing: the CLI gets the hand-built paper model (tests stay fast)."""
    monkeypatch.setattr(marconi.passes, "build_cost_model",
                        lambda source, dtype=None, state_dtype=None, layout="model":
                        paper_7b_cost())


def run_cli(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as e:                 # argparse's usage errors exit from parsing
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_simulate_json_counts_the_last_half_as_the_library_does(capsys):
    code, out, _ = run_cli(capsys, "simulate", MODEL, "--capacity", "20GB", "--warmup", "0.5",
                           "--policy", "sglang,infinite", "--format", "json")
    assert code == 0
    doc = json.loads(out)
    assert doc["warmup"] == {"fraction": 0.5, "requests": 253}      # ⌊0.5 · 507⌋
    expected = simulate(default_workload(0), paper_7b_cost(),
                        CacheConfig(Capacity.shared(20 * 10**9), warmup=0.5),
                        ["sglang", "infinite"])
    for got, want in zip(doc["results"], expected.results):
        assert got["requests"] == 254 and got["warmup_requests"] == 253
        want = dataclasses.asdict(dataclasses.replace(want, seconds=got["seconds"]))
        assert {k: got[k] for k in want} == want


def test_simulate_text_states_the_window(capsys):
    code, out, _ = run_cli(capsys, "simulate", MODEL, "--capacity", "20GB", "--warmup", "0.5",
                           "--policy", "sglang")
    assert code == 0
    assert ("Warm-up: the first 253 of 507 requests (50 %) filled the cache and are not "
            "counted; figures cover the last 254.") in out


def test_no_warmup_leaves_the_text_alone(capsys):
    _, out, _ = run_cli(capsys, "simulate", MODEL, "--capacity", "20GB", "--policy", "sglang")
    assert "Warm-up" not in out


@pytest.mark.parametrize("command", ["simulate", "bound", "plan"])
@pytest.mark.parametrize("value,why", [
    pytest.param("1", "1 is not in [0, 1)", id="one"),
    pytest.param("-0.5", "-0.5 is not in [0, 1)", id="negative"),
    pytest.param("half", "'half' is not a number", id="text"),
    pytest.param("nan", "nan is not in [0, 1)", id="nan"),
])
def test_warmup_outside_zero_one_exits_2_with_one_line(command, value, why, tmp_path,
                                                       traces_dir, capsys):
    trace = str(traces_dir / "mooncake_synthetic.jsonl")
    out = tmp_path / "runtime.yaml"
    argv = {"simulate": ["simulate", MODEL, "--capacity", "20GB"],
            "bound": ["bound", MODEL, "--trace", trace, "--capacity", "20GB"],
            "plan": [MODEL, "-o", str(out)]}[command]
    code, stdout, err = run_cli(capsys, *argv, f"--warmup={value}")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and stdout == "", err
    assert f"argument --warmup: {why}" in lines[0]
    assert not out.exists()


def test_bound_json_states_the_window(capsys, tmp_path):
    lines = [json.dumps({"session_id": i % 3, "turn_id": i, "ts": float(i),
                         "input_tokens": list(range(200 + 10 * i)), "output_tokens": [1, 2]})
             for i in range(8)]
    trace = tmp_path / "t.jsonl"
    trace.write_text("\n".join(lines) + "\n")
    docs = {}
    for warmup in ("0", "0.5"):
        code, out, _ = run_cli(capsys, "bound", MODEL, "--trace", str(trace), "--capacity",
                               "20GB", "--warmup", warmup, "--format", "json")
        assert code == 0
        docs[warmup] = json.loads(out)
    assert docs["0"]["warmup"] == {"fraction": 0.0, "requests": 0}
    assert docs["0.5"]["warmup"] == {"fraction": 0.5, "requests": 4}
    # each input extends the previous one: ample room, so the bound is the counted share of
    # the ideal, which is larger for the later (longer, more reused) requests
    assert docs["0.5"]["lp_upper_bound_flop_savings"] > docs["0"]["lp_upper_bound_flop_savings"]

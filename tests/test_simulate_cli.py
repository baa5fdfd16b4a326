"""`marconi-plan simulate`: JSON shape, table, errors, parallel jobs."""

from __future__ import annotations

import json

import pytest

import marconi.passes
from marconi.cli import main
from helpers import EXAMPLES, paper_7b_cost

MODEL = str(EXAMPLES / "marconi-7b-hybrid.yaml")
KEYS = {"policy", "token_hit_rate", "request_hit_rate", "flop_savings", "peak_occupancy",
        "ttft_p50_ms", "ttft_p95_ms", "requests", "seconds"}


@pytest.fixture
def hand_built_model(monkeypatch):
    """Skip tracing: the CLI gets the hand-built paper model (tests stay fast)."""
    monkeypatch.setattr(marconi.passes, "build_cost_model",
                        lambda source, dtype=None, state_dtype=None, layout="model":
                        paper_7b_cost())


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_json_shape_on_the_builtin_workload(hand_built_model, capsys):
    code, out, _ = run_cli(capsys, "simulate", MODEL, "--capacity", "20GB",
                           "--policy", "sglang,marconi,infinite", "--format", "json")
    assert code == 0
    doc = json.loads(out)
    assert doc["trace"] == "builtin:default" and doc["capacity_bytes"] == 20 * 10**9
    assert doc["model"] == "paper-7b-by-hand"
    assert [r["policy"] for r in doc["results"]] == ["sglang", "marconi", "infinite"]
    for r in doc["results"]:
        assert KEYS <= set(r)
        assert 0.0 <= r["token_hit_rate"] <= 1.0 and r["requests"] == doc["workload"]["requests"]
    inf = doc["results"][2]
    assert all(r["token_hit_rate"] <= inf["token_hit_rate"] for r in doc["results"])


def test_block_trace_table_and_parallel_jobs_agree(hand_built_model, capsys, traces_dir):
    trace = str(traces_dir / "mooncake_synthetic.jsonl")
    argv = ["simulate", MODEL, "--trace", trace, "--capacity", "200GB", "--limit", "400",
            "--policy", "vllm-align,sglang", "--format", "json"]
    _, serial, _ = run_cli(capsys, *argv)
    _, parallel, _ = run_cli(capsys, *argv, "--jobs", "2")
    strip = [{k: v for k, v in r.items() if k != "seconds"}
             for r in json.loads(serial)["results"]]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"}
                     for r in json.loads(parallel)["results"]]
    code, table, _ = run_cli(capsys, *argv[:-2])
    assert code == 0 and "512-token blocks (inferred)" in table and "fresh ids" in table


@pytest.mark.parametrize("argv, message", [
    (["--policy", "sglang,lru"], "unknown policy 'lru'; expected one of"),
    (["--trace", "builtin:nope"], "unknown built-in workload 'nope'"),
    (["--state-fraction", "1.5"], "--state-fraction"),
    (["--device", "tpu"], "unknown device 'tpu'"),
], ids=["policy", "builtin", "state-fraction", "device"])
def test_bad_input_exits_2_with_one_line(hand_built_model, capsys, argv, message):
    code, out, err = run_cli(capsys, "simulate", MODEL, "--capacity", "1GB", *argv)
    assert code == 2 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1


def test_end_to_end_with_the_traced_model(capsys):
    """The real path: build_cost_model(load_model(MODEL)) from examples/."""
    code, out, _ = run_cli(capsys, "simulate", MODEL, "--capacity", "5GB",
                           "--policy", "sglang", "--limit", "60", "--format", "json")
    assert code == 0
    doc = json.loads(out)
    assert doc["model"] == "marconi-7b-hybrid" and doc["results"][0]["requests"] == 60


@pytest.mark.parametrize("flag", ["--jobs", "--chunk-size", "--limit"])
def test_numeric_flags_below_one_are_usage_errors(hand_built_model, capsys, flag):
    with pytest.raises(SystemExit) as e:
        main(["simulate", MODEL, "--capacity", "1GB", flag, "0"])
    assert e.value.code == 2 and "expected an integer ≥ 1" in capsys.readouterr().err


def _saved_plan(tmp_path, cost, **rules):
    """A runtime.yaml for `cost`, with `rules` changed from the default plan."""
    import dataclasses

    from marconi.runtime.plan.rules import default_plan
    from marconi.runtime.plan.plan_file import write_plan
    plan = dataclasses.replace(default_plan(cost.model, cost.fingerprint(), 1, None, 20 * 10**9),
                               **rules)
    path = tmp_path / "runtime.yaml"
    write_plan(plan, path)
    return path


def test_saved_plan_is_replayed_as_planned(hand_built_model, capsys, tmp_path):
    path = _saved_plan(tmp_path, paper_7b_cost())
    code, out, _ = run_cli(capsys, "simulate", MODEL, "--capacity", "20GB", "--policy", "sglang",
                           "--plan", str(path), "--format", "json")
    assert code == 0
    doc = json.loads(out)
    assert [r["policy"] for r in doc["results"]] == ["sglang", "planned"]
    # the saved default plan is bound as is: the policy does not re-plan online
    from marconi.runtime.config import CacheConfig
    from marconi.runtime.capacity import Capacity
    from marconi.runtime.sim.generators import default_workload
    from marconi.planner.plan import planned_policy
    from marconi.runtime.cache.policies.planned import Planned
    from marconi.runtime.plan.plan_file import load_plan
    from marconi.runtime.sim.simulator import run_policy
    cost = paper_7b_cost()
    config = CacheConfig(Capacity.shared(20 * 10**9))
    direct = run_policy("planned", default_workload(0), cost, config,
                        bound={"planned": planned_policy(load_plan(path, cost))})
    assert doc["results"][1]["flop_savings"] == pytest.approx(direct.flop_savings, rel=1e-12)
    # hedged: the saved rules lead, in a ghost of their own, as they replay alone
    alone = run_policy("planned", default_workload(0), cost, config,
                       bound={"planned": Planned.with_plan(load_plan(path, cost))})
    hedge = doc["results"][1]["params"]["hedge"]
    assert hedge["experts"] == ["planned", "sglang", "vllm-align", "marconi"]
    assert hedge["expert_flop_savings"]["planned"] == pytest.approx(alone.flop_savings,
                                                                    abs=1e-6)


def test_plan_for_another_model_is_refused(hand_built_model, capsys, tmp_path):
    import dataclasses
    other = dataclasses.replace(paper_7b_cost(), model="someone-else", dtype="float32")
    path = _saved_plan(tmp_path, other)
    code, out, err = run_cli(capsys, "simulate", MODEL, "--capacity", "20GB", "--plan", str(path))
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "cost_fingerprint" in err


FLOOR_TRACE = ('{"timestamp": 0, "input_length": 100, "output_length": 5, "hash_ids": [1]}\n'
               '{"timestamp": 5, "input_length": 150, "output_length": 5, "hash_ids": [1, 4]}\n')


def test_every_report_states_the_trace_facts(hand_built_model, capsys, tmp_path):
    """Lines with an unhashed tail (floor id counts) are counted in simulate's title, the
    bound's JSON and the main job's JSON."""
    trace = tmp_path / "floor.jsonl"
    trace.write_text(FLOOR_TRACE)
    common = (MODEL, "--trace", str(trace), "--capacity", "1GB", "--block-size", "64")
    code, out, _ = run_cli(capsys, "simulate", *common, "--policy", "sglang")
    assert code == 0 and "2 lines with an unhashed tail (never hit)" in out.splitlines()[0]
    code, out, _ = run_cli(capsys, "bound", *common, "--format", "json")
    assert code == 0 and json.loads(out)["workload"]["unhashed_tail_lines"] == 2
    code, out, _ = run_cli(capsys, *common, "--format", "json", "--no-held-out",
                           "-o", str(tmp_path / "runtime.yaml"))
    assert code == 0 and json.loads(out)["workload"]["block_size_rule"] == "given"

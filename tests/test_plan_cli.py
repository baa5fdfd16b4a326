"""`marconi-plan MODEL` (the main job) and `marconi-plan bound`, end to end on a tiny trace."""

from __future__ import annotations

import json
import random

import pytest

from marconi.cli import main
from marconi.runtime.plan.plan_file import load_plan

MODEL = "examples/models/marconi-7b-hybrid.yaml"
POLICIES = {"vllm-all", "vllm-align", "sglang", "marconi", "marconi-static", "infinite",
            "planned"}


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    """Token trace: a few chat sessions over two shared system prompts."""
    rng = random.Random(0)
    prompts = [list(range(1000 * (k + 1), 1000 * (k + 1) + 300)) for k in range(2)]
    lines, sessions, ts = [], [], 0.0
    for i in range(40):
        ts += rng.expovariate(1.0)
        if sessions and rng.random() < 0.6:
            s = rng.randrange(len(sessions))
        else:
            sessions.append(list(rng.choice(prompts)))
            s = len(sessions) - 1
        history = sessions[s]
        user = [rng.randrange(10**6) for _ in range(rng.randint(20, 200))]
        out = [rng.randrange(10**6) for _ in range(rng.randint(20, 100))]
        lines.append(json.dumps({"session_id": s, "turn_id": i, "ts": ts,
                                 "input_tokens": history + user, "output_tokens": out}))
        sessions[s] = history + user + out
    path = tmp_path_factory.mktemp("trace") / "chat.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_main_job_json_and_runtime_yaml(trace, tmp_path, capsys):
    out = tmp_path / "runtime.yaml"
    rc = main([MODEL, "--trace", trace, "-o", str(out), "--format", "json", "--jobs", "1"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    doc = json.loads(captured.out)
    assert {r["policy"] for r in doc["results"]} == POLICIES
    assert {r["policy"] for r in doc["held_out"]["results"]} == POLICIES
    for key in ("token_hit_rate", "request_hit_rate", "flop_savings", "peak_occupancy",
                "ttft_p50_ms", "ttft_p95_ms", "requests", "seconds"):
        assert all(key in r for r in doc["results"]), key
    bound = doc["bound"]
    assert set(bound) == {"capacity_bytes", "lp_upper_bound_flop_savings",
                          "rounded_flop_savings", "method", "seconds", "warmup"}
    assert doc["warmup"] == bound["warmup"] == {"fraction": 0.0, "requests": 0}
    assert doc["capacity_source"].startswith("default:")
    assert bound["capacity_bytes"] == doc["capacity_bytes"]
    for section in (doc, doc["held_out"]):
        upper = section["bound"]["lp_upper_bound_flop_savings"]
        assert section["bound"]["rounded_flop_savings"] <= upper + 1e-12
        for r in section["results"]:
            if r["policy"] != "infinite":              # the only one ignoring the capacity
                assert r["flop_savings"] <= upper + 1e-9, r["policy"]
                assert r["peak_occupancy"] <= 1.0 + 1e-12, r["policy"]
    assert set(doc["rules"]) == {"admission", "eviction", "memory", "pinned_prefixes", "hedge"}
    plan = load_plan(out)
    assert plan.capacity_bytes == doc["capacity_bytes"]
    assert plan.marconi_alpha == doc["rules"]["hedge"]["marconi_alpha"]
    assert plan.admission.__dict__ == doc["rules"]["admission"]


def test_bound_json(trace, capsys):
    rc = main(["bound", MODEL, "--trace", trace, "--capacity", "2GiB", "--format", "json",
               "--method", "lagrangian"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert doc["capacity_bytes"] == 2 * 2**30 and doc["method"] == "lagrangian"
    assert 0.0 <= doc["rounded_flop_savings"] <= doc["lp_upper_bound_flop_savings"] <= 1.0


def test_unwritable_output_leaves_nothing(trace, tmp_path, capsys):
    out = tmp_path / "missing-dir" / "runtime.yaml"
    rc = main([MODEL, "--trace", trace, "--capacity", "2GiB", "-o", str(out),
               "--no-held-out", "--jobs", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "cannot write" in err[0]
    assert not out.parent.exists()


def test_output_that_is_a_directory_is_refused_before_the_work(trace, tmp_path, capsys):
    rc = main([MODEL, "--trace", trace, "--capacity", "2GiB", "-o", str(tmp_path),
               "--no-held-out", "--jobs", "1"])
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "cannot write: is a directory" in err[0], err
    assert captured.out == "" and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("plot,expected", [
    pytest.param("missing-dir/capacity.png", "cannot write: no such directory", id="no-folder"),
    pytest.param("capacity.foo", "--plot: 'capacity.foo': unknown image format", id="format"),
])
def test_bad_plot_path_is_refused_before_the_work(plot, expected, trace, tmp_path,
                                                  monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rc = main([MODEL, "--trace", trace, "--capacity", "2GiB", "--plot", plot,
               "--no-held-out", "--jobs", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and expected in err[0], err
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ degenerate traces

def _write_trace(path, inputs):
    lines = [json.dumps({"session_id": i, "turn_id": 0, "ts": float(i), "input_tokens": ids,
                         "output_tokens": [7, 8, 9]}) for i, ids in enumerate(inputs)]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture
def one_line(tmp_path):
    return _write_trace(tmp_path / "one.jsonl", [list(range(100))])


@pytest.fixture
def no_shared_prefix(tmp_path):
    """Five requests whose inputs share no first token: nothing can ever hit."""
    return _write_trace(tmp_path / "disjoint.jsonl",
                        [list(range(1000 * (i + 1), 1000 * (i + 1) + 80)) for i in range(5)])


@pytest.mark.parametrize("capacity", [None, "2GiB"], ids=["default-capacity", "given"])
def test_main_job_on_one_request_is_bad_input(one_line, capacity, tmp_path, capsys):
    """A plan is fitted on reuse between requests: one request cannot have any."""
    out = tmp_path / "runtime.yaml"
    argv = [MODEL, "--trace", one_line, "-o", str(out), "--jobs", "1"]
    rc = main(argv + (["--capacity", capacity] if capacity else []))
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert rc == 2 and len(err) == 1, captured.err
    assert err[0] == ("marconi-plan: one: requests: the trace has 1 request; expected at "
                      "least 2 to plan (a plan is fitted on the reuse between requests)")
    assert captured.out == "" and not out.exists()


@pytest.mark.parametrize("fixture", ["one_line", "no_shared_prefix"])
def test_bound_without_reuse_is_zero(fixture, request, capsys):
    """Well defined: no request can resume from an earlier one, so no cache saves
    anything; the bound and its schedule are exactly 0, without a solver."""
    trace = request.getfixturevalue(fixture)
    rc = main(["bound", MODEL, "--trace", trace, "--capacity", "2GiB", "--format", "json"])
    captured = capsys.readouterr()
    assert rc == 0 and captured.err == ""
    doc = json.loads(captured.out)
    assert doc["lp_upper_bound_flop_savings"] == doc["rounded_flop_savings"] == 0.0


def test_main_job_without_reuse_plans_nothing_to_gain(no_shared_prefix, tmp_path, capsys):
    """Well defined too: every policy and the bound save 0, and the default capacity says
    why instead of quoting a share of nothing."""
    out = tmp_path / "runtime.yaml"
    rc = main([MODEL, "--trace", no_shared_prefix, "-o", str(out), "--jobs", "1",
               "--format", "json"])
    captured = capsys.readouterr()
    assert rc == 0 and captured.err == "", captured.err
    doc = json.loads(captured.out)
    assert "no request reuses an earlier prefix" in doc["capacity_source"]
    for section in (doc, doc["held_out"]):
        assert section["bound"]["lp_upper_bound_flop_savings"] == 0.0
        assert all(r["flop_savings"] == 0.0 for r in section["results"])
    assert load_plan(out).capacity_bytes == doc["capacity_bytes"]


# ------------------------------------------------------------------ warm-up

def test_main_job_with_warmup_counts_the_last_half(trace, tmp_path, capsys):
    out = tmp_path / "runtime.yaml"
    rc = main([MODEL, "--trace", trace, "-o", str(out), "--format", "json", "--jobs", "1",
               "--capacity", "2GiB", "--warmup", "0.5"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    doc = json.loads(captured.out)
    assert doc["warmup"] == doc["bound"]["warmup"] == {"fraction": 0.5, "requests": 20}
    held = doc["held_out"]
    assert held["warmup"] == held["bound"]["warmup"] == {"fraction": 0.5, "requests": 10}
    for section, counted in ((doc, 20), (held, 10)):
        upper = section["bound"]["lp_upper_bound_flop_savings"]
        for r in section["results"]:
            assert (r["requests"], r["warmup_requests"]) == (counted, counted), r["policy"]
            if r["policy"] != "infinite":
                assert r["flop_savings"] <= upper + 1e-9, r["policy"]
    assert load_plan(out).capacity_bytes == 2 * 2**30


def test_main_job_text_states_the_window(trace, tmp_path, capsys):
    rc = main([MODEL, "--trace", trace, "-o", str(tmp_path / "r.yaml"), "--jobs", "1",
               "--capacity", "2GiB", "--warmup", "0.25", "--no-held-out"])
    out = capsys.readouterr().out
    assert rc == 0
    assert ("Warm-up: the first 10 of 40 requests (25 %) filled the cache and are not "
            "counted; figures cover the last 30.") in out
    odds = load_plan(tmp_path / "r.yaml").reuse_odds
    assert ("refined by reuse odds" in out) == (odds is not None)
    if odds is not None:
        assert f"among its first {odds.candidates} victims" in out

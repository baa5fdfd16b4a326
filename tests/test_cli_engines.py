"""`marconi-plan engines`: JSON shape, best ≥ defaults, the gaps measured by replay, the
table, errors before any work, determinism; the Mooncake conversation trace when present."""

from __future__ import annotations

import json
import random

import pytest

import marconi.passes
from marconi.cli import main
from marconi.planner import engine_gaps
from marconi.planner.engine_gaps import EngineSupport, Rule, RuleSupport, Support
from marconi.runtime import engines
from fake_engine import FakeEngine
from helpers import EXAMPLES, paper_7b_cost

MODEL = str(EXAMPLES / "marconi-7b-hybrid.yaml")
RESULT_KEYS = {"policy", "token_hit_rate", "request_hit_rate", "flop_savings",
               "ttft_p50_ms", "ttft_p95_ms", "requests"}


@pytest.fixture(scope="module")
def fake():
    """The CLI sees one more engine, `fake` (tests/fake_engine.py), with a table saying it
    expresses every rule but the grid and the class offsets."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        _install_fake(monkeypatch)
        yield


def _install_fake(monkeypatch):
    monkeypatch.setattr(marconi.passes, "build_cost_model",
                        lambda source, dtype=None, state_dtype=None, layout="model":
                        paper_7b_cost())
    real = engines.engine
    monkeypatch.setattr(engines, "NAMES", (*engines.NAMES, "fake"))
    monkeypatch.setattr(engines, "engine",
                        lambda name: FakeEngine() if name == "fake" else real(name))
    missing = {Rule.GRID: "states on the --block-size grid", Rule.OFFSETS: "LRU only"}
    rules = tuple(RuleSupport(r, Support.NO, missing[r]) if r in missing else
                  RuleSupport(r, Support.YES, "a flag") for r in Rule)
    monkeypatch.setitem(engine_gaps.SUPPORT, "fake",
                        EngineSupport("fake", rules, grid=lambda f: f["--block-size"]))


@pytest.fixture(scope="module")
def trace(tmp_path_factory) -> str:
    """A Mooncake-format trace: 16-token blocks, a few shared system prompts, multi-turn
    sessions (so the plan has branch and continuation reuse)."""
    rng = random.Random(7)
    nxt = iter(range(10**6))
    systems = [[next(nxt) for _ in range(rng.randint(4, 12))] for _ in range(4)]
    sessions = [list(rng.choice(systems)) for _ in range(30)]
    lines = []
    t = 0
    for _ in range(240):
        s = rng.randrange(len(sessions))
        sessions[s] += [next(nxt) for _ in range(rng.randint(1, 8))]
        ids = sessions[s]
        t += rng.randint(50, 400)
        lines.append({"timestamp": t, "input_length": 16 * len(ids) - rng.randint(0, 15),
                      "output_length": rng.randint(10, 200), "hash_ids": list(ids)})
    path = tmp_path_factory.mktemp("trace") / "sessions.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return str(path)


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def doc(fake, trace) -> dict:
    """One `engines --format json` run on the trace, shared by the tests that read it."""
    import contextlib
    import io
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["engines", MODEL, "--trace", trace, "--capacity", "4GB", "--engine",
                     "fake", "--jobs", "1", "--format", "json"])
    assert code == 0
    return json.loads(out.getvalue())


def engines_json(capsys, trace, *extra) -> dict:
    code, out, err = run_cli(capsys, "engines", MODEL, "--trace", trace, "--capacity",
                             "4GB", "--engine", "fake", "--jobs", "1", "--format", "json",
                             *extra)
    assert code == 0, err
    return json.loads(out)


def test_json_has_defaults_best_planned_and_bound_per_engine(doc):
    assert doc["capacity_bytes"] == 4 * 10**9 and doc["best_engine"] == "fake"
    (entry,) = doc["engines"]
    assert entry["engine"] == "fake"
    for part in ("defaults", "best"):
        assert RESULT_KEYS <= set(entry[part])
        assert set(entry[part]["flags"]) == {"--mode", "--block-size"}
        assert entry[part]["command"].startswith("fake serve paper-7b-by-hand")
    assert entry["defaults"]["flags"] == {"--mode": "all", "--block-size": 64}
    assert entry["best"]["flop_savings"] >= entry["defaults"]["flop_savings"]
    for flag, value in entry["best"]["changed"].items():
        assert entry["best"]["flags"][flag] == value
        assert f"{flag} {value}" in entry["best"]["command"]
    assert entry["planned"]["policy"] == "planned" and RESULT_KEYS <= set(entry["planned"])
    assert entry["bound"] == doc["bound"]
    assert entry["bound"]["lp_upper_bound_flop_savings"] >= entry["planned"]["flop_savings"]
    assert entry["search"]["replays"] >= 1 + 3 + 4 - 2        # defaults + each flag alone


def test_gaps_are_measured_by_replaying_the_plan(doc):
    gaps = doc["engines"][0]["gaps"]
    assert gaps["grid_tokens"] == doc["engines"][0]["best"]["flags"]["--block-size"]
    assert {g["rule"] for g in gaps["gaps"]} == {str(Rule.GRID), str(Rule.OFFSETS)}
    # the gaps are the rules' own (the plan's ghost in the hedged `planned`), not the hedge's
    rules_alone = doc["planned"]["params"]["hedge"]["expert_flop_savings"]["planned"]
    assert gaps["planned_flop_savings"] == pytest.approx(rules_alone, abs=1e-6)
    for g in gaps["gaps"]:
        assert g["flop_savings_cost"] == pytest.approx(
            gaps["planned_flop_savings"] - g["flop_savings_without"])
        if not g["used_by_plan"]:
            assert g["flop_savings_cost"] == 0.0
    grid = next(g for g in gaps["gaps"] if g["rule"] == str(Rule.GRID))
    assert grid["used_by_plan"]                      # the plan is exact; the engine is not
    assert gaps["flop_savings_cost"] == pytest.approx(
        gaps["planned_flop_savings"] - gaps["expressible_flop_savings"])


def test_slow_path_a_gap_replayed_by_hand(doc, trace):
    """The grid row equals planned replayed with the plan snapped to the engine's grid."""
    import dataclasses

    from marconi.planner.engine_gaps import replay_plan
    from marconi.planner.plan import derive_plan
    from marconi.runtime.capacity import Capacity
    from marconi.runtime.config import CacheConfig
    from marconi.runtime.workload import load_trace
    gaps = doc["engines"][0]["gaps"]
    workload, cost = load_trace(trace), paper_7b_cost()
    plan = derive_plan(workload, cost, Capacity.shared(4 * 10**9)).plan
    snapped = dataclasses.replace(plan, chunk_tokens=gaps["grid_tokens"])
    by_hand = replay_plan(snapped, workload, cost, CacheConfig(Capacity.shared(4 * 10**9)))
    grid = next(g for g in gaps["gaps"] if g["rule"] == str(Rule.GRID))
    assert grid["flop_savings_without"] == pytest.approx(by_hand)


def test_deterministic(doc, trace, capsys):
    a, b = doc, engines_json(capsys, trace)

    def strip(doc):
        doc = json.loads(json.dumps(doc))
        doc.pop("seconds")
        for e in doc["engines"]:
            e["search"].pop("seconds")
            for part in ("defaults", "best", "planned"):
                e[part].pop("seconds")
        doc["planned"].pop("seconds")
        doc["bound"].pop("seconds")
        for e in doc["engines"]:
            e["bound"].pop("seconds", None)
        return doc

    assert strip(a) == strip(b)


def test_table_names_the_launch_line_and_the_gaps(fake, trace, capsys):
    code, out, _ = run_cli(capsys, "engines", MODEL, "--trace", trace, "--capacity", "4GB",
                           "--engine", "fake", "--jobs", "1")
    assert code == 0
    assert "launch: fake serve paper-7b-by-hand" in out
    assert "planned" in out and "upper bound" in out
    assert "what the plan needs that fake cannot express" in out
    assert "Best engine configuration: fake" in out


@pytest.mark.parametrize("argv,flag", [
    pytest.param(["--engine", "nope"], "--engine", id="unknown-engine"),
    pytest.param(["--engine", ","], "--engine", id="no-engine"),
    pytest.param(["--capacity", "lots"], "--capacity", id="bad-capacity"),
])
def test_bad_input_exits_2_naming_the_flag_in_json_too(fake, trace, capsys, argv, flag):
    base = {"--capacity": "4GB", "--engine": "fake"}
    base.update(dict(zip(argv[::2], argv[1::2])))
    code, out, err = run_cli(capsys, "engines", MODEL, "--trace", trace,
                             *[x for kv in base.items() for x in kv], "--format", "json")
    assert code == 2 and flag in err and len(err.strip().splitlines()) == 1
    doc = json.loads(out)
    assert doc["error"]["exit_code"] == 2 and flag in doc["error"]["message"]


def test_trace_is_required(capsys):
    with pytest.raises(SystemExit) as e:
        main(["engines", MODEL, "--capacity", "4GB"])
    assert e.value.code == 2


def test_real_engines_on_the_mooncake_conversation_trace(traces_dir, fake, capsys):
    """Whatever engine models are installed, on the first 300 requests of the real trace:
    best ≥ defaults for each, and a launch line, or (defaults the trace's 512-token ids
    cannot express) the reason."""
    installed = []
    for name in engines.NAMES:
        if name == "fake":
            continue
        try:
            engines.engine(name)
        except ModuleNotFoundError:
            continue
        installed.append(name)
    if not installed:
        pytest.skip("no engine model installed yet (runtime/engines/*.py)")
    code, out, err = run_cli(capsys, "engines", MODEL, "--trace",
                             str(traces_dir / "mooncake_conversation.jsonl"), "--limit",
                             "300", "--capacity", "100GiB", "--engine", ",".join(installed),
                             "--jobs", "1", "--format", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert [e["engine"] for e in doc["engines"]] == installed
    for e in doc["engines"]:
        if "error" in e:                    # defaults this trace's ids cannot express
            assert e["error"]["message"] and "best" not in e
            continue
        assert e["best"]["flop_savings"] >= e["defaults"]["flop_savings"]
        assert e["best"]["command"]


# ---------------------------------------------------------------- the main job (#15 item 3)

def test_main_job_names_the_best_engine_and_writes_its_flags(fake, trace, capsys, tmp_path):
    from marconi.runtime.plan.plan_file import load_engines, load_plan
    out_yaml = tmp_path / "runtime.yaml"
    code, text, err = run_cli(capsys, MODEL, "--trace", trace, "--capacity", "4GB",
                              "--no-held-out", "--jobs", "1", "--engines", "fake",
                              "-o", str(out_yaml))
    assert code == 0, err
    load_plan(out_yaml)                                    # the plan still loads
    (saved,) = load_engines(out_yaml)
    assert saved.engine == "fake" and set(dict(saved.flags)) == {"--mode", "--block-size"}
    assert f"best engine configuration: fake ({saved.flop_savings:.4f} FLOP savings" in text
    assert saved.command in text


def test_main_job_refuses_an_unknown_engine_before_any_work(fake, trace, capsys, tmp_path):
    code, out, err = run_cli(capsys, MODEL, "--trace", trace, "--capacity", "4GB",
                             "--engines", "nope", "-o", str(tmp_path / "r.yaml"))
    assert code == 2 and err.startswith("marconi-plan: --engines: unknown 'nope'")
    assert not (tmp_path / "r.yaml").exists()


@pytest.fixture
def plan_yaml(tmp_path):
    from marconi.runtime.plan.plan_file import write_plan
    from marconi.runtime.plan.rules import default_plan
    path = tmp_path / "runtime.yaml"
    write_plan(default_plan("m", "f" * 16, 16, None, 10**9), path)
    return path


def test_a_file_without_the_engines_section_still_loads(plan_yaml):
    from marconi.runtime.plan.plan_file import load_engines, load_plan
    import yaml
    assert "engines" not in yaml.safe_load(plan_yaml.read_text())
    assert load_plan(plan_yaml).model == "m"
    assert load_engines(plan_yaml) == ()


@pytest.mark.parametrize("section,field", [
    pytest.param([1, 2], "engines:", id="not-a-mapping"),
    pytest.param({"vllm": {"version": "1", "flags": {}, "command": "x"}},
                 "engines.vllm.flop_savings", id="missing-field"),
    pytest.param({"vllm": {"version": "1", "flags": {}, "command": "x", "flop_savings": "hi"}},
                 "engines.vllm.flop_savings", id="bad-number"),
    pytest.param({"vllm": {"version": "1", "flags": [1], "command": "x", "flop_savings": 0.1}},
                 "engines.vllm.flags", id="flags-not-a-mapping"),
    pytest.param({"vllm": {"version": "1", "flags": {"--a": [1]}, "command": "x",
                           "flop_savings": 0.1}}, "engines.vllm.flags.--a", id="bad-value"),
    pytest.param({"vllm": {"version": "1", "flags": {}, "command": "x", "flop_savings": 0.1,
                           "extra": 1}}, "engines.vllm.extra", id="unknown-field"),
])
def test_a_garbled_engines_section_is_an_error_naming_the_field(plan_yaml, section, field):
    import yaml

    from marconi.errors import PlanError
    from marconi.runtime.plan.plan_file import load_engines, load_plan
    doc = yaml.safe_load(plan_yaml.read_text())
    doc["engines"] = section
    plan_yaml.write_text(yaml.safe_dump(doc, sort_keys=False))
    for load in (load_plan, load_engines):
        with pytest.raises(PlanError, match=field.replace(".", r"\.")):
            load(plan_yaml)


def test_engines_section_round_trips(plan_yaml):
    from marconi.runtime.plan.engine_flags import EngineFlags
    from marconi.runtime.plan.plan_file import load_engines, load_plan, write_plan
    plan = load_plan(plan_yaml)
    flags = (EngineFlags("sglang", "0.5.23", (("--page-size", 1), ("--x", None),
                                              ("--y", True), ("--r", 0.6)),
                         "python -m sglang.launch_server --model-path m", 0.25),)
    write_plan(plan, plan_yaml, engines=flags)
    assert load_engines(plan_yaml) == flags and load_plan(plan_yaml) == plan


def test_a_progress_bar_on_a_terminal_and_stdout_still_one_json(fake, trace, capsys,
                                                                monkeypatch):
    import io
    import sys

    import marconi.cli.progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    monkeypatch.setattr(marconi.cli.progress, "SHOW_AFTER_S", 0.0)
    code = main(["engines", MODEL, "--trace", trace, "--capacity", "4GB", "--engine",
                 "fake", "--jobs", "1", "--format", "json"])
    out, _ = capsys.readouterr()
    assert code == 0 and json.loads(out)["best_engine"] == "fake"
    drawn = term.getvalue()
    assert "fake: screen" in drawn and "planning on" in drawn

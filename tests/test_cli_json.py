"""`--format json`: stdout holds exactly one JSON document on every path, errors included.

The paths where HiGHS solves run in a fresh interpreter: highspy prints its banner once
per process, straight to file descriptor 1, so an in-process check (or one after another
test solved) could not see it. The driver counts the solves, so each of those tests also
proves that HiGHS ran. Everything else runs in process under `capfd`, which reads file
descriptor 1 too. The cost model is the hand-built paper 7B (no tracing: tests stay fast).
"""

from __future__ import annotations

import json
import os
import random
import shlex
import subprocess
import sys

import pytest

import marconi.passes
from marconi.cli import main
from marconi.errors import SolverError
from helpers import paper_7b_cost

from helpers import REPO

MODEL = "examples/models/marconi-7b-hybrid.yaml"

# A fresh interpreter running the CLI on the hand-built cost model; it reports on stderr
# how many times HiGHS solved.
DRIVER = """
import sys
import marconi.passes
from marconi.planner import ilp
from helpers import paper_7b_cost
marconi.passes.build_cost_model = lambda *a, **k: paper_7b_cost()
solves = 0
real_solve = ilp.solve
def counted(*a, **k):
    global solves
    solves += 1
    return real_solve(*a, **k)
ilp.solve = counted
from marconi.cli import main
rc = main(sys.argv[1:])
sys.stderr.write(f"\\nhighs-solves={solves}\\n")
sys.exit(rc)
"""


def run_fresh(*argv: str) -> tuple[int, str, str, int]:
    """(exit code, stdout, stderr, HiGHS solves) of the CLI in a new interpreter."""
    path = [str(REPO), str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in path if p))
    p = subprocess.run([sys.executable, "-c", DRIVER, *argv], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=300)
    solves = int(p.stderr.rsplit("highs-solves=", 1)[1])
    return p.returncode, p.stdout, p.stderr, solves


def one_document(out: str) -> dict:
    """stdout parsed as exactly one strict JSON document (json.loads refuses a banner
    before it or anything after it)."""
    def refuse(constant):
        raise AssertionError(f"non-JSON constant {constant}")
    doc = json.loads(out, parse_constant=refuse)
    assert isinstance(doc, dict)
    return doc


@pytest.fixture(scope="module")
def trace(tmp_path_factory) -> str:
    """A token trace of 16 requests: chat sessions over two shared system prompts."""
    rng = random.Random(0)
    prompts = [list(range(1000 * (k + 1), 1000 * (k + 1) + 300)) for k in range(2)]
    lines, sessions = [], []
    for i in range(16):
        if sessions and rng.random() < 0.6:
            s = rng.randrange(len(sessions))
        else:
            sessions.append(list(rng.choice(prompts)))
            s = len(sessions) - 1
        user = [rng.randrange(10**6) for _ in range(rng.randint(20, 200))]
        out = [rng.randrange(10**6) for _ in range(rng.randint(20, 100))]
        lines.append(json.dumps({"session_id": s, "turn_id": i, "ts": float(i),
                                 "input_tokens": sessions[s] + user, "output_tokens": out}))
        sessions[s] = sessions[s] + user + out
    path = tmp_path_factory.mktemp("trace") / "chat.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def main_job(trace, tmp_path_factory):
    """The main job, --format json, in a fresh interpreter: (rc, doc text, stderr, solves,
    runtime.yaml path)."""
    out = tmp_path_factory.mktemp("plan") / "runtime.yaml"
    rc, stdout, stderr, solves = run_fresh(MODEL, "--trace", trace, "--capacity", "2GiB",
                                           "-o", str(out), "--format", "json", "--jobs", "1",
                                           "--no-held-out")
    return rc, stdout, stderr, solves, out


@pytest.fixture
def hand_built_model(monkeypatch):
    monkeypatch.setattr(marconi.passes, "build_cost_model",
                        lambda source, dtype=None, state_dtype=None, layout="model":
                        paper_7b_cost())


# ------------------------------------------------------------ paths where HiGHS solves

def test_main_job(main_job):
    rc, out, err, solves, path = main_job
    assert rc == 0, err
    assert solves >= 1
    doc = one_document(out)
    assert "planned" in {r["policy"] for r in doc["results"]}
    assert doc["runtime_yaml"] == str(path) and path.exists()


def test_bound(trace):
    rc, out, err, solves = run_fresh("bound", MODEL, "--trace", trace, "--capacity", "1GiB",
                                     "--method", "lp", "--format", "json")
    assert rc == 0, err
    assert solves >= 1
    doc = one_document(out)
    assert doc["method"] == "lp"
    assert doc["rounded_flop_savings"] <= doc["lp_upper_bound_flop_savings"] + 1e-12


def test_simulate_planned_plans_online():
    """`planned` without --plan plans itself online on the built-in workload: an LP."""
    rc, out, err, solves = run_fresh("simulate", MODEL, "--capacity", "2GB", "--policy",
                                     "planned", "--format", "json")
    assert rc == 0, err
    assert solves >= 1
    doc = one_document(out)
    assert [r["policy"] for r in doc["results"]] == ["planned"]
    assert doc["results"][0]["params"].get("planned_online_at_request")


def test_solver_failure_is_one_json_error(trace):
    """A time limit the LP cannot meet: exit 1, one stderr line, one JSON error document."""
    rc, out, err, solves = run_fresh("bound", MODEL, "--trace", trace, "--capacity", "1GiB",
                                     "--method", "lp", "--time-limit", "1e-9",
                                     "--format", "json")
    assert rc == 1 and solves == 1
    doc = one_document(out)
    assert doc["error"]["kind"] == "solver" and doc["error"]["exit_code"] == 1
    lines = err.replace("highs-solves=1", "").strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("marconi-plan: solver failure: "), err


# ------------------------------------------------------------ in-process paths

def test_inspect(hand_built_model, capfd):
    assert main(["inspect", MODEL, "--format", "json"]) == 0
    doc = one_document(capfd.readouterr().out)
    assert doc["totals"]["state_bytes"] == paper_7b_cost().state_bytes()


def test_simulate_names_its_ttft_profile(hand_built_model, capfd):
    assert main(["simulate", MODEL, "--capacity", "20GB", "--policy", "sglang,infinite",
                 "--device", "h100", "--format", "json"]) == 0
    doc = one_document(capfd.readouterr().out)
    assert doc["ttft_profile"]["name"] == "h100" and "H100" in doc["ttft_profile"]["source"]


def test_what_reads_the_plan_runs_as_printed(main_job, hand_built_model, capfd):
    """The main job's report names what reads runtime.yaml; its simulate command, run as
    printed, replays the plan and prints one document."""
    doc = one_document(main_job[1])
    assert doc["ttft_profile"]["name"] == "jamba-1.5-mini-4xa100"
    simulate_cmd, wrap_call = doc["runtime_yaml_used_by"]
    assert wrap_call == f'marconi.wrap(model, plan="{main_job[4]}")'
    argv = shlex.split(simulate_cmd)
    assert argv[:2] == ["marconi-plan", "simulate"] and "--plan" in argv
    assert main(argv[1:] + ["--format", "json"]) == 0
    replay = one_document(capfd.readouterr().out)
    assert "planned" in [r["policy"] for r in replay["results"]]
    header = main_job[4].read_text().split("\n\n")[0]
    assert "Read by: marconi-plan simulate" in header and "marconi.wrap(model" in header


@pytest.mark.parametrize("argv, kind, code, line", [
    pytest.param([MODEL, "--capacity", "lots"], "input", 2, "marconi-plan: --capacity: ",
                 id="main-job-bad-capacity"),
    pytest.param(["inspect", "no-such.yaml"], "input", 2, "marconi-plan: no-such.yaml: ",
                 id="inspect-missing-model"),
    pytest.param(["simulate", MODEL, "--capacity", "1GB", "--policy", "lru"], "input", 2,
                 "marconi-plan: --policy: ", id="simulate-unknown-policy"),
    pytest.param(["bound", MODEL, "--capacity", "1GB"], "usage", 2,
                 "marconi-plan bound: error: the following arguments are required: --trace",
                 id="bound-usage-error"),
    pytest.param(["inspect", MODEL, "--no-such-flag"], "usage", 2,
                 "marconi-plan: error: unrecognized arguments: --no-such-flag",
                 id="usage-error"),
])
def test_errors_are_one_json_document(argv, kind, code, line, hand_built_model, capfd):
    for form in (["--format", "json"], ["--format=json"]):
        try:
            rc = main(argv + form)
        except SystemExit as e:                 # argparse's usage errors exit from parsing
            rc = e.code
        out, err = capfd.readouterr()
        assert rc == code
        doc = one_document(out)
        assert doc["error"]["kind"] == kind and doc["error"]["exit_code"] == code
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(line), err
        assert doc["error"]["message"] in lines[0]


def test_internal_error_is_one_json_document(hand_built_model, capfd, monkeypatch):
    """Exit 1 with a traceback on stderr, and still one document on stdout."""
    import marconi.runtime.sim.simulator

    def broken(*a, **k):
        raise RuntimeError("boom")
    monkeypatch.setattr(marconi.runtime.sim.simulator, "simulate", broken)
    assert main(["simulate", MODEL, "--capacity", "1GB", "--format", "json"]) == 1
    out, err = capfd.readouterr()
    doc = one_document(out)
    assert doc["error"] == {"kind": "internal", "type": "RuntimeError",
                            "message": "internal error: RuntimeError: boom", "exit_code": 1}
    assert "Traceback" in err and err.strip().endswith("internal error: RuntimeError: boom")


def test_solver_error_in_process(hand_built_model, capfd, monkeypatch, trace):
    import marconi.planner.offline

    def fails(*a, **k):
        raise SolverError("HiGHS failed on x: status 7")
    monkeypatch.setattr(marconi.planner.offline, "offline_bound", fails)
    assert main(["bound", MODEL, "--trace", trace, "--capacity", "1GB", "--format",
                 "json"]) == 1
    doc = one_document(capfd.readouterr().out)
    assert doc["error"]["type"] == "SolverError" and doc["error"]["kind"] == "solver"


def test_a_failing_document_leaves_stdout_empty(capfd):
    """A document that cannot be serialised is found before the first byte is written."""
    from marconi.cli.render import emit_json
    with pytest.raises(TypeError):
        emit_json({"results": [1, 2, object()]})
    assert capfd.readouterr().out == ""


def test_text_reports_name_ttft_profile_and_plan_readers(hand_built_model, capfd, trace,
                                                          tmp_path):
    out_path = tmp_path / "r.yaml"
    assert main([MODEL, "--trace", trace, "--capacity", "2GiB", "-o", str(out_path),
                 "--jobs", "1", "--no-held-out"]) == 0
    text = capfd.readouterr().out
    assert "TTFT from latency profile jamba-1.5-mini-4xa100" in text
    assert f"marconi-plan simulate {MODEL} --trace {trace} --capacity " in text
    assert f'marconi.wrap(model, plan="{out_path}")' in text
    assert main(["simulate", MODEL, "--capacity", "20GB", "--policy", "sglang"]) == 0
    assert "TTFT from latency profile jamba-1.5-mini-4xa100" in capfd.readouterr().out

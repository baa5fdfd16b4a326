"""Progress: the library reports through callbacks; the CLI draws a bar on a terminal only."""

from __future__ import annotations

import io
import json
import random
import sys
from pathlib import Path

import pytest

import marconi.cli.progress
import marconi.passes
from marconi.cli import main
from marconi.cli.progress import TerminalProgress, progress_for
from helpers import paper_7b_cost

MODEL = str(Path(__file__).resolve().parents[1] / "examples/models/marconi-7b-hybrid.yaml")


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def hand_built_model(monkeypatch):
    monkeypatch.setattr(marconi.passes, "build_cost_model", lambda *a, **k: paper_7b_cost())


def on_terminal(monkeypatch) -> FakeTerminal:
    """From now on stderr is a terminal, and bars show at once. Called in the test body:
    pytest's capture puts its own stderr back between a fixture's setup and the test."""
    term = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", term)
    monkeypatch.setattr(marconi.cli.progress, "SHOW_AFTER_S", 0.0)
    return term


@pytest.fixture(scope="module")
def trace(tmp_path_factory) -> str:
    rng = random.Random(2)
    prompt = list(range(7000, 7400))
    lines = [json.dumps({"session_id": i % 4, "turn_id": i, "ts": float(i),
                         "input_tokens": prompt + [rng.randrange(10**6) for _ in range(50)],
                         "output_tokens": [1, 2]}) for i in range(12)]
    path = tmp_path_factory.mktemp("trace") / "t.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_nothing_shows_before_the_delay_then_one_bar_per_stage():
    out, clock = FakeTerminal(), Clock()
    with TerminalProgress(out, show_after_s=3.0, clock=clock, tick_s=None) as progress:
        progress("sglang", 100, 1000)
        clock.now = 2.9
        progress("sglang", 500, 1000)
        assert out.getvalue() == ""                      # a quick run stays quiet
        clock.now = 3.0
        progress("sglang", 700, 1000)
        assert "sglang" in out.getvalue() and "700/1000" in out.getvalue()
        progress("offline bound", 0, 0)                  # no count: the elapsed time
        assert "offline bound: 00:00" in out.getvalue()
    assert out.getvalue().endswith("\r")                 # erased: the report starts clean


@pytest.mark.parametrize("size", [(0, 0), (100, 30)], ids=["unsized", "sized"])
def test_a_bar_shows_on_a_real_pty_whether_or_not_it_reports_a_size(size):
    # a pty nobody sized (under `script`, `docker run -t`) reports 0 x 0, on which tqdm's
    # own sizing drew nothing at all; the bar falls back to 80 x 24 there
    pty, fcntl, termios, struct = (pytest.importorskip(m) for m in
                                   ("pty", "fcntl", "termios", "struct"))
    import os
    import select
    master, slave = pty.openpty()
    try:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", size[1], size[0], 0, 0))
        with open(slave, "w", closefd=False) as term:
            with TerminalProgress(term, show_after_s=0.0, tick_s=None) as progress:
                progress("sglang", 7, 40)
                term.flush()
                drawn = b""
                while select.select([master], [], [], 1.0)[0]:   # nothing drawn: 1 s, fail
                    drawn += os.read(master, 65536)
                    if b"7/40" in drawn:
                        break
    finally:
        os.close(master)
        os.close(slave)
    frames = [f for f in drawn.decode().replace("\n", "\r").split("\r") if f.strip()]
    assert frames and "sglang" in frames[-1] and "7/40" in frames[-1]
    assert max(len(f) for f in frames) <= (size[0] or 80)


def test_the_ticker_redraws_a_step_that_reports_nothing():
    out = FakeTerminal()
    with TerminalProgress(out, show_after_s=0.0, tick_s=0.01) as progress:
        progress("planning", 0, 0)
        before = out.getvalue().count("planning")
        import time
        time.sleep(0.2)
        assert out.getvalue().count("planning") > before


def test_a_bar_only_on_a_terminal_and_without_v(monkeypatch):
    import argparse
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert progress_for(argparse.Namespace(verbose=0)) is None       # a pipe or a log file
    monkeypatch.setattr(sys, "stderr", FakeTerminal())
    assert isinstance(progress_for(argparse.Namespace(verbose=0)), TerminalProgress)
    assert progress_for(argparse.Namespace(verbose=1)) is None       # -v logs there


def test_simulate_shows_replays_on_stderr_and_keeps_stdout_json(hand_built_model, capsys,
                                                                 monkeypatch):
    terminal = on_terminal(monkeypatch)
    assert main(["simulate", MODEL, "--capacity", "20GB", "--policy", "sglang,marconi",
                 "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["policy"] for r in doc["results"]] == ["sglang", "marconi"]
    shown = terminal.getvalue()
    assert "sglang" in shown and "marconi" in shown


@pytest.mark.parametrize("argv, stage", [
    pytest.param([MODEL, "--capacity", "2GiB", "-o", "r.yaml", "--no-held-out", "--jobs", "1"],
                 "planning on", id="main-job"),
    pytest.param(["bound", MODEL, "--capacity", "2GiB"], "offline bound (auto)", id="bound"),
])
def test_main_job_and_bound_show_their_steps(argv, stage, trace, hand_built_model, capsys,
                                             tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    terminal = on_terminal(monkeypatch)
    assert main(argv + ["--trace", trace]) == 0
    assert stage in terminal.getvalue()
    terminal.seek(0)
    terminal.truncate()
    assert main(argv + ["--trace", trace, "-v"]) == 0            # -v logs: no bar
    assert stage not in terminal.getvalue()


def test_the_main_job_reports_every_step_and_replay(trace):
    from marconi.planner.job import BASELINES, run_plan_job
    from marconi.runtime.capacity import Capacity
    from marconi.runtime.workload import load_trace
    workload = load_trace(trace)
    seen: list[tuple[str, int, int]] = []
    run_plan_job(workload, paper_7b_cost(), Capacity.shared(2 * 2**30),
                 progress=lambda stage, done, total: seen.append((stage, done, total)))
    stages = [s for s, _, _ in seen]
    name, first, second = workload.name, *(w.name for w in workload.split())
    assert stages[0] == f"planning on {name}"
    for policy in BASELINES + ("planned",):
        assert (f"{name}: {policy}", len(workload.requests), len(workload.requests)) in seen
        assert (f"{second}: {policy}", len(workload.split()[1].requests),
                len(workload.split()[1].requests)) in seen
    assert f"planning on {first}" in stages and f"{second}: offline bound" in stages

"""Output paths (`-o`, `--plot`): refused before any work, written atomically after it."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

import marconi.passes
from marconi.cli import main
from marconi.cli.outputs import OutputError, atomic_output, check_writable
from helpers import paper_7b_cost

MODEL = str(Path(__file__).resolve().parents[1] / "examples/models/marconi-7b-hybrid.yaml")
HAS_PROC = Path("/proc/self").is_dir()


@pytest.fixture(scope="module")
def trace(tmp_path_factory) -> str:
    rng = random.Random(1)
    prompt = list(range(5000, 5300))
    lines = []
    for i in range(12):
        user = [rng.randrange(10**6) for _ in range(rng.randint(20, 120))]
        lines.append(json.dumps({"session_id": i % 3, "turn_id": i, "ts": float(i),
                                 "input_tokens": prompt + user, "output_tokens": [1, 2, 3]}))
    path = tmp_path_factory.mktemp("trace") / "t.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture
def no_work(monkeypatch):
    """Any work (building the cost model) fails the test: checks must come first."""
    def work(*a, **k):
        raise AssertionError("the work started before the output paths were checked")
    monkeypatch.setattr(marconi.passes, "build_cost_model", work)


@pytest.fixture
def hand_built_model(monkeypatch):
    monkeypatch.setattr(marconi.passes, "build_cost_model", lambda *a, **k: paper_7b_cost())


def _paths(tmp_path: Path) -> list[str]:
    return sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))


@pytest.mark.parametrize("flag, path, expected", [
    pytest.param("-o", "/proc/x.yaml", "creating a file in '/proc' failed", id="o-proc",
                 marks=pytest.mark.skipif(not HAS_PROC, reason="no /proc")),
    pytest.param("--plot", "/proc/p.png", "creating a file in '/proc' failed", id="plot-proc",
                 marks=pytest.mark.skipif(not HAS_PROC, reason="no /proc")),
    pytest.param("-o", "/proc/self/status", "creating a file in '/proc/self' failed",
                 id="o-proc-file", marks=pytest.mark.skipif(not HAS_PROC, reason="no /proc")),
    pytest.param("-o", "missing/x.yaml", "no such directory 'missing'", id="o-no-folder"),
    pytest.param("--plot", "missing/p.png", "no such directory 'missing'",
                 id="plot-no-folder"),
    pytest.param("-o", ".", "is a directory", id="o-folder"),
])
def test_bad_output_is_refused_before_the_work(flag, path, expected, trace, tmp_path,
                                               monkeypatch, capsys, no_work):
    monkeypatch.chdir(tmp_path)
    rc = main([MODEL, "--trace", trace, "--capacity", "2GiB", flag, path, "--jobs", "1"])
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert rc == 2 and len(err) == 1, captured.err
    assert err[0].startswith(f"marconi-plan: {flag} {path}: cannot write") and expected in err[0]
    assert captured.out == "" and _paths(tmp_path) == []


def test_a_failing_plot_leaves_neither_file(trace, tmp_path, monkeypatch, hand_built_model):
    """The plot breaks halfway through writing: no image, no runtime.yaml, no temp file."""
    import marconi.cli.plan

    def half_a_plot(job, path, model, trace):
        Path(path).write_bytes(b"\x89PNG half")
        raise RuntimeError("the plot broke")
    monkeypatch.setattr(marconi.cli.plan, "_plot", half_a_plot)
    monkeypatch.chdir(tmp_path)
    rc = main([MODEL, "--trace", trace, "--capacity", "2GiB", "--plot", "cap.png",
               "--no-held-out", "--jobs", "1"])
    assert rc == 1
    assert _paths(tmp_path) == []


def test_a_failing_plan_write_leaves_no_plot(trace, tmp_path, monkeypatch, hand_built_model):
    import marconi.runtime.plan.plan_file

    def refuse(plan, path):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(marconi.runtime.plan.plan_file, "write_plan", refuse)
    monkeypatch.chdir(tmp_path)
    rc = main([MODEL, "--trace", trace, "--capacity", "2GiB", "--plot", "cap.png",
               "--no-held-out", "--jobs", "1"])
    assert rc == 1
    assert _paths(tmp_path) == []


def test_plot_and_plan_are_written(trace, tmp_path, monkeypatch, hand_built_model):
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    rc = main([MODEL, "--trace", trace, "--capacity", "2GiB", "--plot", "cap.png",
               "-o", "plan.yaml", "--no-held-out", "--jobs", "1"])
    assert rc == 0
    assert _paths(tmp_path) == ["cap.png", "plan.yaml"]
    assert (tmp_path / "cap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_atomic_output_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "out.png"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_output(str(target), "--plot") as tmp:
            assert Path(tmp).parent == tmp_path and tmp.endswith(".png")
            Path(tmp).write_text("new, half")
            raise RuntimeError("writer failed")
    assert target.read_text() == "old" and _paths(tmp_path) == ["out.png"]
    with atomic_output(str(target), "--plot") as tmp:
        Path(tmp).write_text("new")
    assert target.read_text() == "new" and _paths(tmp_path) == ["out.png"]


def test_check_writable_leaves_nothing_behind(tmp_path):
    check_writable(str(tmp_path / "runtime.yaml"), "-o", "runtime.yaml")
    assert _paths(tmp_path) == []
    with pytest.raises(OutputError, match="is a directory"):
        check_writable(str(tmp_path), "-o", "runtime.yaml")

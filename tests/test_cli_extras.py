"""Optional extras: a missing one is one line, exit 2, naming the extra, before any work.

A missing module is simulated by ``sys.modules[name] = None`` (import raises ImportError
and `importlib.util.find_spec` answers None, as in an install without the extra).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import marconi.passes
from marconi.cli import main
from marconi.cli.extras import is_hf_config

REPO = Path(__file__).resolve().parents[1]
MODEL = str(REPO / "examples/models/marconi-7b-hybrid.yaml")
HF_CONFIG = REPO / "examples/hf/nemotron-h-tiny/config.json"


@pytest.fixture
def no_work(monkeypatch):
    def work(*a, **k):
        raise AssertionError("the work started before the extras were checked")
    monkeypatch.setattr(marconi.passes, "build_cost_model", work)


@pytest.fixture
def without(monkeypatch):
    def hide(module: str) -> None:
        for name in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
            monkeypatch.delitem(sys.modules, name)
        monkeypatch.setitem(sys.modules, module, None)
    return hide


@pytest.mark.parametrize("model", [HF_CONFIG, HF_CONFIG.parent], ids=["config.json", "folder"])
@pytest.mark.parametrize("command", [
    ["inspect"], [], ["simulate", "--capacity", "1GB"],
    ["bound", "--trace", "t.jsonl", "--capacity", "1GB"],
], ids=["inspect", "main-job", "simulate", "bound"])
def test_hf_config_without_transformers(command, model, without, no_work, capsys, tmp_path,
                                        monkeypatch):
    without("transformers")
    monkeypatch.chdir(tmp_path)
    argv = command[:1] + [str(model)] + command[1:]
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert lines == [f"marconi-plan: {model}: a Hugging Face config.json needs transformers, "
                     "which is not installed; install it with: "
                     "pip install 'marconi-plan[hf]'"]
    assert captured.out == "" and list(tmp_path.iterdir()) == []


def test_model_yaml_does_not_need_transformers(without, capsys, monkeypatch):
    without("transformers")
    from helpers import paper_7b_cost
    monkeypatch.setattr(marconi.passes, "build_cost_model", lambda *a, **k: paper_7b_cost())
    assert main(["inspect", MODEL]) == 0


def test_plot_without_matplotlib(without, no_work, capsys, tmp_path, monkeypatch):
    without("matplotlib")
    monkeypatch.chdir(tmp_path)
    assert main([MODEL, "--plot", "cap.png", "--format", "json"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert lines == ["marconi-plan: --plot: drawing a plot needs matplotlib, which is not "
                     "installed; install it with: pip install 'marconi-plan[plot]'"]
    assert "pip install 'marconi-plan[plot]'" in captured.out      # the JSON error document
    assert list(tmp_path.iterdir()) == []                   # no runtime.yaml either


@pytest.mark.parametrize("path, expected", [
    (HF_CONFIG, True), (HF_CONFIG.parent, True), (Path(MODEL), False),
    (REPO / "examples", False), (Path("missing/config.json"), False),
])
def test_is_hf_config_follows_load_model(path, expected):
    assert is_hf_config(str(path)) is expected


def test_pyproject_declares_the_extras():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert any(d.startswith("transformers") for d in extras["hf"])
    assert any(d.startswith("matplotlib") for d in extras["plot"])
    assert any(d.startswith("matplotlib") for d in extras["dev"])
    assert any(d.startswith("tqdm") for d in project["dependencies"])

"""The CLI contract: help for every flag, exit codes, one-line errors, JSON-only stdout."""

import argparse
import subprocess
import sys
import textwrap

import pytest

from marconi.cli import SUBCOMMANDS, build_parser, main

BAD_SPECS = {
    "unknown-kind": ("name: x\nd_model: 8\nlayers: [{kind: mamba3}]\n",
                     "model.yaml: layers[0].kind: unknown 'mamba3'; expected one of"),
    "negative-dim": ("name: x\nd_model: -8\nlayers: [{kind: mlp, d_ff: 4}]\n",
                     "model.yaml: d_model: must be positive, got -8"),
    "missing-field": ("name: x\nlayers: [{kind: mlp, d_ff: 4}]\n",
                      "model.yaml: d_model: missing required field"),
    "wrong-type": ("name: x\nd_model: 8\nlayers: [{kind: mlp, d_ff: four}]\n",
                   "model.yaml: layers[0].d_ff: expected an integer, got 'four'"),
    "yaml-syntax": ("name: x\nd_model: [8\n", "YAML syntax error"),
}


def _actions(parser):
    return [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]


def test_every_flag_has_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == set(SUBCOMMANDS)
    for name, p in sub.choices.items():
        for action in _actions(p):
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help and len(action.help) > 10, f"{name}: {action.dest} lacks help"


@pytest.mark.parametrize("argv", [["--help"]] + [[c, "--help"] for c in SUBCOMMANDS],
                         ids=lambda a: " ".join(a))
def test_help_exits_zero(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0
    assert "usage:" in capsys.readouterr().out


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
@pytest.mark.parametrize("command", [[], ["inspect"]], ids=["main-job", "inspect"])
def test_bad_spec_exit_2_one_line(tmp_path, monkeypatch, capsys, case, command):
    text, expected = BAD_SPECS[case]
    (tmp_path / "model.yaml").write_text(text)
    monkeypatch.chdir(tmp_path)
    rc = main(command + ["model.yaml", "--format", "json"])
    err = capsys.readouterr()
    assert rc == 2
    assert err.out == ""
    lines = err.err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], err.err
    assert "Traceback" not in err.err


def test_missing_model_file(tmp_path, capsys):
    rc = main(["inspect", str(tmp_path / "none.yaml")])
    assert rc == 2 and "no such file" in capsys.readouterr().err


@pytest.mark.parametrize("capacity", ["lots", "12 parsecs", "-1GiB"])
def test_bad_capacity_exit_2(capacity, capsys):
    rc = main(["examples/models/marconi-7b-hybrid.yaml", f"--capacity={capacity}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("marconi-plan: --capacity: ")


def test_usage_error_is_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["inspect", "x.yaml", "--no-such-flag"])
    assert e.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "marconi.cli", "--version"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "marconi-plan" in out.stdout

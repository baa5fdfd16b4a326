"""The CLI contract: help for every flag, exit codes, one-line errors, JSON-only stdout."""

import argparse
import subprocess
import sys
import textwrap

import pytest

from marconi.cli import SUBCOMMANDS, build_parser, main

from helpers import REPO

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
    lines = err.err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], err.err
    assert "Traceback" not in err.err
    import json
    doc = json.loads(err.out)                   # --format json: the error as one document
    assert doc["error"]["kind"] == "input" and doc["error"]["type"] == "SpecError"
    assert f"marconi-plan: {doc['error']['message']}" == lines[0]
    assert [p.name for p in tmp_path.iterdir()] == ["model.yaml"]          # nothing written


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


@pytest.mark.parametrize("argv, verbose", [
    pytest.param(["-v", "inspect", "m.yaml"], 1, id="before-subcommand"),
    pytest.param(["inspect", "-v", "m.yaml"], 1, id="after-subcommand"),
    pytest.param(["inspect", "m.yaml", "-vv"], 2, id="at-the-end"),
    pytest.param(["m.yaml", "--verbose"], 1, id="main-job"),
    pytest.param(["-v", "m.yaml", "-v"], 2, id="both-sides"),
    pytest.param(["bound", "m.yaml", "--trace", "t", "--capacity", "1GB"], 0, id="none"),
])
def test_verbose_anywhere(argv, verbose):
    from marconi.cli import parse
    args = parse(argv)
    assert args.verbose == verbose and args.model == "m.yaml"


def test_verbose_after_the_subcommand_runs(monkeypatch, capsys):
    """`marconi-plan inspect MODEL -v` is not a usage error."""
    import marconi.passes
    from helpers import paper_7b_cost
    monkeypatch.setattr(marconi.passes, "build_cost_model", lambda *a, **k: paper_7b_cost())
    assert main(["inspect", "examples/models/marconi-7b-hybrid.yaml", "-v"]) == 0
    assert "break-even" in capsys.readouterr().out


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "marconi.cli", "--version"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "marconi-plan" in out.stdout



PLAN = ["plan", "examples/models/marconi-7b-hybrid.yaml", "--trace", "t.jsonl"]
BOUND = ["bound", "examples/models/marconi-7b-hybrid.yaml", "--trace", "t.jsonl",
         "--capacity", "1GiB"]


@pytest.mark.parametrize("argv,expected", [
    pytest.param(PLAN + ["--block-size", "0"], "argument --block-size: 0 is below 1",
                 id="block-0"),
    pytest.param(BOUND + ["--block-size", "x"], "argument --block-size: 'x' is not an integer",
                 id="block-x"),
    pytest.param(PLAN + ["--jobs", "0"], "argument --jobs: 0 is below 1", id="jobs-0"),
    pytest.param(BOUND + ["--time-limit", "0"],
                 "argument --time-limit: '0'; expected a finite number of seconds > 0",
                 id="time-limit-0"),
    pytest.param(BOUND + ["--time-limit", "nan"], "argument --time-limit: 'nan'",
                 id="time-limit-nan"),
])
def test_bad_numeric_flag_is_a_usage_error(argv, expected, tmp_path, monkeypatch, capsys):
    """Caught by the parser: exit 2, one line, before any file is read or written."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main([a if not a.startswith("examples/") else str(REPO / a) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and expected in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_a_closed_stdout_pipe_ends_quietly():
    """`marconi-plan … | head`: the reader leaving is not an internal error."""
    p = subprocess.Popen([sys.executable, "-m", "marconi.cli", "inspect",
                          str(REPO / "examples/hf/nemotron-h-tiny/model.yaml")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    p.stdout.close()                                  # before the CLI writes anything
    err = p.stderr.read()
    assert p.wait(timeout=120) == 141 and err == "", err


def test_json_output_is_strict_json(tmp_path, capsys):
    """A model without KV has an infinite break-even; --format json writes it as null (JSON
    has no Infinity), and any strict parser reads the document."""
    spec = tmp_path / "mamba-only.yaml"
    spec.write_text(textwrap.dedent("""\
        name: mamba-only
        d_model: 256
        vocab_size: 1000
        blocks:
          M: {kind: mamba2, d_state: 16, head_dim: 32, expand: 2, n_groups: 1, d_conv: 4}
        pattern: "MM"
        """))
    assert main(["inspect", str(spec), "--format", "json"]) == 0

    def refuse(constant):
        raise AssertionError(f"non-JSON constant {constant}")
    import json
    doc = json.loads(capsys.readouterr().out, parse_constant=refuse)
    totals = doc["totals"]
    assert totals["checkpoint_break_even_tokens"] is None
    assert totals["kv_bytes_per_token"] == 0 and totals["state_bytes"] > 0


def test_text_tables_mark_undefined_numbers():
    """A NaN (a quantity that is not defined for the row, such as the bound's hit rate)
    shows as a dash, right-aligned with the numbers of its column."""
    from marconi.cli.render import table
    out = table(["policy", "hit"], [["a", 0.25], ["bound", float("nan")]]).splitlines()
    assert out[-1].endswith("—") and "nan" not in out[-1]
    assert len(out[-1]) == len(out[-2])


@pytest.mark.parametrize("argv, flag", [
    (["simulate", "M", "--capacity", "lots"], "--capacity"),
    (["simulate", "M", "--capacity", "1GB", "--state-fraction", "1.5"], "--state-fraction"),
    (["simulate", "M", "--capacity", "1GB", "--device", "tpu"], "--device"),
    (["simulate", "M", "--capacity", "1GB", "--trace", "builtin:nope"], "--trace"),
    (["simulate", "M", "--capacity", "1GB", "--policy", "lru"], "--policy"),
])
def test_library_errors_name_parameters_and_the_cli_its_flags(argv, flag, capsys):
    """The library names its parameters (it is called from Python too); the CLI maps each
    to the flag that set it."""
    model = str(REPO / "examples" / "models" / "marconi-7b-hybrid.yaml")
    code = main([a if a != "M" else model for a in argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and err.startswith(f"marconi-plan: {flag}: "), err

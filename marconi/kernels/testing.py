"""Run kernel checks under the Triton CPU interpreter in a child process.

Triton decides at decoration time (first import of a kernel module) whether `@triton.jit`
builds a GPU kernel or an interpreted one, and the interpreter breaks `torch.export` of
`triton_op`s. So interpreter checks run in a child Python with `TRITON_INTERPRET=1`, and the
parent process (pytest with every other test file) never sees the variable.

Protocol: a test file defines a dict `CASES` (readable id → case) and a function
`check(case) -> dict[str, float | bool | str]`. `run_interpreted(file, "check", "CASES")`
imports that file in the child, calls `check` on every case and returns
`{id: result}`; a case that raised returns `{"error": traceback}`.

`run_interpreted_files(files)` does the same for several files in ONE child and returns
`{file: {id: result}}`: starting Python and importing torch and Triton costs seconds, more
than many files' cases, so a test session pays it once (tests/conftest.py). The child
imports them, then forks once per file, so each file's checks still start from a fresh
process state. A file that fails to import (or whose fork dies) returns
`{IMPORT_ERROR: message}` and leaves the other files running.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import traceback

IMPORT_ERROR = "<import error>"


def run_interpreted(test_file: str, check: str = "check", cases: str = "CASES",
                    timeout_s: float = 300.0) -> dict[str, dict]:
    """Results of `check(case)` for every case of `test_file`, computed under the interpreter."""
    results = run_interpreted_files([test_file], check, cases, timeout_s)[test_file]
    if IMPORT_ERROR in results:
        raise RuntimeError(f"interpreter import of {test_file} failed:\n{results[IMPORT_ERROR]}")
    return results


def run_interpreted_files(test_files: list[str], check: str = "check", cases: str = "CASES",
                          timeout_s: float = 300.0) -> dict[str, dict[str, dict]]:
    """`{file: {id: result}}` for every file, all computed in one interpreter child;
    `timeout_s` is per file."""
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "results.json")
        proc = subprocess.run([sys.executable, "-m", "marconi.kernels.testing", check, cases,
                               out, *test_files], env=env, capture_output=True, text=True,
                              timeout=timeout_s * max(1, len(test_files)))
        if proc.returncode != 0 or not os.path.exists(out):
            raise RuntimeError(f"interpreter run of {', '.join(test_files)} failed "
                               f"(rc {proc.returncode}):\n{proc.stdout[-4000:]}\n"
                               f"{proc.stderr[-4000:]}")
        with open(out) as f:
            return json.load(f)


def _load(test_file: str, index: int):
    # one module name per file: dataclasses look their module up by name
    spec = importlib.util.spec_from_file_location(f"_interpreted_cases_{index}", test_file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _run_file(test_file: str, index: int, check: str, cases: str) -> dict[str, dict]:
    try:
        module = _load(test_file, index)
        fn, all_cases = getattr(module, check), getattr(module, cases)
    except Exception:  # reported by that file's fixture; the other files still run
        return {IMPORT_ERROR: traceback.format_exc()}
    results = {}
    for case_id, case in all_cases.items():
        try:
            results[case_id] = fn(case)
        except Exception:  # reported per case by the parent's assertions
            results[case_id] = {"error": traceback.format_exc()}
    return results


def _main(check: str, cases: str, out: str, *test_files: str) -> None:
    import torch
    torch.set_num_threads(1)
    try:
        import triton  # noqa: F401  (imported once here; each forked file starts with it)
    except ImportError:
        pass
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, test_file in enumerate(test_files):
            results[test_file] = _run_forked(test_file, i, check, cases,
                                             os.path.join(tmp, f"{i}.json"))
    with open(out, "w") as f:
        json.dump(results, f)


def _run_forked(test_file: str, index: int, check: str, cases: str, out: str) -> dict:
    """`_run_file` in a forked copy of this process: every file starts from the same state
    (what one file's checks patch or register does not reach the next), and none pays the
    imports again."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            with open(out, "w") as f:
                json.dump(_run_file(test_file, index, check, cases), f)
            code = 0
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0 or not os.path.exists(out):
        return {IMPORT_ERROR: f"the forked run of {test_file} ended with status "
                              f"{os.waitstatus_to_exitcode(status)}"}
    with open(out) as f:
        return json.load(f)


if __name__ == "__main__":
    _main(*sys.argv[1:])

"""Run kernel checks under the Triton CPU interpreter in a child process.

Triton decides at decoration time (first import of a kernel module) whether `@triton.jit`
builds a GPU kernel or an interpreted one, and the interpreter breaks `torch.export` of
`triton_op`s. So interpreter checks run in a child Python with `TRITON_INTERPRET=1`, and the
parent process (pytest with every other test file) never sees the variable.

Protocol: a test file defines a dict `CASES` (readable id → case) and a function
`check(case) -> dict[str, float | bool | str]`. `run_interpreted(file, "check", "CASES")`
imports that file in the child, calls `check` on every case and returns
`{id: result}`; a case that raised returns `{"error": traceback}`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import traceback


def run_interpreted(test_file: str, check: str = "check", cases: str = "CASES",
                    timeout_s: float = 300.0) -> dict[str, dict]:
    """Results of `check(case)` for every case of `test_file`, computed under the interpreter."""
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "results.json")
        proc = subprocess.run([sys.executable, "-m", "marconi.kernels.testing", test_file,
                               check, cases, out], env=env, capture_output=True, text=True,
                              timeout=timeout_s)
        if proc.returncode != 0 or not os.path.exists(out):
            raise RuntimeError(f"interpreter run of {test_file} failed (rc {proc.returncode}):\n"
                               f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
        with open(out) as f:
            return json.load(f)


def _main(test_file: str, check: str, cases: str, out: str) -> None:
    import torch
    torch.set_num_threads(1)
    spec = importlib.util.spec_from_file_location("_interpreted_cases", test_file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module          # dataclasses look their module up by name
    spec.loader.exec_module(module)
    fn = getattr(module, check)
    results = {}
    for case_id, case in getattr(module, cases).items():
        try:
            results[case_id] = fn(case)
        except Exception:  # reported per case by the parent's assertions
            results[case_id] = {"error": traceback.format_exc()}
    with open(out, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    _main(*sys.argv[1:5])

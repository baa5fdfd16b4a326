"""Benchmark of `marconi-plan inspect` (figures go in docs/passes.md).

    python benchmarks/bench_inspect.py               # every examples/models spec
    python benchmarks/bench_inspect.py --hf          # also the examples/hf configs
    python benchmarks/bench_inspect.py --json out.json

Each model is inspected in a fresh child process, pinned to at most 2 cores, exactly as a
user runs it (`python -m marconi.cli inspect MODEL --format json`). Reported per model:
wall time, the child's own peak RSS (os.wait4), and, for comparison, the bytes its weights
would take in the spec's dtype (parameters counted on the meta device) and a baseline
child that only imports the same libraries. "No model-sized memory" means peak RSS stays
near the baseline, far below the weights. Target: the biggest example under 20 s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def weight_bytes(path: Path) -> int | None:
    """Bytes of the model's parameters in its dtype (meta device: no memory)."""
    import torch

    from marconi.passes.reference_model import HybridLM, spec_dtypes
    from marconi.spec import ModelSpec, load_model
    spec = load_model(path)
    if not isinstance(spec, ModelSpec):
        return None
    with torch.device("meta"):
        model = HybridLM(spec, spec_dtypes(spec))
    return sum(p.numel() for p in model.parameters()) * spec.dtype.nbytes


def run_child(args: list[str]) -> tuple[float, int, bytes]:
    """Run `python ARGS` pinned to <= 2 cores: (wall seconds, peak RSS bytes, stdout)."""
    cores = sorted(os.sched_getaffinity(0))[:2]
    env = {**os.environ, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, *args], stdout=out, stderr=err, env=env,
                                cwd=REPO, preexec_fn=lambda: os.sched_setaffinity(0, cores))
        _, status, usage = os.wait4(proc.pid, 0)      # this child's own peak RSS
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode:
            raise RuntimeError(f"{args} failed ({proc.returncode}): {err.read().decode()[-500:]}")
        return wall, usage.ru_maxrss * 1024, out.read()


def inspect_once(path: Path) -> dict:
    wall, rss, out = run_child(["-m", "marconi.cli", "inspect", str(path), "--format", "json"])
    doc = json.loads(out)
    return {"model": doc["model"], "path": str(path.relative_to(REPO)),
            "layers": len(doc["layers"]), "wall_s": round(wall, 2),
            "peak_rss_mib": round(rss / 2**20, 1), "state_bytes": doc["totals"]["state_bytes"]}


def baseline() -> dict:
    """The same process doing nothing but importing the CLI, torch.export and transformers."""
    wall, rss, _ = run_child(["-c", "import marconi.cli, marconi.passes.analyze, "
                              "torch.export, transformers"])
    return {"wall_s": round(wall, 2), "peak_rss_mib": round(rss / 2**20, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hf", action="store_true", help="also inspect examples/hf configs")
    parser.add_argument("--json", default=None, help="write the results to this JSON file")
    args = parser.parse_args(argv)
    paths = sorted((REPO / "examples" / "models").glob("*.yaml"))
    if args.hf:
        paths += sorted(p for p in (REPO / "examples" / "hf").iterdir() if p.is_dir())
    weights = {p: weight_bytes(p) for p in paths}
    paths.sort(key=lambda p: -(weights[p] or 0))
    base = baseline()
    print(f"{'(imports only)':<28} {'':>11}  wall {base['wall_s']:>6.2f} s  "
          f"peak RSS {base['peak_rss_mib']:>7.1f} MiB", flush=True)
    rows = []
    for path in paths:
        row = inspect_once(path)
        row["weights_gib"] = round(weights[path] / 2**30, 1) if weights[path] else None
        rows.append(row)
        print(f"{row['model']:<28} layers {row['layers']:>4}  wall {row['wall_s']:>6.2f} s  "
              f"peak RSS {row['peak_rss_mib']:>7.1f} MiB  weights "
              f"{row['weights_gib'] if row['weights_gib'] is not None else '-'} GiB", flush=True)
    biggest = rows[0]
    print(f"\nbiggest example: {biggest['model']} ({biggest['weights_gib']} GiB of weights): "
          f"{biggest['wall_s']} s, peak RSS {biggest['peak_rss_mib']} MiB "
          f"(imports alone: {base['wall_s']} s, {base['peak_rss_mib']} MiB; "
          f"target < 20 s on 2 cores)")
    if args.json:
        Path(args.json).write_text(json.dumps({"baseline": base, "models": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

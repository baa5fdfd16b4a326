"""The results document of a run (results.json) and the queries plots and tables make.

Shape (plain JSON)::

    {"meta": {...machine, commit, seeds, command...},
     "suite": Suite.describe(),
     "skipped_workloads": [...],
     "variants": [{"study", "model", "label", "value"}, ...],
     "references": [{"study", "model", "workload", "footprint_bytes", "infinite": {...},
                     "no_cache_ttft_p50_ms", "no_cache_ttft_p95_ms", ...}, ...],
     "records": [{"study", "model", "workload", "kind": "policy" | "bound", "fraction",
                  "capacity_bytes", "policy", ...metrics}, ...]}

Policy records carry every field of `marconi.runtime.sim.simulator.SimResult`; bound records
carry ``upper_flop_savings`` (an upper bound on any cache's FLOP savings at that capacity)
and ``rounded_flop_savings`` (a feasible offline schedule).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from marconi.errors import UserError

from benchmarks.suites import Suite
from benchmarks.sweep import BOUND, CAPACITY, POLICY, SweepResult

RESULTS_FILE = "results.json"


def assemble(suite: Suite, sweep: SweepResult, meta: dict[str, Any]) -> dict[str, Any]:
    return {"meta": {**meta, "seconds": round(sweep.seconds, 1)},
            "suite": suite.describe(),
            "skipped_workloads": list(sweep.skipped),
            "variants": [dataclasses.asdict(v) for v in sweep.variants],
            "references": list(sweep.references),
            "records": list(sweep.records)}


def write(results: dict[str, Any], out: Path) -> Path:
    """results.json, one record per line (diff-friendly, compact)."""
    path = Path(out) / RESULTS_FILE
    lines = ["{"]
    keys = list(results)
    for i, key in enumerate(keys):
        value = results[key]
        comma = "," if i < len(keys) - 1 else ""
        if isinstance(value, list) and value and isinstance(value[0], dict):
            lines.append(f"{json.dumps(key)}: [")
            lines += [json.dumps(v, sort_keys=True) + ("," if j < len(value) - 1 else "")
                      for j, v in enumerate(value)]
            lines.append("]" + comma)
        else:
            lines.append(f"{json.dumps(key)}: {json.dumps(value, sort_keys=True)}{comma}")
    lines.append("}")
    path.write_text("\n".join(lines) + "\n")
    return path


def load(out: Path) -> dict[str, Any]:
    path = Path(out) / RESULTS_FILE
    if not path.exists():
        raise UserError("--out", f"no {RESULTS_FILE} in {out}; expected the folder of an "
                        "earlier run")
    return json.loads(path.read_text())


# ---------------------------------------------------------------- queries

def workloads(results) -> list[str]:
    skipped = set(results["skipped_workloads"])
    return [w["key"] for w in results["suite"]["workloads"] if w["key"] not in skipped]


def workload_label(results, key: str) -> str:
    for w in results["suite"]["workloads"]:
        if w["key"] == key:
            return w["label"]
    return key


def reference(results, model: str, workload: str, study: str = CAPACITY) -> dict:
    for r in results["references"]:
        if (r["study"], r["model"], r["workload"]) == (study, model, workload):
            return r
    raise KeyError((study, model, workload))


def policies(results) -> list[str]:
    """Policies in the order they are shown: a fixed order first, others after."""
    names = {r["policy"] for r in results["records"] if r["kind"] == POLICY}
    return sorted(names, key=lambda p: (POLICY_ORDER.index(p) if p in POLICY_ORDER
                                        else len(POLICY_ORDER), p))


POLICY_ORDER = ["vllm-all", "vllm-align", "sglang", "marconi", "marconi-static", "planned"]


def curve(results, model: str, workload: str, policy: str,
          study: str = CAPACITY) -> list[dict]:
    """One policy's records (or the bound's: policy "bound") by increasing capacity."""
    kind = BOUND if policy == "bound" else POLICY
    rows = [r for r in results["records"]
            if (r["study"], r["model"], r["workload"], r["kind"]) ==
            (study, model, workload, kind) and (kind == BOUND or r["policy"] == policy)]
    return sorted(rows, key=lambda r: r["capacity_bytes"])


def at_fraction(results, model: str, workload: str, fraction: float,
                study: str = CAPACITY) -> dict[str, dict]:
    """policy → record at one capacity (the bound under "bound")."""
    out = {}
    for r in results["records"]:
        if (r["study"], r["model"], r["workload"]) == (study, model, workload) and \
                r["fraction"] == fraction:
            out[r["policy"]] = r
    return out


def variants(results, study: str) -> list[dict]:
    return [v for v in results["variants"] if v["study"] == study]

"""Re-measure one variant of a Fig. 12 study and splice its records into results.json.

    python -m benchmarks.rerun --study layer-mix --variant Transformer [--jobs N]

For a fix that changes the figures of one model variant only (e.g. how a state-free model
hits): that variant's references, policies and bound are run again, exactly as
`benchmarks.sweep` runs them, at the capacities the stored records used (the base model's
footprint is not recomputed, so the variant stays comparable with the other rows); every
stored record of the variant is replaced, and nothing else. The run is noted in
``meta["reruns"]`` (command, commit, time), which the page's Run section lists; then the
plots and the page are redrawn as ``python -m benchmarks.run --replot`` would. A workload
that no longer loads to the requests and tokens the stored run saw is refused: the whole
suite must be run again then.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

from marconi.errors import UserError

from benchmarks import results as res
from benchmarks import run as runner
from benchmarks.suites import VariantStudy, get_suite
from benchmarks.sweep import (BOUND, D_STATE, LAYER_MIX, POLICY, REFERENCE, Task, build_inputs,
                              run_tasks, suite_policies)
from benchmarks.variants import mix_label
from benchmarks.workloads import DEFAULT_TRACES_DIR


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.rerun", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--study", choices=(LAYER_MIX, D_STATE), required=True)
    p.add_argument("--variant", required=True, metavar="LABEL",
                   help="the variant's label in the page's table: 1:8 … Transformer, or a "
                        "d_state")
    p.add_argument("--out", default=runner.DEFAULT_OUT, help="folder of results.json")
    p.add_argument("--page", default=runner.DEFAULT_PAGE, help="page to redraw")
    p.add_argument("--traces", default=DEFAULT_TRACES_DIR)
    p.add_argument("--jobs", type=int, default=1)
    return p.parse_args(argv)


def rerun(results: dict, study: str, label: str, traces_dir, jobs: int) -> dict:
    """`results` with the records of one variant measured again (a new dict)."""
    stored = res.variants(results, study)
    variant = next((v for v in stored if v["label"] == label), None)
    if variant is None:
        raise UserError("--variant", f"{label!r}; expected one of "
                        f"{', '.join(v['label'] for v in stored)}")
    s = results["suite"]
    suite = get_suite(s["name"], s["quick"], s["seed"])
    mixes = tuple(m for m in suite.variants.layer_mixes if mix_label(*m) == label)
    states = tuple(d for d in suite.variants.d_states if str(d) == label)
    suite = dataclasses.replace(
        suite, models=(suite.base_model,),
        workloads=tuple(w for w in suite.workloads if w.key in suite.variants.workloads),
        variants=VariantStudy(workloads=suite.variants.workloads,
                              fraction=suite.variants.fraction,
                              layer_mixes=mixes if study == LAYER_MIX else (),
                              d_states=states if study == D_STATE else ()))
    inputs = build_inputs(suite, traces_dir, allow_missing=False)
    for key, workload in inputs.workloads.items():
        ref = res.reference(results, suite.base_model, key)
        seen = (len(workload.requests), workload.total_input_tokens)
        if seen != (ref["requests"], ref["input_tokens"]):
            raise UserError(key, f"loads to {seen[0]} requests, {seen[1]} tokens; the stored "
                            f"run saw {ref['requests']}, {ref['input_tokens']}; expected the "
                            "same workload (run the whole suite instead)")
    model = variant["model"]
    old = [r for r in results["references"] + results["records"]
           if r["study"] == study and r["model"] == model]
    tasks = [Task(study, model, r["workload"], r["kind"], r.get("fraction", 0.0),
                  r["policy"] if r["kind"] == POLICY else "", r.get("capacity_bytes", 0))
             for r in old]
    expected = {(study, model, w, POLICY, p) for w in suite.variants.workloads
                for p in suite_policies(suite)}
    if {(t.study, t.model, t.workload, t.kind, t.policy) for t in tasks
            if t.kind == POLICY} != expected:
        raise UserError(model, "the stored records are not one per workload and policy of "
                        "the suite; expected a complete earlier run")
    t0 = time.perf_counter()
    fresh = run_tasks(tasks, inputs, jobs)
    seconds = time.perf_counter() - t0

    def key(r):
        return (r["study"], r["model"], r["workload"], r["kind"], r.get("policy"),
                r.get("fraction"))
    new = {key(r): r for r in fresh}
    assert set(new) == {key(r) for r in old}
    out = dict(results)
    for part in ("references", "records"):
        out[part] = [new.get(key(r), r) for r in results[part]]
    meta = runner.machine(jobs, sys.argv[1:])
    out["meta"] = {**results["meta"], "reruns": results["meta"].get("reruns", []) + [{
        "what": f"{study} {label}", "records": len(fresh), "seconds": round(seconds, 1),
        "command": "python -m benchmarks.rerun " + " ".join(sys.argv[1:]),
        "commit": meta["commit"], "dirty": meta["dirty"], "date": meta["date"]}]}
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        results = rerun(res.load(args.out), args.study, args.variant, args.traces,
                        max(1, args.jobs))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    res.write(results, args.out)
    rc = runner.main(["--replot", "--out", str(args.out), "--page", str(args.page)])
    done = results["meta"]["reruns"][-1]
    print(f"re-measured {done['records']} records of {done['what']} in {done['seconds']} s")
    return rc


if __name__ == "__main__":
    sys.exit(main())

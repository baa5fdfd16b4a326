"""Run a suite: build its models and workloads, then execute its tasks across processes.

Work is cut into independent tasks, each a pure function of its inputs (a CostModel, a
Workload, a capacity, a policy name), so the results do not depend on how many processes
run them or in which order; they are sorted by task before they are returned.

Two phases:

1. references, one per (model, workload): the `infinite` policy (the hit-rate ceiling),
   the `sglang` policy with no capacity limit (its peak bytes are the footprint the
   capacities are fractions of, see `benchmarks.suites`), and TTFT with no cache;
2. per capacity: every policy (except `infinite`) and the offline bound
   (`marconi.planner.offline.offline_bound`: an upper bound on FLOP savings and the
   savings of a rounded feasible schedule).

Workers are forked from this process and inherit the models and workloads; tasks are
handed out longest first.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from marconi.passes import build_cost_model
from marconi.passes.cost_model import CostModel
from marconi.planner.plan import planned_policies
from marconi.runtime.capacity import Capacity
from marconi.runtime.config import CacheConfig
from marconi.runtime.sim.executor import Executor, executor_for
from marconi.runtime.sim.latency import get_device
from marconi.runtime.cache.policies import get_policy, policy_names
from marconi.runtime.sim.simulator import run_policy
from marconi.runtime.workload import Workload
from marconi.spec import ModelSpec, load_model

from benchmarks.suites import Suite
from benchmarks.variants import d_state_variant, layer_mix_variant, mix_label

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "models"

CAPACITY, LAYER_MIX, D_STATE = "capacity", "layer-mix", "d-state"
REFERENCE, POLICY, BOUND = "reference", "policy", "bound"
REFERENCE_POLICY = "infinite"           # run once per (model, workload), not per capacity
FOOTPRINT_POLICY = "sglang"             # its unbounded peak bytes set the capacity scale
# relative cost of one task, per replay of the workload (for scheduling only)
_WEIGHT = {"marconi-static": 22.0, "planned": 6.0, "marconi": 2.0, BOUND: 3.0}

Progress = Callable[[int, int, str], None]


@dataclasses.dataclass(frozen=True, order=True)
class Task:
    study: str                   # capacity | layer-mix | d-state
    model: str                   # model name (variants included)
    workload: str                # workload key
    kind: str                    # reference | policy | bound
    fraction: float = 0.0        # capacity as a fraction of the footprint (0 for references)
    policy: str = ""
    capacity_bytes: int = 0

    @property
    def label(self) -> str:
        what = self.policy or self.kind
        return f"{self.model} {self.workload} {what}" + (
            f" @{self.fraction:g}" if self.kind != REFERENCE else "")


@dataclasses.dataclass(frozen=True)
class Variant:
    study: str                   # layer-mix | d-state
    model: str                   # the variant's model name
    label: str                   # "1:4", "Transformer", "64", …
    value: float                 # x coordinate: attention share, or d_state


@dataclasses.dataclass(frozen=True)
class Inputs:
    """Everything the tasks read: cost models by model name, workloads by key."""

    costs: dict[str, CostModel]
    workloads: dict[str, Workload]
    variants: tuple[Variant, ...]
    skipped: tuple[str, ...]     # workload keys left out (trace not found)
    bound_method: str = "auto"


# ---------------------------------------------------------------- building the inputs

def variant_specs(suite: Suite, base: ModelSpec) -> list[tuple[Variant, ModelSpec]]:
    out = []
    if suite.variants is None:
        return out
    for n_rec, n_att in suite.variants.layer_mixes:
        spec = layer_mix_variant(base, n_rec, n_att)
        out.append((Variant(LAYER_MIX, spec.name, mix_label(n_rec, n_att),
                            n_att / (n_rec + n_att)), spec))
    for d in suite.variants.d_states:
        spec = d_state_variant(base, d)
        out.append((Variant(D_STATE, spec.name, str(d), float(d)), spec))
    return out


def build_inputs(suite: Suite, traces_dir: Path, allow_missing: bool) -> Inputs:
    """Load the suite's workloads and build the CostModel of every model and variant."""
    workloads, skipped = {}, []
    for source in suite.workloads:
        if not source.available(traces_dir) and allow_missing:
            log.warning("%s: %s not found; left out", source.key, source.path(traces_dir))
            skipped.append(source.key)
            continue
        workloads[source.key] = source.load(traces_dir, suite.seed)
    costs = {}
    for name in suite.models:
        spec = load_model(EXAMPLES / f"{name}.yaml")
        costs[name] = build_cost_model(spec)
        if name == suite.base_model:
            base = spec
    variants = []
    if suite.variants is not None:
        for variant, spec in variant_specs(suite, base):
            costs[variant.model] = build_cost_model(spec)
            variants.append(variant)
    return Inputs(costs=costs, workloads=workloads, variants=tuple(variants),
                  skipped=tuple(skipped), bound_method=suite.bound_method)


def suite_policies(suite: Suite) -> list[str]:
    names = list(suite.policies) if suite.policies is not None else policy_names()
    for name in names:
        get_policy(name)
    return [n for n in names if n != REFERENCE_POLICY]


# ---------------------------------------------------------------- the tasks

def reference_tasks(suite: Suite, inputs: Inputs) -> list[Task]:
    tasks = [Task(CAPACITY, m, w, REFERENCE) for m in suite.models for w in inputs.workloads]
    if suite.variants is not None:
        tasks += [Task(v.study, v.model, w, REFERENCE) for v in inputs.variants
                  for w in suite.variants.workloads if w in inputs.workloads]
    return tasks


def capacity_tasks(suite: Suite, inputs: Inputs, footprints: dict[tuple[str, str], int],
                   policies: list[str]) -> list[Task]:
    tasks = []
    for m in suite.models:
        for w in inputs.workloads:
            for f in suite.fractions:
                cap = max(1, int(footprints[(m, w)] * f))
                tasks += [Task(CAPACITY, m, w, POLICY, f, p, cap) for p in policies]
                tasks.append(Task(CAPACITY, m, w, BOUND, f, "", cap))
    if suite.variants is not None:
        f = suite.variants.fraction
        for w in suite.variants.workloads:
            if w not in inputs.workloads:
                continue
            cap = max(1, int(footprints[(suite.base_model, w)] * f))
            for v in inputs.variants:
                tasks += [Task(v.study, v.model, w, POLICY, f, p, cap) for p in policies]
                tasks.append(Task(v.study, v.model, w, BOUND, f, "", cap))
    return tasks


def execute(task: Task, inputs: Inputs) -> dict[str, Any]:
    """Run one task; a plain-data record (see the module docstring)."""
    cost, workload = inputs.costs[task.model], inputs.workloads[task.workload]
    head = {"study": task.study, "model": task.model, "workload": task.workload,
            "kind": task.kind}
    if task.kind == REFERENCE:
        unbounded = CacheConfig(capacity=Capacity.unbounded())
        ideal = run_policy(REFERENCE_POLICY, workload, cost, unbounded)
        footprint = run_policy(FOOTPRINT_POLICY, workload, cost, unbounded)
        L = np.fromiter((r.input_tokens for r in workload.requests), dtype=np.float64)
        ttft = get_device(unbounded.device).ttft_ms(cost, L, 0)
        p50, p95 = np.percentile(ttft, [50, 95])
        return {**head, "footprint_bytes": int(footprint.peak_bytes),
                "footprint_policy": FOOTPRINT_POLICY,
                "footprint_token_hit_rate": footprint.token_hit_rate,
                "infinite": _sim_record(ideal),
                "no_cache_ttft_p50_ms": float(p50), "no_cache_ttft_p95_ms": float(p95),
                "requests": len(workload.requests), "input_tokens": int(L.sum()),
                "block_size": workload.block_size,
                "kv_bytes_per_token": cost.kv_bytes_per_token,
                "state_bytes": cost.state_bytes()}
    head.update(fraction=task.fraction, capacity_bytes=task.capacity_bytes)
    if task.kind == POLICY:
        config = CacheConfig(capacity=Capacity.shared(task.capacity_bytes))
        return {**head, **_sim_record(run_policy(task.policy, workload, cost, config,
                                                 bound=planned_policies()))}
    from marconi.planner.offline import offline_bound
    t0 = time.perf_counter()
    report = offline_bound(workload, cost, Capacity.shared(task.capacity_bytes), method=inputs.bound_method)
    return {**head, "policy": "bound", "method": report.method,
            "upper_flop_savings": report.upper.flop_savings,
            "rounded_flop_savings": report.rounded.flop_savings,
            "rounded_peak_bytes": report.rounded.peak_occupancy_bytes,
            "upper_status": report.upper.status,
            "seconds": time.perf_counter() - t0}


def _sim_record(result) -> dict[str, Any]:
    out = result.to_dict()
    params = out.pop("params", {})
    out["params"] = {k: v for k, v in params.items() if isinstance(v, (int, float, str))}
    return out


# ---------------------------------------------------------------- running tasks

def _cost_estimate(task: Task, inputs: Inputs) -> float:
    size = inputs.workloads[task.workload].total_input_tokens
    return size * _WEIGHT.get(task.policy or task.kind, 1.0)


def run_tasks(tasks: Iterable[Task], inputs: Inputs, jobs: int,
              progress: Progress | None = None,
              executor: Executor | None = None) -> list[dict[str, Any]]:
    """Every task's record, sorted by task (independent of `jobs` and of timing); run in
    `executor` when given (a `RayExecutor`), else in `jobs` processes."""
    tasks = sorted(set(tasks), key=lambda t: (-_cost_estimate(t, inputs), t))
    done: dict[Task, dict[str, Any]] = {}
    total = len(tasks)

    def record(task, rec):
        done[task] = rec
        if progress is not None:
            progress(len(done), total, task.label)
        elif len(done) % max(1, total // 20) == 0 or len(done) == total:
            log.info("%d/%d tasks done (last: %s)", len(done), total, task.label)

    executor = executor if executor is not None else executor_for(jobs)
    executor.map(partial(execute, inputs=inputs), tasks,
                 done=lambda i, rec: record(tasks[i], rec))
    return [done[t] for t in sorted(done)]


@dataclasses.dataclass(frozen=True)
class SweepResult:
    references: tuple[dict, ...]
    records: tuple[dict, ...]     # policies and bounds, sorted by task
    variants: tuple[Variant, ...]
    skipped: tuple[str, ...]
    seconds: float


def run_suite(suite: Suite, traces_dir: Path, jobs: int = 1, allow_missing: bool = False,
              progress: Progress | None = None,
              executor: Executor | None = None) -> SweepResult:
    t0 = time.perf_counter()
    policies = suite_policies(suite)
    inputs = build_inputs(suite, traces_dir, allow_missing)
    log.info("built %d cost models and %d workloads in %.1f s", len(inputs.costs),
             len(inputs.workloads), time.perf_counter() - t0)
    refs = run_tasks(reference_tasks(suite, inputs), inputs, jobs, progress, executor)
    footprints = {(r["model"], r["workload"]): r["footprint_bytes"] for r in refs
                  if r["study"] == CAPACITY}
    records = run_tasks(capacity_tasks(suite, inputs, footprints, policies), inputs, jobs,
                        progress, executor)
    return SweepResult(references=tuple(refs), records=tuple(records),
                       variants=inputs.variants, skipped=inputs.skipped,
                       seconds=time.perf_counter() - t0)

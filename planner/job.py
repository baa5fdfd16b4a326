"""The main job behind `marconi-plan MODEL`: plan, then measure the plan against everything.

    run_plan_job(workload, cost, capacity)
      - the deployable plan: `derive_plan` on the whole workload;
      - the whole workload replayed under every baseline and the plan, and its bound;
      - the honest check: a plan derived on the first half only, every policy scored on
        the second half, and the second half's bound;
      - optionally, hit rate and FLOP savings against capacity for every policy (`sweep`);
      - optionally, each engine model's best flags (`engines`, `engine_search`).

With a warm-up fraction (`warmup`), each workload scored (the whole one, the held-out half)
starts with its own warm-up: its first `warmup` fraction of requests fill the cache and are
not counted, in any policy's figures or in the bound; plans are fitted on the same window.

Returns plain data (`PlanJob`); the CLI renders it and writes runtime.yaml. A `progress`
callback hears ``(stage, done, total)`` as the job goes: each replay's requests, and
``total`` 0 for a step that reports no count (planning, the bound).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Callable, Sequence

from marconi.passes.cost_model import CostModel
from marconi.planner.engine_search import EngineComparison, compare_engines
from marconi.planner.offline import BoundReport, offline_bound
from marconi.planner.plan import PlanResult, derive_plan, planned_policy
from marconi.runtime.capacity import Capacity
from marconi.runtime.config import CacheConfig
from marconi.runtime.sim.executor import Executor
from marconi.runtime.sim.simulator import SimResult, simulate
from marconi.runtime.workload import Workload

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]       # (stage, done, total); total 0: no count

BASELINES = ("vllm-all", "vllm-align", "sglang", "marconi", "marconi-static", "infinite")


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """Every policy and the bound on one workload at one capacity."""

    workload: str
    requests: int
    results: tuple[SimResult, ...]      # baselines, then "planned"
    bound: BoundReport
    warmup_requests: int = 0            # of `requests`, the first ones, not counted

    def share_of_bound(self, result: SimResult) -> float:
        b = self.bound.upper.flop_savings
        return result.flop_savings / b if b > 0 else float("nan")


@dataclasses.dataclass(frozen=True)
class PlanJob:
    capacity: Capacity
    capacity_source: str
    plan: PlanResult                    # fitted on the whole workload (written out)
    whole: Evaluation
    held_out_plan: PlanResult | None    # fitted on the first half
    held_out: Evaluation | None         # scored on the second half
    sweep: tuple[tuple[Capacity, tuple[SimResult, ...], float], ...] = ()
    seconds: float = 0.0
    warmup: float = 0.0                 # fraction of each scored workload not counted
    engines: EngineComparison | None = None   # each engine's best flags beside the plan


def evaluate(plan: PlanResult, workload: Workload, cost: CostModel, capacity: Capacity,
             executor: Executor | None = None, baselines: Sequence[str] = BASELINES,
             bound: BoundReport | None = None,
             progress: Progress | None = None, warmup: float = 0.0) -> Evaluation:
    """Every baseline and `plan` (as `planned`) replayed on `workload` by the simulator,
    in `executor` (default in-line), with the offline bound (`bound` when the caller
    already has it for this workload, capacity and warm-up)."""
    config = CacheConfig(capacity=capacity,
                         chunk_tokens=plan.plan.chunk_tokens, warmup=warmup)
    name = workload.name
    _report(progress, f"{name}: replaying {len(baselines)} baselines and the plan")
    per_policy = None if progress is None else \
        (lambda policy, done, total: progress(f"{name}: {policy}", done, total))
    report = simulate(workload, cost, config, [*baselines, "planned"], executor=executor,
                      progress=per_policy, bound={"planned": planned_policy(plan.plan)})
    if bound is None:
        _report(progress, f"{name}: offline bound")
        bound = offline_bound(workload, cost, capacity, warmup=warmup)
    return Evaluation(workload=workload.name, requests=len(workload.requests),
                      results=report.results, bound=bound,
                      warmup_requests=config.warmup_requests(len(workload.requests)))


def run_plan_job(workload: Workload, cost: CostModel, capacity: Capacity,
                 capacity_source: str = "given", chunk_tokens: int | None = None,
                 held_out: bool = True, sweep_factors: Sequence[float] = (),
                 executor: Executor | None = None, progress: Progress | None = None,
                 warmup: float = 0.0, engines: Sequence = ()) -> PlanJob:
    t0 = time.perf_counter()
    _report(progress, f"planning on {workload.name}")
    plan = derive_plan(workload, cost, capacity, chunk_tokens=chunk_tokens,
                       warmup=warmup)
    # derive_plan solved this workload's bound at this capacity already: reuse it
    whole = evaluate(plan, workload, cost, capacity, executor, bound=plan.bound,
                     progress=progress, warmup=warmup)
    # each engine model's flags searched by replay on the same workload (the plan reused)
    comparison = None if not engines else compare_engines(
        engines, workload, cost, CacheConfig(capacity=capacity, warmup=warmup), plan=plan,
        executor=executor, progress=progress, gaps=False)
    fitted_half = evaluation_half = None
    if held_out and len(workload.requests) >= 4:
        first, second = workload.split()
        _report(progress, f"planning on {first.name}")
        fitted_half = derive_plan(first, cost, capacity, chunk_tokens=chunk_tokens,
                                  warmup=warmup)
        evaluation_half = evaluate(fitted_half, second, cost, capacity, executor,
                                   progress=progress, warmup=warmup)
    points = []
    for f in sweep_factors:
        cap = capacity.scaled(f)
        if f != 1:
            _report(progress, f"planning at {f:g}× the capacity")
        p = plan if f == 1 else derive_plan(workload, cost, cap, chunk_tokens=chunk_tokens,
                                            tune_replays=12, warmup=warmup)
        ev = whole if f == 1 else evaluate(p, workload, cost, cap, executor, bound=p.bound,
                                           progress=progress, warmup=warmup)
        points.append((cap, ev.results, ev.bound.upper.flop_savings))
    return PlanJob(capacity=capacity, capacity_source=capacity_source,
                   plan=plan, whole=whole, held_out_plan=fitted_half,
                   held_out=evaluation_half, sweep=tuple(points),
                   seconds=time.perf_counter() - t0, warmup=warmup, engines=comparison)


def _report(progress: Progress | None, stage: str) -> None:
    """A step without a count (planning, a bound, parallel replays) begins."""
    if progress is not None:
        progress(stage, 0, 0)

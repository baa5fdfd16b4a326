"""The main job behind `marconi-plan MODEL`: plan, then measure the plan against everything.

    run_plan_job(workload, cost, capacity)
      - the deployable plan: `derive_plan` on the whole workload;
      - the whole workload replayed under every baseline and the plan, and its bound;
      - the honest check: a plan derived on the first half only, every policy scored on
        the second half, and the second half's bound;
      - optionally, hit rate and FLOP savings against capacity for every policy (`sweep`).

Returns plain data (`PlanJob`); the CLI renders it and writes runtime.yaml.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Sequence

from marconi.passes.cost_model import CostModel
from marconi.planner.offline import BoundReport, offline_bound
from marconi.planner.plan import PlanResult, derive_plan
from marconi.runtime.capacity import Capacity
from marconi.runtime.config import CacheConfig
from marconi.runtime.simulator import SimResult, simulate
from marconi.runtime.workload import Workload

log = logging.getLogger(__name__)

BASELINES = ("vllm-all", "vllm-align", "sglang", "marconi", "marconi-static", "infinite")


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """Every policy and the bound on one workload at one capacity."""

    workload: str
    requests: int
    results: tuple[SimResult, ...]      # baselines, then "planned"
    bound: BoundReport

    def share_of_bound(self, result: SimResult) -> float:
        b = self.bound.upper.flop_savings
        return result.flop_savings / b if b > 0 else float("nan")


@dataclasses.dataclass(frozen=True)
class PlanJob:
    capacity_bytes: int
    capacity_source: str
    plan: PlanResult                    # fitted on the whole workload (written out)
    whole: Evaluation
    held_out_plan: PlanResult | None    # fitted on the first half
    held_out: Evaluation | None         # scored on the second half
    sweep: tuple[tuple[int, tuple[SimResult, ...], float], ...] = ()
    seconds: float = 0.0


def evaluate(plan: PlanResult, workload: Workload, cost: CostModel, capacity_bytes: int,
             jobs: int = 1, baselines: Sequence[str] = BASELINES,
             bound: BoundReport | None = None) -> Evaluation:
    """Every baseline and `plan` replayed on `workload`, with the offline bound (`bound`
    when the caller already has it for this workload and capacity)."""
    from marconi.runtime.policies.planned import Planned
    config = CacheConfig(capacity=Capacity.shared(int(capacity_bytes)),
                         chunk_tokens=plan.plan.chunk_tokens)
    report = simulate(workload, cost, config, list(baselines), jobs=jobs)
    t0 = time.perf_counter()
    planned = Planned.with_plan(plan.plan).run(workload, cost, config)
    planned = dataclasses.replace(planned, seconds=time.perf_counter() - t0)
    bound = bound or offline_bound(workload, cost, capacity_bytes)
    return Evaluation(workload=workload.name, requests=len(workload.requests),
                      results=report.results + (planned,), bound=bound)


def run_plan_job(workload: Workload, cost: CostModel, capacity_bytes: int,
                 capacity_source: str = "given", chunk_tokens: int | None = None,
                 held_out: bool = True, sweep_factors: Sequence[float] = (),
                 jobs: int = 1) -> PlanJob:
    t0 = time.perf_counter()
    plan = derive_plan(workload, cost, capacity_bytes, chunk_tokens=chunk_tokens)
    # derive_plan solved this workload's bound at this capacity already: reuse it
    whole = evaluate(plan, workload, cost, capacity_bytes, jobs, bound=plan.bound)
    fitted_half = evaluation_half = None
    if held_out and len(workload.requests) >= 4:
        first, second = workload.split()
        fitted_half = derive_plan(first, cost, capacity_bytes, chunk_tokens=chunk_tokens)
        evaluation_half = evaluate(fitted_half, second, cost, capacity_bytes, jobs)
    points = []
    for f in sweep_factors:
        cap = max(1, int(capacity_bytes * f))
        p = plan if f == 1 else derive_plan(workload, cost, cap, chunk_tokens=chunk_tokens,
                                            tune_replays=12)
        ev = whole if f == 1 else evaluate(p, workload, cost, cap, jobs, bound=p.bound)
        points.append((cap, ev.results, ev.bound.upper.flop_savings))
    return PlanJob(capacity_bytes=int(capacity_bytes), capacity_source=capacity_source,
                   plan=plan, whole=whole, held_out_plan=fitted_half,
                   held_out=evaluation_half, sweep=tuple(points),
                   seconds=time.perf_counter() - t0)

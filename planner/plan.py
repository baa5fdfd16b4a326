"""Plan a workload: offline optimum → rules it relies on → parameters tuned by replay.

    derive_plan(workload, cost, capacity)
      1. candidates and the offline bound (`offline.py`): an upper bound and a rounded
         feasible schedule;
      2. what the schedule relies on (`derive.py`): reuse classes, sightings, minimum
         prefix, pinned prefixes, the states' share of memory → starting rules;
      3. coordinate search by replay of the `planned` policy on the same workload
         (`tune.py`): eviction offsets per class, fresh-input admission, sighting, stride,
         memory split.

To keep the planner honest, callers fit on one part of a trace and score on another
(`Workload.split`): `marconi-plan` reports both. With a warm-up fraction, the bound, the
schedule's insights and every tuning replay count only the requests after it.

The runtime's `planned` policy plans online through `replan_online`, which it is given
(`planned_policies`, or ``Planned.with_planner(replan_online)``): the runtime does not
import the planner.

A plan needs at least two requests (it is fitted on the reuse between them); a workload
without any reuse gets one all the same: its bound is 0 and no rule can change that.
"""

from __future__ import annotations

import dataclasses
import logging
import time

from marconi.errors import PlanError
from marconi.passes.cost_model import CostModel
from marconi.planner.candidates import build_problem
from marconi.planner.derive import OfflineInsights, analyze, initial_plan
from marconi.planner.next_use import fit_on
from marconi.planner.offline import BoundReport, offline_bound
from marconi.runtime.plan.rules import Plan
from marconi.planner.tune import Trial, coordinate_search, replay_savings, search_space
from marconi.runtime.cache.policies.hedged import Hedged
from marconi.runtime.cache.policies.planned import Planned
from marconi.runtime.capacity import Capacity
from marconi.runtime.config import CacheConfig
from marconi.runtime.sim.replay import with_cycle_collector
from marconi.runtime.workload import Workload

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class PlanResult:
    plan: Plan
    bound: BoundReport
    insights: OfflineInsights
    trials: tuple[Trial, ...]
    tuned_flop_savings: float         # the plan replayed on the workload it was tuned on
    seconds: float


def derive_plan(workload: Workload, cost: CostModel, capacity: Capacity,
                chunk_tokens: int | None = None, memory_split: bool = True,
                bound_method: str = "auto", tune_replays: int | None = None,
                config: CacheConfig | None = None, warmup: float = 0.0,
                next_use: bool = False) -> PlanResult:
    """A Plan for `workload` at `capacity` (one shared pool), tuned on `workload` itself (on the
    requests after the first `warmup` fraction, which only warm the cache up). With
    `next_use`, a next-use predictor (`planner.next_use`) is fitted on `workload` and kept
    in the plan if its replay there saves more FLOPs than the tuned class offsets."""
    n = len(workload.requests)
    if n < 2:
        raise PlanError(workload.name, f"requests: the trace has {n} request"
                        f"{'' if n == 1 else 's'}; expected at least 2 to plan (a plan is "
                        "fitted on the reuse between requests)")
    t0 = time.perf_counter()
    problem = build_problem(workload, cost, capacity, warmup=warmup)
    bound = offline_bound(workload, cost, capacity, method=bound_method,
                          problem=problem, warmup=warmup)
    insights = analyze(problem, workload, bound.rounded.hits)
    log.info("offline schedule of %s: %s", workload.name, insights.to_dict())
    plan = initial_plan(insights, cost, workload, problem.capacity_bytes, chunk_tokens)
    base = config or CacheConfig(capacity=capacity)
    config = dataclasses.replace(base, capacity=capacity,
                                 chunk_tokens=chunk_tokens, warmup=warmup)
    space = search_space(plan, insights, memory_split)
    plan, best, trials = coordinate_search(
        plan, space, lambda p: replay_savings(p, workload, cost, config), tune_replays)
    if next_use:
        with_predictor = dataclasses.replace(plan, next_use=fit_on(workload))
        savings = replay_savings(with_predictor, workload, cost, config)
        trials = (*trials, Trial("next_use", True, savings))
        if savings > best + 0.005:              # coordinate_search's margin
            plan, best = with_predictor, savings
    plan = dataclasses.replace(plan, provenance=(
        ("workload", workload.name), ("requests", len(workload.requests)),
        ("capacity_bytes", problem.capacity_bytes),
        ("bound_method", bound.method),
        ("upper_bound_flop_savings", round(bound.upper.flop_savings, 6)),
        ("rounded_flop_savings", round(bound.rounded.flop_savings, 6)),
        ("tuned_flop_savings", round(best, 6)),
        ("replays", len(trials))))
    return PlanResult(plan=plan, bound=bound, insights=insights, trials=trials,
                      tuned_flop_savings=best, seconds=time.perf_counter() - t0)


def replan_online(workload: Workload, cost: CostModel, capacity: Capacity,
                  chunk_tokens: int | None) -> Plan:
    """`planned`'s online re-planner (`runtime.cache.policies.planned.Replanner`): a plan
    for the requests served so far, on one shared pool (a running cache's pools cannot be
    re-split: the plan is for their total). Called mid-replay, it collects cycles again
    for its own work."""
    with with_cycle_collector():                    # planning is not a replay loop
        result = derive_plan(workload, cost, Capacity.shared(capacity.total_bytes),
                             chunk_tokens=chunk_tokens, memory_split=False)
    return result.plan


def planned_policy(plan: Plan | None = None, hedged: bool = True) -> type:
    """`planned` as marconi-plan runs and reports it: `plan`'s rules, or without one rules
    planned online by `replan_online`, hedged by ghosts of the baselines
    (`runtime.cache.policies.hedged`: the rules lead, and the lead passes to a baseline
    only where its ghost saved more over the last window), so that it never falls far
    below the best of them. ``hedged=False``: the rules alone (what tuning replays)."""
    rules = Planned.with_planner(replan_online) if plan is None else Planned.with_plan(plan)
    return Hedged.around(rules) if hedged else rules


def planned_policies() -> dict[str, type]:
    """The policies to bind in a simulation (`simulate`'s and `run_policy`'s `bound`) so
    that `planned` without a saved plan plans online with this planner (hedged)."""
    return {"planned": planned_policy()}

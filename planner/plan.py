"""Plan a workload: offline optimum → rules it relies on → parameters tuned by replay.

    derive_plan(workload, cost, capacity)
      1. candidates and the offline bound (`offline.py`): an upper bound and a rounded
         feasible schedule;
      2. what the schedule relies on (`derive.py`): reuse classes, sightings, minimum
         prefix, pinned prefixes, the states' share of memory → starting rules;
      3. coordinate search by replay of the `planned` policy on the same workload
         (`tune.py`): eviction offsets per class, fresh-input admission, sighting, stride,
         memory split;
      4. the α of Marconi's eviction with the most FLOP savings on the same workload
         (`tune.marconi_alpha`): the hedged `planned` runs its Marconi ghost at it.

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
from marconi.planner.next_use import fit_on, reuse_odds_on
from marconi.planner.offline import BoundReport, offline_bound
from marconi.runtime.plan.rules import Plan
from marconi.planner.tune import (Trial, coordinate_search, marconi_alpha, replay_savings,
                                  search_space)
from marconi.runtime.cache.policies.hedged import BASELINES, Hedged, marconi_at
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
                next_use: bool = False, fit_alpha: bool = True,
                reuse_odds: bool = True) -> PlanResult:
    """A Plan for `workload` at `capacity` (one shared pool), tuned on `workload` itself (on the
    requests after the first `warmup` fraction, which only warm the cache up). With
    `next_use`, a next-use predictor (`planner.next_use`) is fitted on `workload` and kept
    in the plan if its replay there saves more FLOPs than the tuned class offsets. With
    `fit_alpha`, the plan carries the Marconi α fitted on `workload` (`Plan.marconi_alpha`;
    one replay per α of the grid, sharing the history before the first eviction). With
    `reuse_odds`, survival counts of next-use gaps are fitted on `workload`
    (`planner.next_use.reuse_odds_on`) and the tuner tries refining the eviction order by
    them among its first 8 or 64 victims, with a table of the first half of `workload`;
    where that was chosen the plan carries the table refitted on all of it."""
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
    if reuse_odds:
        # tuned with a table of the first half only, so that the replay's second half
        # scores it on passes it was not fitted to (a table fitted on the passes it is
        # scored on knows their gaps); shipped refitted on the whole workload, so the
        # tuned savings (and the provenance's) are those of the first-half table
        plan = dataclasses.replace(plan, reuse_odds=reuse_odds_on(workload.split()[0]))
    base = config or CacheConfig(capacity=capacity)
    config = dataclasses.replace(base, capacity=capacity,
                                 chunk_tokens=chunk_tokens, warmup=warmup)
    space = search_space(plan, insights, memory_split)
    plan, best, trials = coordinate_search(
        plan, space, lambda p: replay_savings(p, workload, cost, config), tune_replays)
    if plan.reuse_odds is not None:
        k = plan.reuse_odds.candidates
        plan = dataclasses.replace(plan, reuse_odds=None if k <= 1 else   # not chosen
                                   reuse_odds_on(workload, candidates=k))
    if next_use:
        # a predictor's index replaces the class-offset order the odds refine
        with_predictor = dataclasses.replace(plan, next_use=fit_on(workload), reuse_odds=None)
        savings = replay_savings(with_predictor, workload, cost, config)
        trials = (*trials, Trial("next_use", True, savings))
        if savings > best + 0.005:              # coordinate_search's margin
            plan, best = with_predictor, savings
    alpha_savings = {}
    if fit_alpha:
        # in the memory layout the hedge's ghosts run in: the plan's (split pools included)
        layout = Planned.with_plan(plan)(cost, config, workload).capacity()
        alpha, alpha_savings = marconi_alpha(
            workload, cost, dataclasses.replace(config, capacity=layout))
        plan = dataclasses.replace(plan, marconi_alpha=alpha)
    plan = dataclasses.replace(plan, provenance=(
        ("workload", workload.name), ("requests", len(workload.requests)),
        ("capacity_bytes", problem.capacity_bytes),
        ("bound_method", bound.method),
        ("upper_bound_flop_savings", round(bound.upper.flop_savings, 6)),
        ("rounded_flop_savings", round(bound.rounded.flop_savings, 6)),
        ("tuned_flop_savings", round(best, 6)),
        ("replays", len(trials)),
        *((("marconi_alpha_flop_savings", round(alpha_savings[plan.marconi_alpha], 6)),
           ("marconi_alpha_replays", len(alpha_savings))) if alpha_savings else ())))
    return PlanResult(plan=plan, bound=bound, insights=insights, trials=trials,
                      tuned_flop_savings=best, seconds=time.perf_counter() - t0)


def replan_online(workload: Workload, cost: CostModel, capacity: Capacity,
                  chunk_tokens: int | None) -> Plan:
    """`planned`'s online re-planner (`runtime.cache.policies.planned.Replanner`): a plan
    for the requests served so far, on one shared pool (a running cache's pools cannot be
    re-split: the plan is for their total). Called mid-replay, it collects cycles again
    for its own work."""
    with with_cycle_collector():                    # planning is not a replay loop
        # no α fit: the online hedge's Marconi ghost tunes its own α, as `marconi` does
        result = derive_plan(workload, cost, Capacity.shared(capacity.total_bytes),
                             chunk_tokens=chunk_tokens, memory_split=False,
                             fit_alpha=False)
    return result.plan


def planned_policy(plan: Plan | None = None, hedged: bool = True) -> type:
    """`planned` as marconi-plan runs and reports it: `plan`'s rules, or without one rules
    planned online by `replan_online`, hedged by ghosts of the baselines
    (`runtime.cache.policies.hedged`: the rules lead, and the lead passes to a baseline
    only where its ghost saved more over the last window), so that it never falls far
    below the best of them (`hedge_baselines`). ``hedged=False``: the rules alone (what
    tuning replays)."""
    rules = Planned.with_planner(replan_online) if plan is None else Planned.with_plan(plan)
    return Hedged.around(rules, hedge_baselines(plan)) if hedged else rules


def hedge_baselines(plan: Plan | None) -> tuple:
    """The baselines whose ghosts hedge `plan`'s rules: `sglang`, `vllm-align` and Marconi,
    at the plan's fitted α (``marconi@α``: no α search online) where it has one, else
    `marconi` tuning its α online as the baseline does."""
    if plan is None or plan.marconi_alpha is None:
        return BASELINES
    return tuple(marconi_at(plan.marconi_alpha) if b == "marconi" else b for b in BASELINES)


def planned_policies() -> dict[str, type]:
    """The policies to bind in a simulation (`simulate`'s and `run_policy`'s `bound`) so
    that `planned` without a saved plan plans online with this planner (hedged)."""
    return {"planned": planned_policy()}

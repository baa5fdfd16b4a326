"""Tune a plan's parameters by replaying the workload through the `planned` policy.

Coordinate search: each parameter in turn tries its grid values with the others fixed and
keeps the value with the most FLOP savings (by a margin; ties keep the earlier value, so
the search is deterministic); one pass, in a fixed order, optionally capped at a number of
replays (never at a wall-clock time, so a plan depends only on its inputs). Time
offsets are in units of τ, the median arrival gap between an offline hit and the request
that emitted it.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable, Iterable

from marconi.passes.cost_model import CostModel
from marconi.planner.derive import OfflineInsights
from marconi.runtime.plan.rules import MemoryRules, Plan, ReuseClass
from marconi.runtime.cache.policies.planned import Planned
from marconi.runtime.config import CacheConfig
from marconi.runtime.cache.policies.marconi import MarconiStatic
from marconi.runtime.sim.simulator import fixed_alpha_results, replay_policy
from marconi.runtime.workload import Workload

log = logging.getLogger(__name__)

EVICT_FIRST = -1e15            # an offset that puts a class before every other


@dataclasses.dataclass(frozen=True)
class Trial:
    parameter: str
    value: object
    flop_savings: float


def replay_savings(plan: Plan, workload: Workload, cost: CostModel,
                   config: CacheConfig) -> float:
    """FLOP savings of `plan` on `workload` (one replay of the `planned` policy)."""
    return replay_policy(Planned.with_plan(plan), workload, cost, config).flop_savings


def marconi_alpha(workload: Workload, cost: CostModel, config: CacheConfig
                  ) -> tuple[float, dict[float, float]]:
    """The α of Marconi's eviction (`marconi@α`, never re-tuned) with the most FLOP
    savings on `workload` (ties: the smaller α), and the savings per α of
    ``config.marconi.alpha_grid`` and 0 (`fixed_alpha_results`; 0 alone where nothing is
    evicted): the static α the hedged `planned` runs its Marconi
    ghost at, fitted where the plan is (`marconi-static` is the same sweep on the scored
    trace, by token hit rate: an oracle)."""
    results = fixed_alpha_results(MarconiStatic, workload, cost, config)
    savings = {a: r.flop_savings for a, r in results.items()}
    return max(savings, key=lambda a: (savings[a], -a)), savings


def search_space(plan: Plan, insights: OfflineInsights, memory_split: bool
                 ) -> list[tuple[str, list, Callable[[Plan, object], Plan]]]:
    """(name, grid, apply) per parameter, in search order; the first grid value is the
    starting one."""
    tau = insights.median_gap_ms
    adm = plan.admission

    def offset(cls):
        return lambda p, v: dataclasses.replace(
            p, eviction=p.eviction.with_offset(cls, v * tau if v != EVICT_FIRST else v))

    def admission(field):
        return lambda p, v: dataclasses.replace(
            p, admission=dataclasses.replace(p.admission, **{field: v}))

    space = [("offset.passed", [0.0, EVICT_FIRST], offset(ReuseClass.PASSED))]
    if adm.input_end:
        space += [("offset.continuation", [0.0, 0.25, 1.0, 4.0, 16.0],
                   offset(ReuseClass.CONTINUATION))]
    if adm.output_end:
        space += [("offset.output", [0.0, 0.25, 1.0, 4.0, 16.0], offset(ReuseClass.OUTPUT))]
    if adm.input_end or adm.output_end:
        space += [("offset.fresh", [0.0, -0.25, -1.0, -4.0], offset(ReuseClass.FRESH)),
                  ("admit_fresh", [True, False], admission("admit_fresh")),
                  ("fresh_threshold", [0.3, 0.6, 0.1], admission("fresh_threshold"))]
    space += [("efficiency", [0.0, 0.25, 1.0, 4.0, 16.0],
               lambda p, v: dataclasses.replace(p, eviction=dataclasses.replace(
                   p.eviction, efficiency_ms=v * tau)))]
    if adm.branch_sighting:
        space += [("offset.branch", [0.0, 1.0, 4.0], offset(ReuseClass.BRANCH)),
                  ("branch_sighting", [1, 2], admission("branch_sighting"))]
    if insights.share("stride") >= 0.05:
        grid = plan.chunk_tokens or plan.block_tokens
        unit = grid if grid > 1 else 256
        space += [("stride_tokens", [None, 4 * unit, 16 * unit, 64 * unit],
                   admission("stride_tokens"))]
    if plan.reuse_odds is not None:
        # refine the order among its first K victims by the odds of reuse (1: off)
        space += [("reuse_odds.candidates", [plan.reuse_odds.candidates, 8, 64],
                   lambda p, v: dataclasses.replace(p, reuse_odds=dataclasses.replace(
                       p.reuse_odds, candidates=v)))]
    if memory_split and 0.0 < insights.state_share < 1.0:
        frac = min(0.9, max(0.05, insights.state_share))
        space += [("memory", [MemoryRules(), MemoryRules("split", round(frac, 3))],
                   lambda p, v: dataclasses.replace(p, memory=v))]
    return space


def coordinate_search(plan: Plan, space: Iterable, score: Callable[[Plan], float],
                      max_replays: int | None = None, margin: float = 0.005
                      ) -> tuple[Plan, float, tuple[Trial, ...]]:
    """One pass of coordinate search; returns the best plan, its score and every trial.

    A value replaces the current one only if it saves `margin` (relative) more: small
    differences on the tuning window are as likely noise as signal, and the earlier grid
    values are the more conservative ones. `max_replays` caps the candidates scored after
    the start (None: the whole pass).
    """
    best = score(plan)
    trials = [Trial("start", None, best)]
    for name, grid, apply in space:
        current = plan
        for value in grid[1:]:
            if max_replays is not None and len(trials) - 1 >= max_replays:
                log.info("tuning stopped after %d replays at %s", max_replays, name)
                return plan, best, tuple(trials)
            candidate = apply(current, value)
            s = score(candidate)
            trials.append(Trial(name, value, s))
            if s > best * (1 + margin):
                best, plan = s, candidate
        log.debug("tuned %s: %.4f", name, best)
    return plan, best, tuple(trials)

"""The offline optimum of a workload: an upper bound and a rounded feasible schedule.

`offline_bound` picks the bound by the size of the model (or as asked):

- ``lp``: the LP relaxation of the exact ILP (`ilp.py`), for traces whose model is small;
- ``lagrangian``: per-slot memory prices (`relaxation.py`), for long traces;
- ``knapsack``: one uniform price (PFOO-L style), the fastest and loosest.

and rounds the bound's own proposal into a feasible schedule (`rounding.py`), so
``upper_bound ≥ optimum ≥ rounded`` always holds. A workload where no counted request can
resume from an earlier one (a single request; no shared prefix; all reuse inside the
warm-up) has the exact answer 0, returned without a solver.

With a warm-up fraction the bound covers the counted requests only, as the simulator's
figures do (`CacheConfig.warmup`); the warm-up requests still fill the offline cache.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np

from marconi.errors import PlanError
from marconi.passes.cost_model import CostModel
from marconi.planner import ilp as ilp_mod
from marconi.planner.candidates import OfflineProblem, build_problem, check_convex_savings
from marconi.runtime.capacity import Capacity
from marconi.runtime.config import warmup_requests
from marconi.planner.relaxation import (_usage, knapsack_bound, lagrangian_bound,
                                        lagrangian_value, option_costs)
from marconi.planner.rounding import round_schedule
from marconi.planner.schedule import MISS, OfflineResult, schedule_result
from marconi.runtime.workload import Workload

log = logging.getLogger(__name__)

METHODS = ("auto", "lp", "lagrangian", "knapsack")
LP_MAX_ENTRIES = 60_000          # y + w + precedence rows above which `auto` leaves the LP


@dataclasses.dataclass(frozen=True)
class BoundReport:
    """What `marconi-plan bound` prints."""

    capacity_bytes: int
    upper: OfflineResult           # is_upper_bound
    rounded: OfflineResult         # a feasible schedule
    method: str
    seconds: float
    warmup: float = 0.0            # fraction of the requests not counted
    warmup_requests: int = 0

    def to_dict(self) -> dict:
        return {"capacity_bytes": self.capacity_bytes,
                "lp_upper_bound_flop_savings": self.upper.flop_savings,
                "rounded_flop_savings": self.rounded.flop_savings,
                "method": self.method, "seconds": self.seconds,
                "warmup": {"fraction": self.warmup, "requests": self.warmup_requests}}


def choose_method(problem: OfflineProblem) -> str:
    size = ilp_mod.model_size(problem)
    entries = size["y"] + size["w"] + size["precedence_rows"]
    return "lp" if entries <= LP_MAX_ENTRIES else "lagrangian"


def offline_bound(workload: Workload, cost: CostModel, capacity: Capacity,
                  method: str = "auto", problem: OfflineProblem | None = None,
                  time_limit: float = 300.0, warmup: float = 0.0) -> BoundReport:
    """Upper bound on FLOP savings of any cache of `capacity` (one shared pool), and a
    rounded schedule, over the requests after the first `warmup` fraction (`problem` must
    be built with it)."""
    if method not in METHODS:
        raise PlanError("method", f"unknown {method!r}; expected one of {', '.join(METHODS)}")
    if not check_convex_savings(cost):
        raise PlanError(cost.model, "flops: a hit's saving is not convex in its depth "
                        "(c_np < c_nn + c_pp), so key positions do not bound every position; "
                        "expected causal-attention FLOPs")
    t0 = time.perf_counter()
    problem = problem or build_problem(workload, cost, capacity, warmup=warmup)
    if problem.warmup_requests != warmup_requests(warmup, problem.n_requests):
        raise ValueError(f"problem built with {problem.warmup_requests} warm-up requests, "
                         f"asked for warmup={warmup}")
    method = choose_method(problem) if method == "auto" else method
    if not np.any(problem.opt_saved_flops > 0):
        upper, rounded = _no_reuse(problem, method, time.perf_counter() - t0)
        return BoundReport(capacity_bytes=problem.capacity_bytes, upper=upper, rounded=rounded,
                           method=method, seconds=time.perf_counter() - t0, warmup=warmup,
                           warmup_requests=problem.warmup_requests)
    log.info("offline bound of %s: %d requests, %d keys, %d options, method %s",
             problem.name, problem.n_requests, problem.tree.n_keys, problem.n_options, method)
    u = _usage(problem)
    density = problem.opt_saved_flops / np.maximum(
        option_costs(problem, np.ones(problem.n_requests), u), 1.0)
    if method == "lp":
        upper = ilp_mod.solve_ilp(problem, relax=True, time_limit=time_limit)
        y = dict(upper.details)["y"]
        proposed = _argmax_per_request(problem, y)
        proposed[:problem.warmup_requests] = MISS         # worth nothing; free their bytes
        rounded = round_schedule(problem, proposed, y + 1e-9 * density / max(density.max(), 1))
        upper = dataclasses.replace(upper, details=tuple(
            (k, v) for k, v in upper.details if k != "y"))
    else:
        if method == "knapsack":
            upper, mu = knapsack_bound(problem)
            _, proposed = lagrangian_value(problem, np.full(problem.n_requests, mu), u)
        else:
            upper, proposed = lagrangian_bound(problem)
        rounded = round_schedule(problem, proposed, density)
    assert rounded.saved_flops <= upper.saved_flops * (1 + 1e-6) + 1e-9, \
        f"rounded {rounded.saved_flops} above bound {upper.saved_flops}"
    return BoundReport(capacity_bytes=problem.capacity_bytes, upper=upper, rounded=rounded,
                       method=method, seconds=time.perf_counter() - t0, warmup=warmup,
                       warmup_requests=problem.warmup_requests)


def _no_reuse(problem: OfflineProblem, method: str, seconds: float
              ) -> tuple[OfflineResult, OfflineResult]:
    """No counted request has an option worth anything: 0 is the optimum, proven."""
    upper = OfflineResult(method=method, saved_flops=0.0, flop_savings=0.0,
                          is_upper_bound=True, seconds=seconds, status="optimal",
                          details=(("options", float(problem.n_options)),))
    rounded = schedule_result(problem, np.full(problem.n_requests, MISS, dtype=np.int64),
                              "rounded", 0.0)
    return upper, rounded


def _argmax_per_request(problem: OfflineProblem, y: np.ndarray) -> np.ndarray:
    proposed = np.full(problem.n_requests, MISS, dtype=np.int64)
    for r in range(problem.n_requests):
        opts = problem.options(r)
        if len(opts):
            o = max(opts, key=lambda o: (y[o], o))
            if y[o] > 1e-6:
                proposed[r] = o
    return proposed

"""The offline optimum as an interval ILP, and its LP relaxation (an upper bound).

Written like the formulation in planning-and-kernels.md §2.3, with the KV of shared
prefixes modelled per prefix-tree edge (§2.5, first option), so the ILP is the exact optimum
over key positions and its LP relaxation bounds every schedule (docs/planner.md).

Legend
------
    r, t      requests = slots (slot t is the arrival of request t)
    k         keys of the prefix tree (candidates); π(k) the key above k (root: no KV)
    τ_k       requests whose sequence passes k, t_0 < t_1 < …; interval i of k is the
              slots t_i+1 … t_{i+1} (a checkpoint or KV at k can only be emitted by a
              request passing k, so holding it for t_{i+1} means holding it all interval)
    o=(r,k)   option: request r resumes from a checkpoint at k (r = t_{i+1} for some i)
    F_o       FLOPs saved by option o: cost.saved_flops(h, L_r − h)
    S         state bytes of one checkpoint;  s_k  KV bytes of the edge π(k) → k
    C         capacity in bytes

    y[o]      ∈{0,1}  r resumes from k (the checkpoint x[k,i] = y[(t_{i+1},k)]: holding a
                      checkpoint over an interval helps only the request that ends it)
    w[k,i]    ∈{0,1}  the KV of edge π(k) → k is held over interval i of k
    O[t]      ≥ 0     bytes held at slot t

    max  Σ_o F_o·y[o]
    (C1) Σ_{o of r} y[o] ≤ 1                          ∀r   one resume point (the deepest)
    (C2) Σ_{o=(t_{i+1},q), q at or below k} y[o] ≤ w[k,i]   ∀k,i   a hit needs the KV above it
    (C3) w[k,i] ≤ w[π(k),j]   ∀ interval j of π(k) inside interval i of k   KV prefix-closed
    (C4) O[t] = O[t−1] + Σ_{items starting at t} size·var − Σ_{items ending at t−1} size·var
    (C5) O[t] ≤ C                                     ∀t   memory at every slot

(C2) sums the request's options below k rather than taking one at a time: at most one
is 1 in an integer solution, so it is valid, and it makes the LP at least as tight as the
Lagrangian relaxation (a fractional hit split over two depths pays the shared KV twice, as
it would in either integer choice). Items are (S, y[o]) and (s_k, w[k,i]) over their
interval. Coefficients are scaled (FLOPs
by the total prefill FLOPs, bytes by C) to keep the solver well conditioned.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import highspy
import numpy as np
import pulp

from marconi.errors import SolverError
from marconi.planner.candidates import OfflineProblem
from marconi.planner.prefix_tree import ROOT
from marconi.planner.schedule import MISS, OfflineResult, schedule_result

log = logging.getLogger(__name__)


@dataclasses.dataclass
class IlpModel:
    """A built (not yet solved) ILP or LP and the maps from variables back to the problem."""

    problem: OfflineProblem
    prob: pulp.LpProblem
    relax: bool
    y: dict[int, pulp.LpVariable]                 # option index → y[o]
    w: dict[tuple[int, int], pulp.LpVariable]     # (key, interval) → w[k,i]
    n_rows: int
    build_seconds: float


def model_size(problem: OfflineProblem) -> dict[str, int]:
    """Variables and (C3) rows the model would have, without building it."""
    tree = problem.tree
    n_w = n_prec = 0
    for k in range(1, tree.n_keys):
        t = tree.touches(k)
        if len(t) < 2:
            continue
        n_w += len(t) - 1
        if tree.parent[k] != ROOT:
            tp = tree.touches(int(tree.parent[k]))
            ia = np.searchsorted(tp, t[:-1])
            ib = np.searchsorted(tp, t[1:])
            n_prec += int(np.sum(ib - ia))
    return {"y": problem.n_options, "w": n_w, "precedence_rows": n_prec,
            "slots": problem.n_requests}


def build(problem: OfflineProblem, relax: bool = False) -> IlpModel:
    """The ILP (or, with `relax`, its LP relaxation) of `problem`."""
    t0 = time.perf_counter()
    tree = problem.tree
    R = problem.n_requests
    cat = pulp.LpContinuous if relax else pulp.LpBinary
    flop_scale = problem.total_prefill_flops or 1.0
    byte_scale = float(problem.capacity_bytes)
    prob = pulp.LpProblem("offline_prefix_cache", pulp.LpMaximize)

    y = {o: pulp.LpVariable(f"y_{problem.opt_req[o]}_{problem.opt_key[o]}", 0, 1, cat)
         for o in range(problem.n_options)}
    prob += pulp.lpSum(problem.opt_saved_flops[o] / flop_scale * y[o] for o in y)

    # (C1) one resume point per request
    n_rows = 0
    for r in range(R):
        opts = problem.options(r)
        if len(opts) > 1:
            prob += pulp.lpSum(y[o] for o in opts) <= 1, f"C1_one_hit_r{r}"
            n_rows += 1

    # w[k,i] for every interval of every key, and the events of every held item
    w: dict[tuple[int, int], pulp.LpVariable] = {}
    starts: list[list[tuple[float, pulp.LpVariable]]] = [[] for _ in range(R + 1)]
    ends: list[list[tuple[float, pulp.LpVariable]]] = [[] for _ in range(R + 1)]
    for k in range(1, tree.n_keys):
        t = tree.touches(k)
        for i in range(len(t) - 1):
            var = pulp.LpVariable(f"w_{k}_{i}", 0, 1, cat)
            w[k, i] = var
            starts[t[i] + 1].append((problem.seg_kv_bytes[k] / byte_scale, var))
            ends[t[i + 1]].append((problem.seg_kv_bytes[k] / byte_scale, var))

    # (C2) a hit at or below k needs the KV of k's edge over k's interval ending at r
    state = problem.state_bytes / byte_scale
    for r in range(R):
        opts = list(problem.options(r))
        for j, o in enumerate(opts):
            k = int(problem.opt_key[o])
            i = int(np.searchsorted(tree.touches(k), r)) - 1
            prob += pulp.lpSum(y[q] for q in opts[j:]) <= w[k, i], f"C2_kv_below_r{r}_k{k}"
            n_rows += 1
            starts[int(problem.opt_prev[o]) + 1].append((state, y[o]))
            ends[r].append((state, y[o]))

    # (C3) KV is prefix-closed: the parent edge is held whenever the child edge is
    for k in range(1, tree.n_keys):
        parent = int(tree.parent[k])
        if parent == ROOT:
            continue
        t, tp = tree.touches(k), tree.touches(parent)
        for i in range(len(t) - 1):
            ja, jb = np.searchsorted(tp, t[i]), np.searchsorted(tp, t[i + 1])
            for j in range(int(ja), int(jb)):
                prob += w[k, i] <= w[parent, j], f"C3_prefix_closed_k{k}_{i}_p{j}"
                n_rows += 1

    # (C4) occupancy by events, (C5) as the variables' upper bound
    occ = [pulp.LpVariable(f"O_{t}", 0, 1.0) for t in range(R)]
    for t in range(R):
        prev = occ[t - 1] if t else 0
        added = pulp.lpSum(c * v for c, v in starts[t])
        removed = pulp.lpSum(c * v for c, v in ends[t - 1]) if t else 0
        prob += occ[t] == prev + added - removed, f"C4_occupancy_t{t}"
        n_rows += 1
    return IlpModel(problem=problem, prob=prob, relax=relax, y=y, w=w, n_rows=n_rows,
                    build_seconds=time.perf_counter() - t0)


def solve(model: IlpModel, time_limit: float | None = 300.0, threads: int = 1) -> float:
    """Solve with HiGHS; return the solve time. Raises SolverError unless proven optimal.

    pulp maps a HiGHS (or CBC) stop on a time limit to status "Optimal" with an
    integer-feasible solution, so `sol_status` is what tells a proof from an incumbent.
    """
    t0 = time.perf_counter()
    options: dict = {"threads": threads}
    if time_limit is not None:
        options["time_limit"] = float(time_limit)
    if not model.relax:
        options.update(mip_rel_gap=0.0, mip_abs_gap=0.0)
    solver = _QuietHiGHS(mip=not model.relax, options=options)
    try:
        model.prob.solve(solver)
    except pulp.PulpSolverError as e:
        raise SolverError(f"HiGHS failed on {model.problem.name}: {e}") from e
    status = pulp.LpStatus[model.prob.status]
    if model.prob.status != pulp.LpStatusOptimal or \
            model.prob.sol_status != pulp.LpSolutionOptimal:
        raise SolverError(
            f"{'LP' if model.relax else 'ILP'} on {model.problem.name}: not proven optimal "
            f"(status {status}, solution status {model.prob.sol_status}; a time limit of "
            f"{time_limit} s may have stopped it); expected a proven optimum")
    return time.perf_counter() - t0


def extract(model: IlpModel, solve_seconds: float) -> OfflineResult:
    """The ILP's schedule (exactly re-evaluated), or the LP's bound with its fractional y."""
    problem = model.problem
    values = np.array([model.y[o].value() or 0.0 for o in range(problem.n_options)])
    scale = problem.total_prefill_flops or 1.0
    objective = float(pulp.value(model.prob.objective) or 0.0) * scale
    seconds = model.build_seconds + solve_seconds
    details = (("variables", len(model.y) + len(model.w)), ("rows", model.n_rows))
    if model.relax:
        return OfflineResult(method="lp", saved_flops=objective,
                             flop_savings=problem.savings_fraction(objective),
                             is_upper_bound=True, seconds=seconds, status="optimal",
                             details=details + (("y", values),))
    hits = np.full(problem.n_requests, MISS, dtype=np.int64)
    chosen = np.flatnonzero(values > 0.5)
    hits[problem.opt_req[chosen]] = chosen
    result = schedule_result(problem, hits, "ilp", seconds, status="optimal", details=details)
    if result.peak_occupancy_bytes > problem.capacity_bytes * (1 + 1e-6):
        raise SolverError(f"ILP on {problem.name}: schedule needs "
                          f"{result.peak_occupancy_bytes:.6g} B > capacity "
                          f"{problem.capacity_bytes} B")
    if not np.isclose(result.saved_flops, objective, rtol=1e-6, atol=1e-9 * scale):
        raise SolverError(f"ILP on {problem.name}: objective {objective:.6g} disagrees with "
                          f"the re-evaluated schedule {result.saved_flops:.6g}")
    return result


class _SilentHighs(highspy.Highs):
    """A HiGHS model whose log is off from its first line.

    highspy 1.16's `Highs()` installs its callbacks in `__init__`, and installing them logs
    the "Running HiGHS …" banner to stdout while `output_flag` is still on: pulp's
    ``msg=False`` turns the option off only afterwards, too late for `--format json`."""

    def enableCallbacks(self):
        self.setOptionValue("output_flag", False)
        super().enableCallbacks()


class _QuietHiGHS(pulp.HiGHS):
    """pulp's HiGHS interface on a `_SilentHighs` model, configured by HiGHS option names
    (``time_limit``, ``mip_rel_gap``, …) with ``output_flag`` off."""

    def __init__(self, mip: bool, options: dict):
        super().__init__(mip=mip, msg=False)
        self.highs_options = {"output_flag": False, **options}

    def createAndConfigureSolver(self, lp):
        lp.solverModel = _SilentHighs()
        for key, value in self.highs_options.items():
            if lp.solverModel.setOptionValue(key, value) != highspy.HighsStatus.kOk:
                raise SolverError(f"HiGHS refused option {key}={value!r}")


def solve_ilp(problem: OfflineProblem, relax: bool = False,
              time_limit: float | None = 300.0) -> OfflineResult:
    """build → solve → extract."""
    model = build(problem, relax=relax)
    return extract(model, solve(model, time_limit=time_limit))

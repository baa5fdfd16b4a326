"""Fast upper bounds for traces too long for the LP: Lagrangian prices on memory.

Each option o = (r, k) is charged a *relaxed usage*: the checkpoint's S bytes over its
interval ``prev_k(r)+1 … r`` plus, for each key k' on the path above and at k, the KV of
edge π(k') → k' over k''s own interval ``prev_k'(r)+1 … r``. For one object (a checkpoint
position or an edge) the intervals of different requests are disjoint, so at every slot the
relaxed usages of any schedule's hits sum to at most what its cache holds (docs/planner.md,
proof of the bounds). With prices λ_t ≥ 0 on the slots,

    L(λ) = Σ_r max(0, max_o∈r  F_o − Σ_t λ_t·u_o(t)) + C·Σ_t λ_t  ≥  OPT

for every λ ≥ 0 (weak duality). Two ways of choosing λ:

- ``knapsack_bound``: one price for all slots (PFOO-L's aggregate capacity row, Berger et
  al. 2018, as a multiple-choice knapsack): minimised exactly over the breakpoints.
- ``lagrangian_bound``: per-slot prices refined by projected subgradient steps from the
  knapsack price; every iterate is a valid bound and the smallest is kept.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from marconi.planner.candidates import OfflineProblem
from marconi.planner.schedule import MISS, OfflineResult


@dataclasses.dataclass(frozen=True)
class _Usage:
    """Per-option pieces of the relaxed usage, precomputed once."""

    value: np.ndarray       # [O] F_o
    group: np.ndarray       # [O] request of o
    first: np.ndarray       # [O] first option of o's request
    r1: np.ndarray          # [O] r + 1 (exclusive end slot)
    p1: np.ndarray          # [O] prev + 1 (first slot)
    seg: np.ndarray         # [O] KV bytes of the edge above o's key


def _usage(problem: OfflineProblem) -> _Usage:
    first = np.repeat(problem.opt_ptr[:-1], np.diff(problem.opt_ptr))
    return _Usage(value=problem.opt_saved_flops, group=problem.opt_req, first=first,
                  r1=problem.opt_req + 1, p1=problem.opt_prev + 1,
                  seg=problem.seg_kv_bytes[problem.opt_key])


def _segmented_cumsum(x: np.ndarray, first: np.ndarray) -> np.ndarray:
    c = np.cumsum(x)
    return c - (c[first] - x[first])


def option_costs(problem: OfflineProblem, prices: np.ndarray, u: _Usage | None = None
                 ) -> np.ndarray:
    """[O] Σ_t λ_t·u_o(t) for slot prices `prices` [R]."""
    u = u or _usage(problem)
    cum = np.concatenate(([0.0], np.cumsum(prices)))
    span = cum[u.r1] - cum[u.p1]                        # Σ λ over o's own interval
    return problem.state_bytes * span + _segmented_cumsum(u.seg * span, u.first)


def lagrangian_value(problem: OfflineProblem, prices: np.ndarray, u: _Usage | None = None
                     ) -> tuple[float, np.ndarray]:
    """L(λ) and each request's best option under λ (MISS when no option pays)."""
    u = u or _usage(problem)
    R = problem.n_requests
    gain = u.value - option_costs(problem, prices, u)
    best = np.full(R, MISS, dtype=np.int64)
    if len(gain):
        order = np.lexsort((-gain, u.group))            # best option first per request
        lead = order[np.r_[True, u.group[order][1:] != u.group[order][:-1]]]
        pays = gain[lead] > 0
        best[u.group[lead[pays]]] = lead[pays]
        total = float(gain[lead[pays]].sum())
    else:
        total = 0.0
    return total + problem.capacity_bytes * float(prices.sum()), best


def relaxed_occupancy(problem: OfflineProblem, hits: np.ndarray, u: _Usage | None = None
                      ) -> np.ndarray:
    """[R] Σ of relaxed usages of `hits` at each slot (≤ the true occupancy)."""
    u = u or _usage(problem)
    R = problem.n_requests
    diff = np.zeros(R + 1)
    req = np.flatnonzero(hits != MISS)
    if len(req):
        o = hits[req]
        np.add.at(diff, u.p1[o], problem.state_bytes)
        np.add.at(diff, u.r1[o], -problem.state_bytes)
        n = o - u.first[o] + 1
        path = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n) + \
            np.repeat(u.first[o], n)
        np.add.at(diff, u.p1[path], u.seg[path])
        np.add.at(diff, u.r1[path], -u.seg[path])
    return np.cumsum(diff)[:R]


def knapsack_bound(problem: OfflineProblem) -> tuple[OfflineResult, float]:
    """min over one uniform price μ of L(μ·1): the fractional multiple-choice knapsack.

    Each request's options become points (a_o, F_o), a_o = relaxed byte-slots; the LP of
    the knapsack takes the upper convex hull per request and fills the budget C·R by
    decreasing slope (Sinha & Zoltners 1979). The critical slope is the optimal μ.
    """
    t0 = time.perf_counter()
    u = _usage(problem)
    a = option_costs(problem, np.ones(problem.n_requests), u)
    slopes: list[float] = []
    sizes: list[float] = []
    for r in range(problem.n_requests):
        opts = problem.options(r)
        if not len(opts):
            continue
        hull_a, hull_v = [0.0], [0.0]
        for o in sorted(opts, key=lambda o: (a[o], -u.value[o])):
            ao, vo = float(a[o]), float(u.value[o])
            if vo <= hull_v[-1]:
                continue                                # dominated: costs more, saves less
            while len(hull_a) >= 2 and (hull_v[-1] - hull_v[-2]) * (ao - hull_a[-1]) <= \
                    (vo - hull_v[-1]) * (hull_a[-1] - hull_a[-2]):
                hull_a.pop()
                hull_v.pop()
            hull_a.append(ao)
            hull_v.append(vo)
        for i in range(1, len(hull_a)):
            da = hull_a[i] - hull_a[i - 1]
            slopes.append(np.inf if da <= 0 else (hull_v[i] - hull_v[i - 1]) / da)
            sizes.append(da)
    budget = problem.capacity_bytes * problem.n_requests
    mu = 0.0
    if slopes:
        order = np.argsort(-np.asarray(slopes), kind="stable")
        filled = np.cumsum(np.asarray(sizes)[order])
        cut = int(np.searchsorted(filled, budget, side="right"))
        if cut < len(order):
            mu = float(np.asarray(slopes)[order[cut]])
    prices = np.full(problem.n_requests, mu)
    value, best = lagrangian_value(problem, prices, u)
    return OfflineResult(method="knapsack", saved_flops=value,
                         flop_savings=problem.savings_fraction(value), is_upper_bound=True,
                         seconds=time.perf_counter() - t0, status="bound",
                         details=(("price_per_byte_slot", mu),)), mu


def lagrangian_bound(problem: OfflineProblem, iterations: int = 200,
                     lower_bound: float = 0.0) -> tuple[OfflineResult, np.ndarray]:
    """Per-slot prices by projected subgradient (Polyak steps toward `lower_bound`).

    Returns the best (smallest) bound met and the best choices at its prices.
    """
    t0 = time.perf_counter()
    u = _usage(problem)
    knap, mu = knapsack_bound(problem)
    prices = np.full(problem.n_requests, mu)
    best_value, best_choice = lagrangian_value(problem, prices, u)
    best_prices = prices.copy()
    target = max(lower_bound, 0.0)
    theta = 1.0
    stall = 0
    for _ in range(iterations):
        value, choice = lagrangian_value(problem, prices, u)
        if value < best_value - 1e-12 * abs(best_value):
            best_value, best_choice, best_prices = value, choice, prices.copy()
            stall = 0
        else:
            stall += 1
            if stall >= 10:
                theta, stall = theta / 2, 0
                if theta < 1e-4:
                    break
        g = relaxed_occupancy(problem, choice, u) - problem.capacity_bytes
        norm = float(g @ g)
        if norm == 0.0:
            break
        step = theta * max(value - target, 1e-9 * value) / norm
        prices = np.maximum(0.0, prices + step * g)
    return OfflineResult(method="lagrangian", saved_flops=best_value,
                         flop_savings=problem.savings_fraction(best_value),
                         is_upper_bound=True, seconds=time.perf_counter() - t0, status="bound",
                         details=(("knapsack_bound", knap.saved_flops),)), best_choice

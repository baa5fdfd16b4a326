"""The result type shared by every offline solver and bound, and the exact schedule evaluator.

An offline *schedule* is one choice per request: the option (key) it resumes from, or a
miss. Given the hits, the cheapest cache that serves them holds, at slot t, the checkpoint
of every hit whose interval ``prev+1 … r`` contains t and the KV of that checkpoint's whole
path; KV shared by several paths is held once. `occupancy()` computes exactly that, so a
schedule is feasible iff ``occupancy(...).max() <= capacity``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from marconi.planner.candidates import OfflineProblem

MISS = -1


@dataclasses.dataclass(frozen=True)
class OfflineResult:
    """One answer: an upper bound (``is_upper_bound``) or a feasible schedule (``hits``).

    ``saved_flops`` is Σ_r cost.saved_flops(h_r, L_r − h_r) for a schedule, or the bound's
    value; ``flop_savings`` divides it by Σ_r cost.prefill_flops(L_r, 0).
    """

    method: str                     # ilp, lp, knapsack, lagrangian, brute-force, rounded
    saved_flops: float
    flop_savings: float
    is_upper_bound: bool
    seconds: float
    status: str = "optimal"
    hits: np.ndarray | None = None  # [R] global option index per request, MISS = -1
    peak_occupancy_bytes: float | None = None
    details: tuple[tuple[str, float], ...] = ()

    def to_dict(self) -> dict:
        out = {"method": self.method, "saved_flops": self.saved_flops,
               "flop_savings": self.flop_savings, "is_upper_bound": self.is_upper_bound,
               "seconds": self.seconds, "status": self.status}
        if self.peak_occupancy_bytes is not None:
            out["peak_occupancy_bytes"] = self.peak_occupancy_bytes
        out.update(dict(self.details))
        return out


def occupancy(problem: OfflineProblem, hits: np.ndarray) -> np.ndarray:
    """[R] bytes the cheapest cache serving `hits` holds at each slot (KV shared once)."""
    R = problem.n_requests
    hits = np.asarray(hits, dtype=np.int64)
    req = np.flatnonzero(hits != MISS)
    diff = np.zeros(R + 1)
    if len(req) == 0:
        return diff[:R]
    opt = hits[req]
    start = problem.opt_prev[opt] + 1
    end = req                                                   # inclusive slots
    np.add.at(diff, start, problem.state_bytes)
    np.add.at(diff, end + 1, -problem.state_bytes)
    # every key on the path above each hit, held over the hit's interval
    first = problem.opt_ptr[req]
    n = opt - first + 1
    owner = np.repeat(np.arange(len(req)), n)
    path_opt = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n) + first[owner]
    key = problem.opt_key[path_opt]
    s, e = start[owner], end[owner]
    # union of intervals per key: sort by (key, start), merge overlaps
    span = R + 2
    s2, e2 = key * span + s, key * span + e
    order = np.argsort(s2, kind="stable")
    s2, e2, key = s2[order], e2[order], key[order]
    reach = np.maximum.accumulate(e2)
    new = np.ones(len(s2), dtype=bool)
    new[1:] = s2[1:] > reach[:-1]
    seg_id = np.cumsum(new) - 1
    seg_start = s2[new]
    seg_end = np.zeros(int(seg_id[-1]) + 1, dtype=np.int64)
    np.maximum.at(seg_end, seg_id, e2)
    seg_key = key[new]
    size = problem.seg_kv_bytes[seg_key]
    np.add.at(diff, seg_start - seg_key * span, size)
    np.add.at(diff, seg_end - seg_key * span + 1, -size)
    return np.cumsum(diff)[:R]


def saved_flops(problem: OfflineProblem, hits: np.ndarray) -> float:
    hits = np.asarray(hits, dtype=np.int64)
    return float(problem.opt_saved_flops[hits[hits != MISS]].sum())


def schedule_result(problem: OfflineProblem, hits: np.ndarray, method: str, seconds: float,
                    status: str = "feasible", details=()) -> OfflineResult:
    """Evaluate `hits` exactly and wrap them as a (feasible) OfflineResult."""
    hits = np.asarray(hits, dtype=np.int64)
    saved = saved_flops(problem, hits)
    occ = occupancy(problem, hits)
    return OfflineResult(method=method, saved_flops=saved,
                         flop_savings=problem.savings_fraction(saved), is_upper_bound=False,
                         seconds=seconds, status=status, hits=hits,
                         peak_occupancy_bytes=float(occ.max()) if len(occ) else 0.0,
                         details=tuple(details))


def is_feasible(problem: OfflineProblem, hits: np.ndarray, rtol: float = 1e-9) -> bool:
    occ = occupancy(problem, hits)
    return bool(len(occ) == 0 or occ.max() <= problem.capacity_bytes * (1 + rtol))

"""Rounding: from proposed hits (an LP's or a relaxation's) to a feasible offline schedule.

A forward sweep over the slots holds exactly what the surviving proposals need: when a
proposal's interval opens, its checkpoint and every edge of its path not yet held are added
(edges are reference-counted, so shared KV is held once); when the cache is over capacity,
the open proposal of lowest priority is dropped and whatever only it needed is released.
Dropping never raises an earlier slot's occupancy, so the schedule of the survivors fits at
every slot; `schedule_result` re-checks that with the exact evaluator (FOO-U and
Checkmate's two-phase rounding are the models: keep what the relaxation trusts most).
"""

from __future__ import annotations

import heapq
import time

import numpy as np

from marconi.errors import SolverError
from marconi.planner.candidates import OfflineProblem
from marconi.planner.schedule import MISS, OfflineResult, schedule_result


def round_schedule(problem: OfflineProblem, proposed: np.ndarray, priority: np.ndarray,
                   method: str = "rounded") -> OfflineResult:
    """Keep as many of `proposed` [R] (option per request or MISS) as fit, by `priority` [O]."""
    t0 = time.perf_counter()
    R = problem.n_requests
    S = problem.state_bytes
    C = problem.capacity_bytes
    seg = problem.seg_kv_bytes
    opening: list[list[int]] = [[] for _ in range(R)]
    for r in np.flatnonzero(proposed != MISS):
        o = int(proposed[r])
        opening[int(problem.opt_prev[o]) + 1].append(o)
    refs = np.zeros(problem.tree.n_keys, dtype=np.int64)
    alive: set[int] = set()
    heap: list[tuple[float, int]] = []
    held = 0.0
    kept = np.full(R, MISS, dtype=np.int64)

    def path(o: int):
        return problem.opt_key[int(problem.opt_ptr[problem.opt_req[o]]):o + 1]

    def release(o: int) -> float:
        freed = S
        for k in path(o):
            refs[k] -= 1
            if refs[k] == 0:
                freed += seg[k]
        alive.discard(o)
        return freed

    for t in range(R):
        for o in opening[t]:
            held += S
            for k in path(o):
                if refs[k] == 0:
                    held += seg[k]
                refs[k] += 1
            alive.add(o)
            heapq.heappush(heap, (float(priority[o]), o))
        while held > C * (1 + 1e-12) and heap:
            _, o = heapq.heappop(heap)
            if o in alive:
                held -= release(o)
        if proposed[t] != MISS and int(proposed[t]) in alive:
            kept[t] = proposed[t]
            held -= release(int(proposed[t]))
    result = schedule_result(problem, kept, method, time.perf_counter() - t0)
    if result.peak_occupancy_bytes > C * (1 + 1e-9):
        raise SolverError(f"rounding on {problem.name}: schedule holds "
                          f"{result.peak_occupancy_bytes:.6g} B > capacity {C} B")
    return result

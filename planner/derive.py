"""From the offline optimum's schedule to starting rules: what reuse it relies on.

For every hit (r, k) of the rounded offline schedule we ask which online rule could have
put a checkpoint at k, and on which sighting of k: the first request q passing k (in
arrival order) for which k is

- its input end (block traces: its last full block): rule ``input_end``,
- its output end (known outputs only): rule ``output_end``,
- the point where q's input leaves every earlier sequence (a branch point seen by a
  ghost index on q's arrival): rule ``branch``;

if no request before r qualifies, only a stride (or a state at every block) could have
caught it: ``stride``. The value shares of these classes switch rules on; the shallowest
hits that matter give the minimum prefix; keys the optimum hits on most of their passes
become pinned prefixes; the states' share of the schedule's bytes suggests a pool split.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from marconi.passes.cost_model import CostModel
from marconi.planner.candidates import OfflineProblem
from marconi.runtime.plan.rules import (AdmissionRules, EvictionRules, MemoryRules,
                                   PinnedPrefix, Plan)
from marconi.planner.schedule import MISS, occupancy
from marconi.runtime.workload import Workload

RULES = ("input_end", "output_end", "branch", "stride")


@dataclasses.dataclass(frozen=True)
class OfflineInsights:
    """What the offline optimum's schedule says about a workload's reuse."""

    hits: int
    value_share: tuple[tuple[str, float], ...]       # per rule in RULES
    sighting_share: tuple[tuple[int, float], ...]    # value by the sighting a rule sees k
    min_prefix_tokens: int
    pinned: tuple[PinnedPrefix, ...]
    state_share: float                               # states / bytes, averaged over slots
    median_gap_ms: float                             # value-weighted hit–emitter gap
    typical_hit_tokens: int = 0                      # value-weighted median hit depth

    def share(self, rule: str) -> float:
        return dict(self.value_share).get(rule, 0.0)

    def to_dict(self) -> dict:
        return {"hits": self.hits, "value_share": dict(self.value_share),
                "sighting_share": {str(k): v for k, v in self.sighting_share},
                "min_prefix_tokens": self.min_prefix_tokens, "pinned": len(self.pinned),
                "state_share": self.state_share, "median_gap_ms": self.median_gap_ms,
                "typical_hit_tokens": self.typical_hit_tokens}


def analyze(problem: OfflineProblem, workload: Workload, hits: np.ndarray,
            max_pins: int = 8, pin_bytes_share: float = 0.1) -> OfflineInsights:
    """Classify the hits of an offline schedule (`hits`: option per request or MISS)."""
    tree = problem.tree
    reqs = workload.requests
    R = problem.n_requests
    n_in = np.fromiter((len(r.input_ids) for r in reqs), dtype=np.int64, count=R)
    end = np.array([len(r.input_ids) if r.block_size == 1 else r.input_tokens // r.block_size
                    for r in reqs], dtype=np.int64)
    out_end = np.array([len(r.input_ids) + len(r.output_ids) if r.output_ids else -1
                        for r in reqs], dtype=np.int64)
    seen = np.zeros(R, dtype=np.int64)                # LCP of each input with the past
    has = np.diff(problem.opt_ptr) > 0
    seen[has] = tree.depth[problem.opt_key[problem.opt_ptr[1:][has] - 1]]
    branch_at = np.where(seen < n_in, seen, -1)

    used = np.flatnonzero(hits != MISS)
    opt = hits[used]
    keys = problem.opt_key[opt]
    value = problem.opt_saved_flops[opt]
    total = float(value.sum()) or 1.0
    by_rule = dict.fromkeys(RULES, 0.0)
    by_sighting: dict[int, float] = {}
    first: dict[int, tuple[int, str]] = {}
    for r, k, v in zip(used, keys, value):
        k = int(k)
        if k not in first:
            first[k] = _first_rule(tree.touches(k), int(tree.depth[k]), end, out_end,
                                   branch_at)
        pos, rule = first[k]
        t = tree.touches(k)
        if pos < 0 or t[pos] >= r:
            rule, pos = "stride", -1
        by_rule[rule] += float(v)
        sighting = pos + 1 if pos >= 0 else 0
        by_sighting[sighting] = by_sighting.get(sighting, 0.0) + float(v)

    return OfflineInsights(
        hits=len(used),
        value_share=tuple((k, by_rule[k] / total) for k in RULES),
        sighting_share=tuple(sorted((k, v / total) for k, v in by_sighting.items())),
        min_prefix_tokens=_min_prefix(problem.opt_tokens[opt], value),
        pinned=_pins(problem, workload, hits, max_pins, pin_bytes_share),
        state_share=_state_share(problem, hits),
        median_gap_ms=_median_gap(problem, workload, used, opt, value),
        typical_hit_tokens=int(_weighted_median(problem.opt_tokens[opt], value)))


def initial_plan(insights: OfflineInsights, cost: CostModel, workload: Workload,
                 capacity_bytes: int, chunk_tokens: int | None) -> Plan:
    """Rules switched on by the value they carry in the offline schedule (≥ 0.5 %)."""
    on = 0.005
    admission = AdmissionRules(
        input_end=insights.share("input_end") >= on or insights.hits == 0,
        output_end=insights.share("output_end") >= on,
        branch_sighting=1 if insights.share("branch") >= on else 0,
        min_prefix_tokens=insights.min_prefix_tokens)
    h = max(insights.typical_hit_tokens, 1)
    ref = cost.saved_flops(h, 0) / (cost.state_bytes() + cost.kv_bytes_per_token * h)
    return Plan(model=cost.model, cost_fingerprint=cost.fingerprint(),
                block_tokens=workload.block_size, chunk_tokens=chunk_tokens,
                capacity_bytes=int(capacity_bytes), admission=admission,
                eviction=EvictionRules(efficiency_ref=ref if ref > 0 else 1.0),
                memory=MemoryRules(), pinned=insights.pinned)


# ---------------------------------------------------------------- private helpers

def _first_rule(touches: np.ndarray, depth: int, end: np.ndarray, out_end: np.ndarray,
                branch_at: np.ndarray) -> tuple[int, str]:
    """First passer of a key that a rule identifies it on: (position in touches, rule)."""
    masks = {"input_end": end[touches] == depth, "branch": branch_at[touches] == depth,
             "output_end": out_end[touches] == depth}
    best = (len(touches), "stride")
    for rule, mask in masks.items():
        idx = np.flatnonzero(mask)
        if len(idx) and idx[0] < best[0]:
            best = (int(idx[0]), rule)
    return best if best[0] < len(touches) else (-1, "stride")


def _min_prefix(tokens: np.ndarray, value: np.ndarray, drop: float = 0.005) -> int:
    """Largest depth such that hits shallower than it carry < `drop` of the value."""
    if len(tokens) == 0:
        return 0
    order = np.argsort(tokens, kind="stable")
    share = np.cumsum(value[order]) / max(value.sum(), 1e-300)
    below = np.flatnonzero(share < drop)
    return int(tokens[order][below[-1]]) if len(below) else 0


def _pins(problem: OfflineProblem, workload: Workload, hits: np.ndarray, max_pins: int,
          bytes_share: float) -> tuple[PinnedPrefix, ...]:
    """Keys the optimum resumes from on at least half of their later passes, passed by at
    least 2 % of the requests (and 10), cheapest first within `bytes_share` of capacity."""
    tree = problem.tree
    R = problem.n_requests
    used = hits[hits != MISS]
    count = np.bincount(problem.opt_key[used], minlength=tree.n_keys)
    passes = np.diff(tree.touch_ptr)
    hot = np.flatnonzero((passes >= max(10, 0.02 * R)) & (count >= 0.5 * (passes - 1)))
    hot = hot[hot != 0]
    budget = bytes_share * problem.capacity_bytes
    pins: list[PinnedPrefix] = []
    spent = 0.0
    for k in sorted(hot, key=lambda k: -count[k]):
        path_kv = 0.0
        node = int(k)
        while node > 0:
            path_kv += problem.seg_kv_bytes[node]
            node = int(tree.parent[node])
        size = problem.state_bytes + path_kv
        if spent + size > budget or len(pins) >= max_pins:
            continue
        r = int(tree.touches(int(k))[0])
        pins.append(PinnedPrefix.of(workload.requests[r].input_ids[:int(tree.depth[k])]))
        spent += size
    return tuple(pins)


def _state_share(problem: OfflineProblem, hits: np.ndarray) -> float:
    occ = occupancy(problem, hits)
    R = problem.n_requests
    diff = np.zeros(R + 1)
    req = np.flatnonzero(hits != MISS)
    np.add.at(diff, problem.opt_prev[hits[req]] + 1, problem.state_bytes)
    np.add.at(diff, req + 1, -problem.state_bytes)
    states = np.cumsum(diff)[:R]
    busy = occ > 0
    return float(np.mean(states[busy] / occ[busy])) if busy.any() else 0.0


def _weighted_median(x: np.ndarray, w: np.ndarray) -> float:
    if len(x) == 0:
        return 0.0
    order = np.argsort(x, kind="stable")
    mid = np.searchsorted(np.cumsum(w[order]), 0.5 * w.sum())
    return float(x[order][min(mid, len(x) - 1)])


def _median_gap(problem: OfflineProblem, workload: Workload, used: np.ndarray,
                opt: np.ndarray, value: np.ndarray) -> float:
    """Value-weighted median of the arrival gap between a hit and its emitter (ms)."""
    if len(used) == 0:
        return 1000.0
    arrival = np.fromiter((r.arrival_ms for r in workload.requests), dtype=np.float64,
                          count=problem.n_requests)
    gaps = arrival[used] - arrival[problem.opt_prev[opt]]
    return max(_weighted_median(gaps, value), 1.0)

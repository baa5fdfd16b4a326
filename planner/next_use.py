"""Next use of cached entries: the truth, read off the workload, and a predictor fitted to it.

An *entry* is a position of the workload's prefix tree (`planner.prefix_tree`); a request
*uses* it when its input covers that position (it could resume from a state there). By
the tree's key property every position inside an edge is covered by the same requests as
the edge's lower key, namely those that pass the key with an input at least as deep.

- `TrueNextUse`: the clairvoyant oracle, for a node of a running cache, the arrival of the
  first later request that uses it (∞ if none): the "clairvoyant eviction" reference.
- `label_passes`: every pass of every key (a request using it) with its online features
  (`runtime.plan.next_use.bin_features`) and the true gap to the next pass (∞ if none).
- `fit_predictor`: backoff tables of the mean capped log gap (`NextUsePredictor`).
- `fit_reuse_odds`: backoff tables of the gap's survival counts (`ReuseOdds`), which say
  how likely an entry that has already waited is to be used soon.
- `spearman`: rank correlation (average ranks for ties) of predicted vs true gaps.
- `with_next_use(base, make)`: a policy class `base` whose eviction is `NextUseIndex`
  over the estimate ``make(policy)``; the policy counts the requests it has seen so the
  oracle knows "now".
"""

from __future__ import annotations

import dataclasses
import math
from bisect import bisect_right

import numpy as np

from marconi.planner.prefix_tree import PrefixTree, build_prefix_tree
from marconi.runtime.cache.next_use_index import NextUseIndex, PredictedNextUse
from marconi.runtime.cache.tree import Node
from marconi.runtime.plan.next_use import FEATURES, NextUsePredictor, bin_features
from marconi.runtime.plan.reuse_odds import ReuseOdds
from marconi.runtime.workload import Workload


class TrueNextUse:
    """Arrival (ms) of the first request after `request` (the one being served, set by the
    policy) whose input covers a node's depth on its path; ∞ when there is none. A node is
    placed in the workload's tree once, on the path of the request it was first filed
    during (every node is created by an insert or split on that request's path)."""

    def __init__(self, workload: Workload, tree: PrefixTree | None = None):
        self.tree = tree if tree is not None else build_prefix_tree(workload)
        self.arrival = np.array([r.arrival_ms for r in workload.requests], dtype=np.float64)
        self.n_input = np.array([len(r.input_ids) for r in workload.requests], dtype=np.int64)
        self.request = 0
        self._children = None
        self._key: dict[int, int] = {}             # node uid → key
        self._uses: dict[int, list[int]] = {}      # key → requests using it, in order

    def __call__(self, node: Node) -> float:
        key = self._key.get(node.uid)
        if key is None:
            key = self._key[node.uid] = self._locate(node.depth, self.request)
        if key < 0:
            return math.inf
        uses = self.uses(key)
        j = bisect_right(uses, self.request)
        return float(self.arrival[uses[j]]) if j < len(uses) else math.inf

    def forget(self, node: Node) -> None:
        self._key.pop(node.uid, None)

    def uses(self, key: int) -> list[int]:
        """Requests whose input covers `key`'s edge, in arrival order."""
        out = self._uses.get(key)
        if out is None:
            t = self.tree.touches(key)
            out = self._uses[key] = t[self.n_input[t] >= self.tree.depth[key]].tolist()
        return out

    def _locate(self, depth: int, r: int) -> int:
        """The shallowest key at or below `depth` on request r's sequence (-1: past it)."""
        tree = self.tree
        path = tree.input_path(r)
        j = int(np.searchsorted(tree.depth[path], depth, side="left"))
        if j < len(path):
            return int(path[j])
        if self._children is None:
            self._children = tree.children()
        key = int(path[-1]) if len(path) else 0
        while tree.depth[key] < depth:           # down the request's output
            for c in self._children[key]:
                t = tree.touches(c)
                i = int(np.searchsorted(t, r))
                if i < len(t) and t[i] == r:
                    key = c
                    break
            else:
                return -1
        return key


@dataclasses.dataclass(frozen=True)
class Passes:
    """Every pass of every key of a workload: [P] arrays."""

    request: np.ndarray     # int64: the request using the key
    bins: np.ndarray        # [P, len(FEATURES)] int64, `bin_features`
    gap_ms: np.ndarray      # float64: true time to the key's next use (∞: none)


def label_passes(workload: Workload, tree: PrefixTree | None = None) -> Passes:
    oracle = TrueNextUse(workload, tree)
    t, reqs = oracle.arrival, workload.requests
    req_l, bins_l, gap_l = [], [], []
    for key in range(1, oracle.tree.n_keys):
        uses = oracle.uses(key)
        if not uses:
            continue
        depth = int(oracle.tree.depth[key])
        times = t[uses]
        for p, r in enumerate(uses):
            gap = None if p == 0 else times[p] - times[p - 1]
            req_l.append(r)
            bins_l.append(bin_features(p, gap, reqs[r].prefix_tokens(depth),
                                       times[p] - times[0]))
            gap_l.append(times[p + 1] - times[p] if p + 1 < len(uses) else math.inf)
    return Passes(request=np.array(req_l, dtype=np.int64),
                  bins=np.array(bins_l, dtype=np.int64).reshape(-1, len(FEATURES)),
                  gap_ms=np.array(gap_l, dtype=np.float64))


def fit_predictor(passes: Passes, horizon_ms: float, min_count: int = 20) -> NextUsePredictor:
    """Backoff tables (`NextUsePredictor`) of log(1 + min(gap, horizon)) means."""
    y = np.log1p(np.minimum(passes.gap_ms, horizon_ms))
    levels = []
    for k in range(len(FEATURES)):
        keys, inv, counts = np.unique(passes.bins[:, :k + 1], axis=0, return_inverse=True,
                                      return_counts=True)
        sums = np.bincount(inv.reshape(-1), weights=y, minlength=len(keys))
        levels.append({tuple(int(x) for x in key): float(s / c)
                       for key, s, c in zip(keys, sums, counts) if c >= min_count})
    prior = float(y.mean()) if len(y) else math.log1p(horizon_ms)
    return NextUsePredictor(levels=tuple(levels), prior=prior, horizon_ms=float(horizon_ms))


def _span_ms(workload: Workload) -> float:
    """The time from the first arrival to the last (at least 1 ms): the horizon of a fit."""
    t = [r.arrival_ms for r in workload.requests]
    return max(t[-1] - t[0], 1.0)


def fit_on(workload: Workload, min_count: int = 20) -> NextUsePredictor:
    """A predictor fitted on every pass of `workload` (horizon: its time span)."""
    return fit_predictor(label_passes(workload), _span_ms(workload), min_count)


def odds_edges(horizon_ms: float) -> tuple[float, ...]:
    """0, then 1 s, 2 s, 4 s, … up to the first edge at or past `horizon_ms`."""
    edges, t = [0.0], 1000.0
    while True:
        edges.append(t)
        if t >= horizon_ms:
            return tuple(edges)
        t *= 2.0


def fit_reuse_odds(passes: Passes, horizon_ms: float, candidates: int = 1,
                   min_count: int = 10) -> ReuseOdds:
    """Survival counts of the gap to the next pass per feature bins (`ReuseOdds`): for
    each level k, every key of the first k+1 bins with at least `min_count` passes."""
    edges = odds_edges(horizon_ms)
    gaps = passes.gap_ms
    # [P, E] bool: did the pass wait longer than each edge (∞: never used again)
    waited = gaps[:, None] > np.asarray(edges)[None, :]
    levels = []
    for k in range(len(FEATURES) if len(gaps) else 0):
        keys, inv, counts = np.unique(passes.bins[:, :k + 1], axis=0, return_inverse=True,
                                      return_counts=True)
        inv = inv.reshape(-1)
        table = np.stack([np.bincount(inv, weights=waited[:, j], minlength=len(keys))
                          for j in range(len(edges))], axis=1)
        levels.append({tuple(int(x) for x in key): tuple(int(round(v)) for v in row)
                       for key, row, c in zip(keys, table, counts) if c >= min_count})
    prior = tuple(int(v) for v in waited.sum(axis=0))
    return ReuseOdds(edges_ms=edges, prior=prior, levels=tuple(levels),
                     candidates=candidates, min_count=min_count)


def reuse_odds_on(workload: Workload, candidates: int = 1) -> ReuseOdds:
    """`fit_reuse_odds` on every pass of `workload` (horizon: its time span)."""
    return fit_reuse_odds(label_passes(workload), _span_ms(workload), candidates)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation, ties at their average rank (nan if either is constant)."""
    ra, rb = _ranks(np.asarray(a, dtype=np.float64)), _ranks(np.asarray(b, dtype=np.float64))
    if len(ra) < 2 or ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def predictor_quality(predictor: NextUsePredictor, workload: Workload) -> float:
    """Spearman of predicted vs true gaps over every pass of `workload` (gaps capped at
    its span, so every never-used-again entry ties at the top)."""
    passes = label_passes(workload)
    t = [r.arrival_ms for r in workload.requests]
    cap = max(t[-1] - t[0], 1.0)
    pred = np.array([predictor.log_gap(tuple(row)) for row in passes.bins.tolist()])
    return spearman(pred, np.minimum(passes.gap_ms, cap))


def with_next_use(base: type, make, name: str, reference: bool = False) -> type:
    """`base` (a policy class) evicting by `NextUseIndex` over ``make(policy)``
    (``reference``: the index's slow scan)."""

    class NextUsePolicy(base):
        def __init__(self, cost, config, workload):
            super().__init__(cost, config, workload)
            self.next_use = make(self)
            self.served = 0

        def make_index(self):
            return NextUseIndex(self.next_use, reference=reference)

        def after_request(self, replay, i):
            super().after_request(replay, i)
            self.served = i + 1
            if hasattr(self.next_use, "request"):
                self.next_use.request = i + 1

    NextUsePolicy.__name__ = NextUsePolicy.__qualname__ = name
    return NextUsePolicy


def clairvoyant(base: type, reference: bool = False) -> type:
    """`base` evicting by the true next use (the workload the replay runs on)."""
    return with_next_use(base, lambda p: TrueNextUse(p.workload), f"{base.__name__}True",
                         reference)


def predicted(base: type, predictor: NextUsePredictor, reference: bool = False) -> type:
    """`base` evicting by the next use `predictor` predicts."""
    return with_next_use(base, lambda p: PredictedNextUse(predictor),
                         f"{base.__name__}Predicted", reference)


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    xs = x[order]
    starts = np.r_[0, np.flatnonzero(xs[1:] != xs[:-1]) + 1]
    ends = np.r_[starts[1:], len(xs)]
    avg = (starts + ends - 1) / 2.0
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks

"""Marconi (arXiv 2411.19379, MLSys'25): judicious admission + FLOP-aware eviction.

Faithful to the paper (background/marconi.md §2-§3) without the artifact's defects (§9):
the MLP term is the cost model's exact marginal (bug 1), an eviction frees exactly the
victim's bytes and the budget is never exceeded (bug 2; `PrefixCache` refuses what cannot
fit), partial-edge matches never hit (bug 3), and ties break by last access then node age,
never by completion order (bug 4's non-determinism).
"""

from __future__ import annotations

import time

from marconi.runtime.cache.eviction import FlopAware
from marconi.runtime.cache.policies import register
from marconi.runtime.cache.policies.base import Policy, judicious_admission
from marconi.runtime.cache.tree import Refresh


def flop_efficiency(cost):
    """Eq. 1 for a node: FLOPs its checkpoint saves beyond its parent's, per byte of the
    states it keeps (its checkpoint + the KV of its whole path, as the paper's Fig. 5 and
    the artifact's denominator). With P = parent's tokens, T = node's tokens, c = T − P:
    saved_flops(T, 0) − saved_flops(P, c) = F(c, P) − F(0, T), F = cost.prefill_flops,
    i.e. the FLOPs of computing the edge's tokens on top of the parent's prefix; written
    out from F's coefficients (the same polynomial, evaluated without call overhead).
    """
    kpt, sb = cost.kv_bytes_per_token, cost.state_bytes()
    f = cost.flops
    c_n, c_nn, c_np, c_p, c_pp = f.c_n, f.c_nn, f.c_np, f.c_p, f.c_pp

    def efficiency(node) -> float:
        T, P = node.tokens, node.parent.tokens
        c = T - P
        saved = c * c_n + c * c * c_nn + c * P * c_np + (P - T) * c_p + (P * P - T * T) * c_pp
        return saved / (sb + kpt * T)
    return efficiency


@register("marconi")
class Marconi(Policy):
    """The paper's policy (artifact V2), α tuned online.

    Admission: `judicious_admission` (branch point by speculative insertion + last decoded
    token). Eviction: `FlopAware` over checkpointed nodes with ≤ 1 child, S = norm(recency)
    + α·norm(flop_efficiency); a leaf victim is removed, a single-child victim loses its
    state and merges into its child (a state-free model has no states: candidates are the
    leaves, and a hit is any cached KV). Recency: a hit refreshes only the consumed node;
    new and split nodes start at the current time.

    α tuning (paper §4.2): α = 0 (LRU) until the first eviction, during request f
    (N0 = f + 1 requests seen). After W = bootstrap_multiplier·N0 requests, the bootstrap
    window [f, W) is replayed from the tree as it stood before request f, once per α in
    the grid; the α with the most hit tokens in the window is adopted for the rest of the
    trace (ties: the smaller α). It is tuned once; if the trace ends before W, α stays 0.
    The artifact instead maximises FLOPs saved over the last 500 requests, replays from an
    empty tree and breaks ties by completion order (§3, §9 bug 4).
    """

    refresh = Refresh.HIT

    def __init__(self, cost, config, workload, alpha: float = 0.0, tune: bool = True):
        super().__init__(cost, config, workload)
        self.alpha = alpha
        self.tune = tune
        self.index: FlopAware | None = None
        self.tuned_at: int | None = None
        self.first_eviction: int | None = None
        self.window_scores: dict[float, float] = {}
        self.tuning_seconds = 0.0

    def make_index(self):
        self.index = FlopAware(self.alpha, flop_efficiency(self.cost), self.config.marconi.recency)
        return self.index

    def admit(self, seq, m):
        return judicious_admission(seq, m, self.chunk)

    def after_request(self, replay, i):
        if not self.tune or self.tuned_at is not None or replay.first_eviction is None:
            return
        f = replay.first_eviction
        end = self.config.marconi.bootstrap_multiplier * (f + 1)
        if i + 1 < end:
            return
        t0 = time.perf_counter()
        self.first_eviction, self.tuned_at = f, i + 1
        self.alpha, self.window_scores = self._tune(replay, f, i + 1)
        self.index.alpha = self.alpha
        self.tuning_seconds = time.perf_counter() - t0

    def _tune(self, replay, f: int, end: int) -> tuple[float, dict[float, float]]:
        """The bootstrap window [f, end) replayed from the tree before request f under
        every α (by `replay.what_if`, in the replay's executor), scored by hit tokens."""
        window_tokens = sum(r.input_tokens for r in self.workload.requests[f:end])
        scores = replay.what_if(self._fixed(0.0), f, self._fixed, self.config.marconi.alpha_grid, end,
                                lambda run: sum(run.hits[f:end]) / window_tokens)
        best = max(scores, key=lambda a: (scores[a], -a))
        return best, scores

    def _fixed(self, alpha: float) -> Marconi:
        return Marconi(self.cost, self.config, self.workload, alpha=alpha, tune=False)

    def describe(self):
        out = {"alpha": self.alpha, "recency": self.config.marconi.recency.value}
        if self.tune:
            out.update(first_eviction_request=self.first_eviction, tuned_at_request=self.tuned_at,
                       bootstrap_multiplier=self.config.marconi.bootstrap_multiplier,
                       tuning_seconds=round(self.tuning_seconds, 3),
                       window_token_hit_rate={str(a): round(s, 6)
                                              for a, s in self.window_scores.items()})
        return out


@register("marconi-static")
class MarconiStatic(Marconi):
    """Oracle row (artifact V3): Marconi with the best fixed α for the whole trace.

    Declares ``oracle_alphas``: the simulator replays every α of the grid over the whole
    trace (sharing the history before the first eviction, where α does not matter) and
    keeps the one with the highest token hit rate (ties: the smaller α;
    `runtime.sim.simulator.replay_policy`). Not an online policy: it sees the future to
    choose α. One instance is Marconi at a fixed `alpha`, never tuned.
    """

    oracle_alphas = True

    def __init__(self, cost, config, workload, alpha: float = 0.0):
        super().__init__(cost, config, workload, alpha=alpha, tune=False)

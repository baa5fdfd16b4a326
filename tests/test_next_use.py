"""Next-use eviction (issue #14): the clairvoyant oracle against a brute-force scan, the
heap index against its reference scan, the predictor's fit, file form and rank metric."""

from __future__ import annotations

import dataclasses
import math
import types

import numpy as np
import pytest

from helpers import random_workload, token_workload, toy_cost
from marconi.errors import UserError
from marconi.planner import next_use as nu
from marconi.runtime.cache.policies import get_policy
from marconi.runtime.capacity import Capacity
from marconi.runtime.config import CacheConfig, VllmParams
from marconi.runtime.cache.next_use_index import NextUseIndex, PredictedNextUse
from marconi.runtime.cache.policies.planned import Planned
from marconi.runtime.plan.next_use import NextUsePredictor, bin_features
from marconi.runtime.plan.plan_file import load_plan, plan_to_dict, write_plan
from marconi.runtime.plan.rules import default_plan
from marconi.runtime.sim.simulator import replay_policy


def _brute_next_use(workload, r: int, depth: int) -> float:
    """First request after r whose input starts with request r's first `depth` ids."""
    reqs = workload.requests
    seq = reqs[r].input_ids + (reqs[r].output_ids or ())
    for j in range(r + 1, len(reqs)):
        if len(reqs[j].input_ids) >= depth and reqs[j].input_ids[:depth] == seq[:depth]:
            return reqs[j].arrival_ms
    return math.inf


@pytest.mark.parametrize("seed", range(8), ids=lambda s: f"seed{s}")
def test_true_next_use_matches_brute_force(seed):
    w = random_workload(seed, n=12, vocab=2, max_len=6)
    oracle = nu.TrueNextUse(w)
    uid = 0
    for r, req in enumerate(w.requests):
        oracle.request = r
        seq = req.input_ids + (req.output_ids or ())
        for d in range(1, len(seq) + 1):
            uid += 1
            node = types.SimpleNamespace(uid=uid, depth=d)
            assert oracle(node) == _brute_next_use(w, r, d), (r, d)


def _classes(reference):
    align = get_policy("vllm-align")
    predictor = nu.fit_on(random_workload(99, n=40, vocab=3, max_len=8), min_count=2)
    return (nu.clairvoyant(align, reference=reference),
            nu.predicted(align, predictor, reference=reference))


@pytest.mark.parametrize("seed", range(6), ids=lambda s: f"seed{s}")
def test_heap_index_matches_reference_scan(seed):
    w = random_workload(seed, n=40, vocab=3, max_len=8)
    cost = toy_cost(kv_per_token=1, state=4)
    config = CacheConfig(capacity=Capacity.shared(30), vllm=VllmParams(block_tokens=1))
    for fast, slow in zip(_classes(False), _classes(True)):
        a = replay_policy(fast, w, cost, config)
        b = replay_policy(slow, w, cost, config)
        assert a.evictions > 0
        assert (a.hit_tokens, a.evictions, a.checkpoints_evicted) == \
            (b.hit_tokens, b.evictions, b.checkpoints_evicted)


def test_clairvoyant_keeps_the_entry_used_next():
    # room for two prefixes (4 KV + 1 state bytes each): A, B, C, A, B. To fit C, LRU
    # evicts A (then A evicts B: no hit); Belady evicts B (next used later than A): A hits
    A, B, C = [1] * 4, [2] * 4, [3] * 4
    w = token_workload([A, B, C, A, B], times=[0, 1, 2, 3, 4])
    cost = toy_cost(kv_per_token=1, state=1)
    config = CacheConfig(capacity=Capacity.shared(11), vllm=VllmParams(block_tokens=1))
    lru = replay_policy(get_policy("vllm-align"), w, cost, config)
    true = replay_policy(nu.clairvoyant(get_policy("vllm-align")), w, cost, config)
    assert lru.hit_tokens == 0
    assert true.hit_tokens == 4


def test_fit_predictor_backs_off_to_coarser_tables():
    bins = np.array([[0, -1, 0, 0]] * 3 + [[1, 2, 0, 0]] * 2 + [[1, 3, 0, 0]])
    gaps = np.array([10.0, 100.0, math.inf, 5.0, 5.0, 1.0])
    p = nu.fit_predictor(nu.Passes(np.zeros(6, dtype=np.int64), bins, gaps),
                         horizon_ms=1000.0, min_count=2)
    y = np.log1p(np.minimum(gaps, 1000.0))
    assert p.log_gap((0, -1, 0, 0)) == pytest.approx(y[:3].mean())
    assert p.log_gap((1, 2, 0, 0)) == pytest.approx(y[3:5].mean())
    assert p.log_gap((1, 3, 0, 0)) == pytest.approx(y[3:].mean())      # passes=1 level
    assert p.log_gap((4, 0, 0, 0)) == pytest.approx(y.mean())          # the prior


def test_predictor_round_trips_and_refuses_bad_files():
    p = nu.fit_on(random_workload(3, n=40, vocab=3, max_len=8), min_count=2)
    q = NextUsePredictor.from_dict(p.to_dict())
    assert q == p
    for row in ([0, 1, 2, 3], [0, -1, 5, 9], [4, 30, 30, 30]):
        assert q.gap_ms(tuple(row)) == p.gap_ms(tuple(row))
    with pytest.raises(UserError, match="features"):
        NextUsePredictor.from_dict({**p.to_dict(), "features": ["x"]})
    with pytest.raises(UserError, match="horizon_ms"):
        d = p.to_dict()
        del d["horizon_ms"]
        NextUsePredictor.from_dict(d)


def test_bin_features():
    assert bin_features(0, None, 0, 0.0) == (0, -1, 0, 0)
    assert bin_features(9, 3000.0, 1536, 7000.0) == (4, 2, 2, 3)


@pytest.mark.parametrize("a,b,rho", [
    pytest.param([1, 2, 3, 4], [1, 3, 2, 4], 0.8, id="one-swap"),
    pytest.param([1, 2, 3, 4], [4, 3, 2, 1], -1.0, id="reversed"),
    pytest.param([1, 1, 2, 2], [1, 2, 3, 4], 2 / math.sqrt(5), id="ties"),
])
def test_spearman(a, b, rho):
    assert nu.spearman(np.array(a), np.array(b)) == pytest.approx(rho)


def _plan(cost, workload, predictor):
    base = default_plan(cost.model, cost.fingerprint(), workload.block_size, None, 30)
    return dataclasses.replace(base, next_use=predictor)


def test_plan_file_carries_the_predictor(tmp_path):
    cost = toy_cost(kv_per_token=1, state=4)
    w = random_workload(3, n=40, vocab=3, max_len=8)
    plan = _plan(cost, w, nu.fit_on(w, min_count=2))
    write_plan(plan, tmp_path / "runtime.yaml")
    assert load_plan(tmp_path / "runtime.yaml", cost) == plan
    old = dataclasses.replace(plan, next_use=None)          # files without one still load
    assert "next_use" not in plan_to_dict(old)
    write_plan(old, tmp_path / "old.yaml")
    assert load_plan(tmp_path / "old.yaml", cost).next_use is None


@pytest.mark.parametrize("seed", range(4), ids=lambda s: f"seed{s}")
def test_planned_with_a_predictor_evicts_by_it(seed):
    # `planned` with a predictor and default admission evicts exactly as a Planned subclass
    # whose index is NextUseIndex over the same predictor (built here by hand)
    w = random_workload(seed, n=40, vocab=3, max_len=8)
    cost = toy_cost(kv_per_token=1, state=4)
    config = CacheConfig(capacity=Capacity.shared(30))
    predictor = nu.fit_on(random_workload(99, n=40, vocab=3, max_len=8), min_count=2)
    plan = _plan(cost, w, predictor)
    bare = dataclasses.replace(plan, next_use=None)

    class ByHand(Planned.with_plan(bare)):
        def make_index(self):
            self.index = NextUseIndex(PredictedNextUse(predictor), reference=True)
            return self.index

    a = replay_policy(Planned.with_plan(plan), w, cost, config)
    b = replay_policy(ByHand, w, cost, config)
    assert a.evictions > 0
    assert (a.hit_tokens, a.evictions) == (b.hit_tokens, b.evictions)

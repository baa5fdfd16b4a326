"""Reuse odds (`runtime.plan.reuse_odds`): the fit against direct counts, the odds by hand,
the file form and its errors, and `planned`'s refined order: the heap's K first against a
scan of every candidate, K = 1 as the plain order, and the tuner's choice shipped."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from helpers import random_workload, toy_cost
from marconi.errors import PlanError, UserError
from marconi.planner import next_use as nu
from marconi.runtime.cache.policies.planned import ClassOffsetLRU, Planned
from marconi.runtime.capacity import Capacity
from marconi.runtime.config import CacheConfig
from marconi.runtime.plan.plan_file import load_plan, plan_to_dict, write_plan
from marconi.runtime.plan.reuse_odds import ReuseOdds
from marconi.runtime.plan.rules import default_plan
from marconi.runtime.sim.generators import ChatSpec, generate
from marconi.runtime.sim.replay import Replay
from marconi.runtime.sim.simulator import replay_policy


def test_the_fit_counts_every_pass_that_waited_past_each_edge():
    w = random_workload(5, n=60, vocab=3, max_len=8)
    passes = nu.label_passes(w)
    odds = nu.fit_reuse_odds(passes, horizon_ms=5000.0, min_count=3)
    assert odds.edges_ms == (0.0, 1000.0, 2000.0, 4000.0, 8000.0)
    rows = [tuple(b) for b in passes.bins.tolist()]
    gaps = passes.gap_ms.tolist()
    for k, level in enumerate(odds.levels):
        keys = {r[:k + 1] for r in rows}
        for key in keys:
            mine = [g for r, g in zip(rows, gaps) if r[:k + 1] == key]
            counts = tuple(sum(g > e for g in mine) for e in odds.edges_ms)
            if len(mine) >= 3:
                assert level[key] == counts, (k, key)
            else:
                assert key not in level
    assert odds.prior == tuple(sum(g > e for g in gaps) for e in odds.edges_ms)


def _table():
    # 10 passes with these bins: 2 used within 1 s, 4 more by 2 s, 4 never again
    return ReuseOdds(edges_ms=(0.0, 1000.0, 2000.0), prior=(20, 20, 20),
                     levels=({(0,): (10, 8, 4)}, {}, {}, {}), min_count=4)


def test_odds_by_hand():
    t = _table()
    assert t.odds((0, -1, 0, 0), 0.0, 1000.0) == pytest.approx(2 / 10)
    assert t.odds((0, -1, 0, 0), 1000.0, 1000.0) == pytest.approx(4 / 8)
    # half way between edges: N(> 500) = 9, N(> 1500) = 6
    assert t.odds((0, -1, 0, 0), 500.0, 1000.0) == pytest.approx(3 / 9)
    # past the last edge nothing more is used: those left are never used again
    assert t.odds((0, -1, 0, 0), 2000.0, 5000.0) == 0.0
    # other bins fall back to the prior (no reuse at all in it); so do these bins once
    # fewer than `min_count` of them are left (N(> 1900) = 4.4 < 5)
    assert t.odds((1, -1, 0, 0), 0.0, 1000.0) == 0.0
    low = dataclasses.replace(t, min_count=5)
    assert low.row((0, -1, 0, 0), 1900.0) == (20, 20, 20)
    assert low.row((0, -1, 0, 0), 1000.0) == (10, 8, 4)


def test_round_trip_and_bad_tables():
    w = random_workload(3, n=40, vocab=3, max_len=8)
    t = dataclasses.replace(nu.fit_reuse_odds(nu.label_passes(w), 3000.0, min_count=2),
                            candidates=8)
    assert ReuseOdds.from_dict(t.to_dict()) == t
    d = t.to_dict()
    for change, field in ((dict(features=["x"]), "reuse_odds.features"),
                          (dict(edges_ms=[1.0, 2.0]), "reuse_odds.edges_ms"),
                          (dict(edges_ms=[0.0, 5.0, 5.0]), "reuse_odds.edges_ms"),
                          (dict(prior=[1, 2, 3]), "reuse_odds.prior"),
                          (dict(candidates=0), "reuse_odds.candidates"),
                          (dict(candidates="lots"), "reuse_odds.candidates"),
                          (dict(levels=[[[0, 1]]]), "reuse_odds.levels[0][0]"),
                          (dict(extra=1), "reuse_odds.extra")):
        with pytest.raises(UserError, match=field.replace("[", r"\[").replace("]", r"\]")):
            ReuseOdds.from_dict({**d, **change})
    rising = dict(d, prior=list(range(len(t.edges_ms))))
    with pytest.raises(UserError, match="non-increasing"):
        ReuseOdds.from_dict(rising)
    n = len(t.edges_ms)
    for change, field in ((dict(prior=[True] + [0] * (n - 1)), r"reuse_odds.prior\[0\]"),
                          (dict(prior=[5.9] + [0] * (n - 1)), r"reuse_odds.prior\[0\]"),
                          (dict(prior=["5"] + [0] * (n - 1)), r"reuse_odds.prior\[0\]"),
                          (dict(edges_ms="012"), "reuse_odds.edges_ms"),
                          (dict(edges_ms=[0.0, math.inf]), r"reuse_odds.edges_ms\[1\]"),
                          (dict(edges_ms=[0.0, math.nan]), r"reuse_odds.edges_ms\[1\]"),
                          (dict(levels=5), "reuse_odds.levels"),
                          (dict(levels=[[5]]), r"reuse_odds.levels\[0\]\[0\]"),
                          (dict(levels=[[[0.7] + [0] * n]]),
                           r"reuse_odds.levels\[0\]\[0\]\[0\]"),
                          (dict(levels=[[[0] + [0] * n, [0] + [0] * n]]), "listed twice")):
        with pytest.raises(UserError, match=field):
            ReuseOdds.from_dict({**d, **change})
    with pytest.raises(UserError, match="edges_ms"):
        ReuseOdds(edges_ms=(0.0, 5.0, 5.0), prior=(0, 0, 0), levels=())


def _chat():
    return generate([ChatSpec(sessions=12, turns=(2, 8), user_median=60, output_median=80)],
                    seed=4)


def _plan(cost, workload, candidates):
    tokens = sum(r.input_tokens + r.output_tokens for r in workload.requests)
    base = default_plan(cost.model, cost.fingerprint(), workload.block_size, None,
                        tokens, output_end=True)
    return dataclasses.replace(base, reuse_odds=dataclasses.replace(
        nu.reuse_odds_on(workload), candidates=candidates))


def test_plan_file_carries_the_table(tmp_path):
    cost = toy_cost(kv_per_token=1, state=4)
    w = _chat()
    plan = _plan(cost, w, 8)
    write_plan(plan, tmp_path / "runtime.yaml")
    assert load_plan(tmp_path / "runtime.yaml", cost) == plan
    old = dataclasses.replace(plan, reuse_odds=None)          # files without one still load
    assert "reuse_odds" not in plan_to_dict(old)
    write_plan(old, tmp_path / "old.yaml")
    assert load_plan(tmp_path / "old.yaml", cost).reuse_odds is None
    text = (tmp_path / "runtime.yaml").read_text().replace("candidates: 8", "candidates: -3")
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(PlanError, match="reuse_odds.candidates"):
        load_plan(tmp_path / "bad.yaml", cost)


def _with_index(plan, reference):
    class Refined(Planned.with_plan(plan)):
        def make_index(self):
            self.index = ClassOffsetLRU(self, reference=reference)
            return self.index
    return Refined


@pytest.mark.parametrize("candidates", [2, 8, 64])
@pytest.mark.parametrize("fraction", [0.02, 0.08])
def test_the_refined_order_matches_its_reference_scan(candidates, fraction):
    """Victims from the heap's K first live entries equal those from sorting every filed
    candidate; and the refinement changes what is evicted."""
    w = _chat()
    cost = toy_cost(kv_per_token=1, state=40)
    tokens = sum(r.input_tokens + r.output_tokens for r in w.requests)
    config = CacheConfig(capacity=Capacity.shared(int(tokens * fraction)))
    plan = _plan(cost, w, candidates)
    runs = {}
    plain = Planned.with_plan(dataclasses.replace(plan, reuse_odds=None))
    for name, cls in (("fast", _with_index(plan, False)), ("slow", _with_index(plan, True)),
                      ("plain", plain)):
        run = Replay(w, cost, cls(cost, config, w))
        run.run()
        run.cache.check()
        runs[name] = (list(run.hits), run.cache.evictions)
    assert runs["fast"][1] > 0
    assert runs["fast"] == runs["slow"]              # the same hit on every request
    if candidates == 64:
        assert runs["fast"] != runs["plain"]


def test_one_candidate_is_the_plain_order():
    """K = 1 goes through the refinement (the table is there) and picks the order's first."""
    w = _chat()
    cost = toy_cost(kv_per_token=1, state=40)
    tokens = sum(r.input_tokens + r.output_tokens for r in w.requests)
    config = CacheConfig(capacity=Capacity.shared(tokens // 20))
    plan = _plan(cost, w, 1)
    a = replay_policy(Planned.with_plan(plan), w, cost, config)
    b = replay_policy(Planned.with_plan(dataclasses.replace(plan, reuse_odds=None)), w,
                      cost, config)
    assert a.evictions > 0
    assert (a.hit_tokens, a.evictions) == (b.hit_tokens, b.evictions)


@pytest.mark.parametrize("seed, fraction, chosen", [(0, 16, 8), (1, 16, None)])
def test_derive_plan_ships_the_table_only_where_the_tuner_chose_it(seed, fraction, chosen):
    """The tuner tries 8 and 64 candidates with a table of the first half; the plan
    carries none where it kept 1, else the table refitted on the whole workload."""
    from marconi.planner.plan import derive_plan
    w = generate([ChatSpec(sessions=30, turns=(2, 8), user_median=60, output_median=80)],
                 seed=seed)
    cost = toy_cost(kv_per_token=1, state=40)
    tokens = sum(r.input_tokens + r.output_tokens for r in w.requests)
    cap = Capacity.shared(tokens // fraction)
    result = derive_plan(w, cost, cap, fit_alpha=False)
    tried = {t.value: t.flop_savings for t in result.trials
             if t.parameter == "reuse_odds.candidates"}
    assert set(tried) == {8, 64}
    odds = result.plan.reuse_odds
    assert (odds and odds.candidates) == chosen
    if odds is None:
        assert np.isclose(result.tuned_flop_savings, replay_policy(
            Planned.with_plan(result.plan), w, cost, CacheConfig(capacity=cap)).flop_savings)
    else:
        assert odds.candidates in tried
        assert odds == nu.reuse_odds_on(w, candidates=odds.candidates)
    assert derive_plan(w, cost, cap, fit_alpha=False, reuse_odds=False).plan.reuse_odds \
        is None

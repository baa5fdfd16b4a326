"""benchmarks/bench_planned.py (issue #14's table): one row replayed on a small generated
workload is consistent with the policies replayed on their own, and the tables count and
average what they say."""

from __future__ import annotations

import pytest

from benchmarks import bench_planned as bp
from marconi.planner import next_use as nu
from marconi.planner.plan import derive_plan, planned_policy
from marconi.runtime.cache.policies import get_policy
from marconi.runtime.capacity import Capacity
from marconi.runtime.config import CacheConfig
from marconi.runtime.sim.generators import ChatSpec, generate
from marconi.runtime.sim.simulator import replay_policy
from helpers import paper_7b_cost


@pytest.fixture(scope="module")
def row():
    cost = paper_7b_cost()
    w = generate([ChatSpec(sessions=8, turns=(2, 6), user_median=60, output_median=80)],
                 seed=3)
    first, second = w.split()
    footprint = replay_policy(get_policy("sglang"), second, cost,
                              CacheConfig(capacity=Capacity.unbounded())).peak_bytes
    predictor = nu.fit_on(first)
    item = ("chat", first, second, cost, footprint, 0.25, predictor,
            nu.predictor_quality(predictor, second), (False, None, None))
    return bp._task(item), (first, second, cost, footprint)


def test_a_row_holds_what_each_policy_replays_alone(row):
    r, (first, second, cost, footprint) = row
    cap = Capacity.shared(int(footprint * 0.25))
    plan = derive_plan(first, cost, cap).plan
    config = CacheConfig(capacity=cap, chunk_tokens=plan.chunk_tokens)
    assert r["sglang"] == replay_policy(get_policy("sglang"), second, cost,
                                        config).flop_savings
    assert r["rules"] == replay_policy(planned_policy(plan, hedged=False), second, cost,
                                       config).flop_savings
    assert r["planned"] == replay_policy(planned_policy(plan), second, cost,
                                         config).flop_savings
    best = max(bp.BASELINES, key=lambda p: r[p])
    assert r["best_baseline"] == best
    assert r["margin_points"] == pytest.approx(100 * (r["planned"] - r[best]))
    assert r["closure"] == pytest.approx((r["planned"] - r[best]) / (r["offline"] - r[best]))
    assert r["bound"] >= r["offline"] - 1e-9 and r["bound"] >= r["planned"] - 1e-9
    assert r["cost_us_mean"] > 0 and 0 < r["cost_over_prefill_total"] < 1


def test_the_tables_count_the_points_and_average_the_closure(row):
    r = row[0]
    rows = [dict(r, workload="swebench-like", fraction=f, margin_points=m, closure=c)
            for f, m, c in ((1 / 32, 0.0, 0.5), (1 / 16, -0.6, 0.1), (1 / 2, 1.0, 0.9))]
    text = bp.markdown(rows, ["mooncake-synthetic: not found"])
    assert "planned ≥ best baseline − 0.5 points at 2 of 3 points" in text
    assert "1/8: 0.30 (2 points)" in text                      # 1/2 is not a target capacity
    assert "left out: mooncake-synthetic: not found" in text

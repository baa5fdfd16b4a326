"""planner/engine_search.py: the flag search against the whole cross product, best ≥
defaults, moves only on strict improvement, refused settings, deterministic in any
executor."""

from __future__ import annotations

import pytest

from marconi.planner.engine_search import (exhaustive_best, replay_flags, score,
                                           search_engine)
from marconi.runtime.capacity import Capacity
from marconi.runtime.config import CacheConfig
from marconi.runtime.sim.executor import ProcessExecutor
from marconi.runtime.sim.generators import default_workload
from fake_engine import FakeEngine
from helpers import paper_7b_cost


@pytest.fixture(scope="module")
def setup():
    workload = default_workload(0)
    workload = type(workload)(name=workload.name, requests=workload.requests[:250],
                              block_size=workload.block_size, kind=workload.kind)
    return workload, paper_7b_cost()


def config(gb: float) -> CacheConfig:
    return CacheConfig(Capacity.shared(int(gb * 1e9)))


@pytest.mark.parametrize("gb,mode,block", [
    pytest.param(3, "all", 64, id="3GB-all-64"),
    pytest.param(8, "align", 128, id="8GB-align-128"),
    pytest.param(20, "judicious", 32, id="20GB-judicious-32"),
])
def test_two_flags_the_search_finds_the_exhaustive_best(setup, gb, mode, block):
    workload, cost = setup
    engine = FakeEngine(mode, block)
    found = search_engine(engine, workload, cost, config(gb))
    best, result = exhaustive_best(engine, workload, cost, config(gb))
    assert found.best.flags == best
    assert score(found.best.result) == score(result)
    assert score(found.best.result) >= score(found.defaults.result)


def test_defaults_are_the_defaults_replayed_and_best_is_never_worse(setup):
    workload, cost = setup
    engine = FakeEngine("align", 32)
    found = search_engine(engine, workload, cost, config(5))
    assert dict(found.defaults.flags) == {"--mode": "align", "--block-size": 32}
    again = replay_flags(engine, workload, cost, config(5), dict(found.defaults.flags))
    assert score(again) == score(found.defaults.result)
    assert found.best.result.flop_savings >= found.defaults.result.flop_savings
    assert found.trials[0].stage == "defaults"
    assert all(score(found.best.result) >= (t.flop_savings, t.token_hit_rate)
               for t in found.trials)


def test_a_flag_that_changes_nothing_stays_at_its_default(setup):
    workload, cost = setup
    found = search_engine(FakeEngine("all", 64, noop=True), workload, cost, config(5))
    assert dict(found.best.flags)["--noop"] == "a"
    assert "--noop" not in found.changed
    assert "--noop" not in found.best.command


def test_defaults_already_best_means_no_move(setup):
    workload, cost = setup
    engine = FakeEngine()
    best, _ = exhaustive_best(engine, workload, cost, config(5))
    mode, block = dict(best)["--mode"], dict(best)["--block-size"]
    found = search_engine(FakeEngine(mode, block, noop=True), workload, cost, config(5))
    assert found.best.flags == found.defaults.flags and found.changed == {}


def test_refused_settings_are_skipped_and_counted(setup):
    workload, cost = setup
    found = search_engine(FakeEngine("all", 64), workload, cost, config(5),
                          executor=ProcessExecutor(2))
    assert found.refused >= 2
    assert not any(dict(t.flags)["--mode"] == "judicious" and dict(t.flags)["--block-size"]
                   == 16 for t in found.trials)
    assert not any(dict(t.flags)["--mode"] == "align" and dict(t.flags)["--block-size"]
                   == 16 for t in found.trials)         # refused by its policy, in a worker
    settings = [t.flags for t in found.trials]
    assert len(settings) == len(set(settings))          # no setting replayed twice


def test_refused_defaults_are_an_error_naming_the_flag(setup):
    from marconi.errors import UserError
    workload, cost = setup
    with pytest.raises(UserError, match="--block-size"):
        search_engine(FakeEngine("align", 16), workload, cost, config(5),
                      executor=ProcessExecutor(2))


def test_deterministic_in_process_and_in_workers(setup):
    workload, cost = setup
    engine = FakeEngine("all", 64, noop=True)
    a = search_engine(engine, workload, cost, config(4))
    b = search_engine(engine, workload, cost, config(4))
    c = search_engine(engine, workload, cost, config(4), executor=ProcessExecutor(2))

    def key(s):
        d = s.to_dict()
        d["search"].pop("seconds")
        for part in ("defaults", "best"):
            d[part].pop("seconds")
        return d, [(t.stage, t.flags, t.flop_savings) for t in s.trials]

    assert key(a) == key(b) == key(c)


def test_progress_counts_every_replay(setup):
    workload, cost = setup
    heard = []
    found = search_engine(FakeEngine(), workload, cost, config(5),
                          progress=lambda stage, done, total: heard.append((stage, done,
                                                                            total)))
    ends = [(s, d) for s, d, t in heard if d == t and t]
    # every replay asked for: the trials, and those the policy refused when replayed
    assert len(found.trials) <= sum(d for _, d in ends) <= len(found.trials) + found.refused
    assert {s for s, _ in ends} >= {"fake: defaults", "fake: screen"}


def test_launch_line_and_failure_modes_come_from_the_engine(setup):
    workload, cost = setup
    found = search_engine(FakeEngine("all", 128), workload, cost, config(5),
                          model_name="org/model")
    assert found.defaults.command == "fake serve org/model --cache-bytes 5000000000"
    for flag, value in found.changed.items():
        assert f"{flag} {value}" in found.best.command
    short = sum(r.input_tokens < 128 for r in workload.requests)
    assert bool(found.failure_modes_defaults) == bool(short)

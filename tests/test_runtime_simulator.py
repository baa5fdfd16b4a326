"""Simulator metrics against their definitions, the latency model, results as data."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from marconi.errors import UserError
from marconi.layers import LayerKind
from marconi.passes.cost_model import CostModel, FlopPoly, LayerCost
from marconi.runtime.capacity import Capacity
from marconi.runtime.config import CacheConfig, MarconiParams, VllmParams
from marconi.runtime.sim.latency import DEVICES, JAMBA_FLOPS_PER_TOKEN
from marconi.runtime.cache.policies.infinite import Infinite
from marconi.runtime.cache.policies.marconi import Marconi
from marconi.runtime.sim.replay import Replay, with_cycle_collector
from marconi.runtime.sim.simulator import SimResult, run_policy, simulate
from helpers import EXAMPLES, paper_7b_cost, toy_cost, token_workload

SEQS = [[1, 2, 3, 4], [1, 2, 3, 4, 5, 6], [1, 2, 9], [7, 8]]


def test_metrics_follow_the_shared_definitions():
    # non-linear FLOPs: F(n, p) = 2n + 0.5·n·p, so a hit saves more than its share
    cost = toy_cost(kv_per_token=1, state=5, flops_per_token=2.0, attention_np=0.5)
    w = token_workload(SEQS, outputs=[[5], [], [], []])
    r = run_policy("infinite", w, cost, CacheConfig(Capacity.shared(1000)))
    h = np.array([0, 5, 2, 0.0])                   # infinite: longest cached prefix
    L = np.array([4, 6, 3, 2.0])
    F = lambda n, p: 2 * n + 0.5 * n * p           # noqa: E731
    assert r.token_hit_rate == pytest.approx(h.sum() / L.sum())
    assert r.request_hit_rate == 0.5
    assert r.flop_savings == pytest.approx((F(L, 0) - F(L - h, h)).sum() / F(L, 0).sum())
    ttft = DEVICES["jamba-1.5-mini-4xa100"].overhead_ms + F(L - h, h) / \
        DEVICES["jamba-1.5-mini-4xa100"].flops_per_ms
    assert (r.ttft_p50_ms, r.ttft_p95_ms) == pytest.approx(tuple(np.percentile(ttft, [50, 95])))
    assert (r.hit_tokens, r.input_tokens, r.requests) == (7, 15, 4)


def jamba_linear() -> CostModel:
    """Jamba-1.5-Mini's per-token prefill FLOPs, without the attention's n² term."""
    return CostModel("jamba-linear", "bfloat16", "float32",
                     (LayerCost(0, LayerKind.MLP, "all",
                                flops=FlopPoly(c_n=JAMBA_FLOPS_PER_TOKEN)),))


@pytest.mark.parametrize("tokens", [1000, 8000, 32000])
def test_jamba_profile_reproduces_the_artifact_table(tokens):
    """≈ 17.8 ms + 52.96 ms per 1K tokens (background/marconi.md §5)."""
    ttft = DEVICES["jamba-1.5-mini-4xa100"].ttft_ms(jamba_linear(), tokens, 0)
    assert ttft == pytest.approx(17.8 + 52.96 * tokens / 1000)


def test_jamba_calibration_constant_is_the_traced_model():
    from marconi.passes import build_cost_model
    from marconi.spec import load_model
    cost = build_cost_model(load_model(EXAMPLES / "jamba-1.5-mini.yaml"))
    assert cost.flops.c_n == JAMBA_FLOPS_PER_TOKEN
    # with the real model the n² attention term adds little at 1K tokens
    ttft = DEVICES["jamba-1.5-mini-4xa100"].ttft_ms(cost, 1000, 0)
    assert ttft == pytest.approx(17.8 + 52.96, rel=2e-3)


def test_results_are_frozen_data_and_serialise():
    w = token_workload(SEQS)
    report = simulate(w, toy_cost(), CacheConfig(Capacity.shared(100)), ["sglang", "marconi"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.results[0].token_hit_rate = 1.0
    doc = json.loads(json.dumps(report.to_dict()))
    assert [r["policy"] for r in doc["results"]] == ["sglang", "marconi"]
    assert set(f.name for f in dataclasses.fields(SimResult)) <= set(doc["results"][0])


def test_unknown_policy_fails_before_any_replay():
    with pytest.raises(UserError, match="unknown policy 'nope'"):
        simulate(token_workload(SEQS), toy_cost(), CacheConfig(Capacity.shared(100)),
                 ["sglang", "nope"])


def test_progress_callback_reports_the_end():
    seen = []
    simulate(token_workload(SEQS), toy_cost(), CacheConfig(Capacity.shared(100)),
             ["sglang"], progress=lambda name, done, total: seen.append((name, done, total)))
    assert seen[-1] == ("sglang", 4, 4)


def test_separate_pools_bound_each_pool():
    # 10 B of state pool holds one checkpoint (state 10 B); KV pool 90 B
    cap = Capacity.split(100, 0.1)
    w = token_workload([[1, 2, 3], [4, 5, 6], [1, 2, 3]])
    r = run_policy("sglang", w, toy_cost(state=10), CacheConfig(cap))
    # each insert evicts the only state: [4,5,6] pushes [1,2,3] out, no hit for r2
    assert r.token_hit_rate == 0 and r.peak_occupancy == 1.0 and r.evictions == 2


def test_replay_pauses_the_cycle_collector_and_restores_it():
    import gc
    workload = token_workload([[1, 2, 3]])
    cost = paper_7b_cost()
    config = CacheConfig(Capacity.unbounded())
    seen = []

    class Watching(Infinite):
        def after_request(self, replay, i):
            seen.append(gc.isenabled())
            with with_cycle_collector():             # a policy planning mid-replay
                seen.append(gc.isenabled())
            seen.append(gc.isenabled())

    assert gc.isenabled()
    Replay(workload, cost, Watching(cost, config, workload)).run()
    assert seen == [False, True, False] and gc.isenabled()
    seen.clear()
    gc.disable()
    try:                                             # a caller's choice is kept
        Replay(workload, cost, Watching(cost, config, workload)).run()
        assert seen == [False, False, False] and not gc.isenabled()
    finally:
        gc.enable()


def test_discarded_replay_is_freed_without_the_cycle_collector():
    """A finished sweep replay is unlinked, so dropping it frees it at once (the tree and
    the cache ⇄ index links would otherwise wait for a full collection)."""
    import gc
    import weakref
    workload = token_workload([[s % 3, s, 1, 2, 3] for s in range(20)])
    cost = paper_7b_cost()
    config = CacheConfig(Capacity.shared(cost.kv_bytes_per_token * 12 + 4 * cost.state_bytes()))
    gc.disable()
    try:
        for discard in (False, True):
            run = Replay(workload, cost, Marconi(cost, config, workload, 1.0, tune=False))
            run.run()
            assert run.cache.evictions
            ref = weakref.ref(run.cache)
            if discard:
                run.discard()
            del run
            assert (ref() is None) == discard
    finally:
        gc.enable()
        gc.collect()


# ------------------------------------------------------------------ warm-up window

def test_warmup_counts_only_the_last_requests():
    """SEQS with outputs as above, warm-up 0.5: requests 0-1 fill the cache, 2-3 count.
    infinite's hits are (0, 5, 2, 0); the window keeps (2, 0) of inputs (3, 2)."""
    cost = toy_cost(kv_per_token=1, state=5, flops_per_token=2.0, attention_np=0.5)
    w = token_workload(SEQS, outputs=[[5], [], [], []])
    r = run_policy("infinite", w, cost, CacheConfig(Capacity.shared(1000), warmup=0.5))
    h, L = np.array([2, 0.0]), np.array([3, 2.0])
    F = lambda n, p: 2 * n + 0.5 * n * p           # noqa: E731
    assert (r.hit_tokens, r.input_tokens, r.requests, r.warmup_requests) == (2, 5, 2, 2)
    assert r.token_hit_rate == pytest.approx(0.4) and r.request_hit_rate == 0.5
    assert r.block_hit_rate == pytest.approx(0.4)
    assert r.flop_savings == pytest.approx((F(L, 0) - F(L - h, h)).sum() / F(L, 0).sum())
    ttft = DEVICES["jamba-1.5-mini-4xa100"].overhead_ms + F(L - h, h) / \
        DEVICES["jamba-1.5-mini-4xa100"].flops_per_ms
    assert (r.ttft_p50_ms, r.ttft_p95_ms) == pytest.approx(tuple(np.percentile(ttft, [50, 95])))


def _chat(n: int = 40, sessions: int = 4):
    """Four chat sessions taking turns: each input is its session's history + 2 tokens,
    each output 1 token. With 60 B, evictions and rejected inserts happen on both sides of
    the warm-up boundary."""
    history = {k: [100 + k] for k in range(sessions)}
    inputs, outputs = [], []
    for s in range(n):
        k = (s * 7) % sessions if s % 5 else s % sessions
        inputs.append(history[k] + [s % 3, 50 + s])
        outputs.append([60 + s])
        history[k] = inputs[-1] + outputs[-1]
    return token_workload(inputs, outputs=outputs)


@pytest.mark.parametrize("policy", ["sglang", "vllm-align", "marconi", "planned"])
def test_warmup_window_counts_cache_events_and_peak_after_the_boundary(policy):
    from marconi.runtime.cache.policies import get_policy
    from marconi.runtime.sim.simulator import summarize
    w, cost = _chat(), toy_cost(kv_per_token=2, state=6)
    config = CacheConfig(Capacity.shared(60), warmup=0.25,
                         marconi=MarconiParams(bootstrap_multiplier=1),
                         vllm=VllmParams(block_tokens=2))
    cls = get_policy(policy)
    plain = Replay(w, cost, cls(cost, dataclasses.replace(config, warmup=0.0), w))
    used, counters = [], []
    for i in range(len(w.requests)):
        plain.run(stop=i + 1)
        used.append(plain.cache.used_bytes)
        counters.append(plain.counters())
    whole = summarize(policy, plain, cost, config, {})
    run = Replay(w, cost, cls(cost, config, w))
    run.run()
    r = summarize(policy, run, cost, config, {})
    W = 10
    assert run.warmup == r.warmup_requests == W and r.requests == 30
    assert run.hits == plain.hits                    # the warm-up changes no decision
    assert r.hit_tokens == sum(plain.hits[W:]) > 0
    assert (r.checkpoints_admitted, r.checkpoints_evicted, r.evictions,
            r.rejected_inserts) == tuple(a - b for a, b in zip(counters[-1], counters[W - 1]))
    assert r.evictions > 0 and whole.evictions > r.evictions
    assert r.peak_bytes == max(used[W - 1:]) <= whole.peak_bytes


def test_warmup_zero_changes_nothing():
    w, cost = _chat(), toy_cost(kv_per_token=2, state=6)
    base = CacheConfig(Capacity.shared(60), marconi=MarconiParams(bootstrap_multiplier=1))
    def untimed(r):
        params = {k: v for k, v in r.params.items() if k != "tuning_seconds"}
        return dataclasses.replace(r, seconds=0, params=params)

    for policy in ("sglang", "marconi", "marconi-static", "vllm-all"):
        a = run_policy(policy, w, cost, base)
        b = run_policy(policy, w, cost, dataclasses.replace(base, warmup=0.0))
        assert untimed(a) == untimed(b)


def test_static_alpha_is_chosen_on_the_counted_window():
    """marconi-static's sweep forks a shared history: with a warm-up its winner is the α
    whose counted token hit rate is highest, as separate replays of each α find."""
    from marconi.runtime.sim.simulator import summarize
    w, cost = _chat(60), toy_cost(kv_per_token=2, state=6, attention_np=0.5)
    config = CacheConfig(Capacity.shared(60), warmup=0.5,
                         marconi=MarconiParams(alpha_grid=(0.0, 0.5, 1.0, 2.0)))
    static = run_policy("marconi-static", w, cost, config)
    rates = {}
    for a in config.marconi.alpha_grid:
        run = Replay(w, cost, Marconi(cost, config, w, alpha=a, tune=False))
        run.run()
        rates[a] = summarize("m", run, cost, config, {}).token_hit_rate
    assert static.params["token_hit_rate_by_alpha"] == {str(a): round(v, 6)
                                                        for a, v in rates.items()}
    assert static.token_hit_rate == max(rates.values())


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5, True, "0.5"])
def test_warmup_outside_zero_one_is_refused(bad):
    with pytest.raises(UserError, match=r"warmup: .*expected a fraction of the requests in "
                                        r"\[0, 1\)"):
        CacheConfig(Capacity.shared(100), warmup=bad)


def test_report_states_the_window():
    report = simulate(token_workload(SEQS), toy_cost(), CacheConfig(Capacity.shared(100),
                                                                    warmup=0.5), ["sglang"])
    assert report.to_dict()["warmup"] == {"fraction": 0.5, "requests": 2}
    assert report.results[0].requests == 2

"""Each policy on tiny hand-built traces (answers worked out in comments), the registry,
Marconi's α tuning and the static sweep, and occupancy ≤ 1 on random traces."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marconi.errors import UserError
from marconi.runtime.capacity import Capacity
from marconi.runtime.config import CacheConfig, MarconiParams, VllmParams
from marconi.runtime.sim.generators import AgentSpec, ChatSpec, generate
from marconi.runtime.cache.policies import get_policy, policy_names, register
from marconi.runtime.cache.policies.base import Admission, Policy
from marconi.runtime.cache.policies.marconi import Marconi
from marconi.runtime.sim.executor import ProcessExecutor
from marconi.runtime.sim.replay import Replay
from marconi.runtime.sim.simulator import replay_policy, run_policy
from helpers import block_workload, paper_7b_cost, toy_cost, token_workload

# Toy model for the worked examples: 1 B of KV per token, 10 B per state, 1 FLOP per token
# (so FLOP savings = token hit rate).
TOY = toy_cost(kv_per_token=1, state=10, flops_per_token=1.0)


def replay(policy: str, workload, capacity, **config):
    cfg = CacheConfig(Capacity.shared(capacity), **config)
    return run_policy(policy, workload, TOY, cfg)


def hits_of(policy: str, workload, capacity, **config):
    cfg = CacheConfig(Capacity.shared(capacity), **config)
    cls = get_policy(policy)
    run = Replay(workload, TOY, cls(TOY, cfg, workload))
    run.run()
    run.cache.check(kv_only_leaves=cls.kv_only_leaves)
    return run.hits, run


def test_infinite_hits_the_longest_cached_prefix():
    # A = [1,2,3,4] → output [5] is cached too; B = [1..6] hits [1..5] (5 tokens);
    # C = [1,2,9] hits [1,2] (2). Token hit rate = (0 + 5 + 2) / (4 + 6 + 3) = 7/13.
    w = token_workload([[1, 2, 3, 4], [1, 2, 3, 4, 5, 6], [1, 2, 9]], outputs=[[5], [], []])
    r = replay("infinite", w, 1)                 # capacity ignored
    assert r.token_hit_rate == pytest.approx(7 / 13)
    assert r.flop_savings == pytest.approx(7 / 13)
    assert r.request_hit_rate == pytest.approx(2 / 3)


def test_vllm_all_block_trace_worked_example():
    """Block trace, 4 tokens per id, a state at every id; capacity 100 B.

    r0 L=10 ids [1,2,3] (blocks 4,4,2): miss; +10 KV +3 states = 40 B.
    r1 L=12 ids [1,2,4]: hits ids [1,2] = 8 tokens; +4 KV +1 state → 54 B.
    r2 L=8 ids [7,8]: miss; +8 +20 → 82 B.
    r3 L=16 ids [9..12]: needs 16 + 40 = 56 B → 138 > 100; LRU leaves, tail first:
        [3] (t0) −12 → 70; [4] (t1) −14 → 56; [1,2] now a leaf (t1): its tail block 2
        −14 → 42; 42 + 56 = 98 ≤ 100. Left: [1] (state at id 1), [7,8], [9..12].
    r4 L=12 ids [1,2,5]: hits id [1] = 4 tokens; needs 8 + 20 = 28 → 126 > 100: [7,8]
        (t2) loses block 8 (−14 → 84, still 112 > 100) then block 7 (−14 → 70) → 98.
    Hits 0+8+0+0+4 = 12 of 58 tokens; peak 98 B; states 3+1+2+4+2 = 12 in, 5 out.
    """
    w = block_workload([(10, 0, [1, 2, 3]), (12, 0, [1, 2, 4]), (8, 0, [7, 8]),
                        (16, 0, [9, 10, 11, 12]), (12, 0, [1, 2, 5])], block=4)
    hits, run = hits_of("vllm-all", w, 100)
    assert hits == [0, 8, 0, 0, 4]
    r = replay("vllm-all", w, 100)
    assert r.token_hit_rate == pytest.approx(12 / 58)
    assert (r.peak_bytes, r.peak_occupancy) == (98, 0.98)
    assert (r.checkpoints_admitted, r.checkpoints_evicted) == (12, 5)


# r0 [1..5] → [6]; r1 [1,2,3,7] → [8]; r2 [1,2,3,9]; r3 [1..6,10]; r4 14 fresh tokens;
# r5 [1..6,10,11]. Capacity 60 B.
SESSION = token_workload(
    [[1, 2, 3, 4, 5], [1, 2, 3, 7], [1, 2, 3, 9], [1, 2, 3, 4, 5, 6, 10],
     list(range(20, 34)), [1, 2, 3, 4, 5, 6, 10, 11]],
    outputs=[[6], [8], [], [], [], []])


def test_sglang_worked_example():
    """SGLang+: Marconi's admission, LRU over leaves, whole-path recency.

    r0: miss; leaf [1..6] with a state at 6: 6 + 10 = 16 B.
    r1: the input splits [1..6] at 3 (speculative insertion) → states at 3 and at 5
        (end of input + output [8]): +2 tokens +2 states = 22 → 38 B. Miss: the branch
        is checkpointed on the 2nd sighting ...
    r2: ... and hit on the 3rd: 3 tokens; + leaf [9]: 11 → 49 B.
    r3: hits [4,5,6] (state at 6): 6 tokens; + leaf [10]: 11 → 60 B (= capacity).
    r4: miss; needs 14 + 10 = 24 B: leaves by age [7,8] (t1) −12, [9] (t2) −11,
        [10] (t3) −11 → 26 + 24 = 50 B.
    r5: hits 6 tokens (state at 6; [10]'s state is gone).
    Hits 0+0+3+6+0+6 = 15 of 42 tokens.
    """
    hits, _ = hits_of("sglang", SESSION, 60)
    assert hits == [0, 0, 3, 6, 0, 6]
    assert replay("sglang", SESSION, 60).token_hit_rate == pytest.approx(15 / 42)


def test_marconi_worked_example_keeps_the_deeper_state():
    """Marconi (α = 0 here: the trace ends before tuning), same trace as SGLang+.

    Up to r3 the same entries (60 B). Recency: only consumed and new nodes are refreshed:
    [7,8] t1, [9] t2, [4,5,6] t3 (consumed by r3), [10] t3. Candidates are nodes with a
    state and ≤ 1 child, so [4,5,6] (one child) is one. r4 needs 24 B: [7,8] −12 →
    48 + 24 = 72; [9] −11 → 61; [4,5,6] (t3, older node than [10]) loses its state −10
    → 27 + 24 = 51 ≤ 60, and merges into [10]: the path keeps a state at 7.
    r5 then hits 7 tokens where SGLang+ hits 6: 0+0+3+6+0+7 = 16 of 42.
    """
    hits, run = hits_of("marconi", SESSION, 60)
    assert hits == [0, 0, 3, 6, 0, 7]
    assert run.policy.alpha == 0.0 and run.policy.tuned_at is None


def test_vllm_align_worked_example():
    """vLLM align mode with 4-token blocks (token trace).

    r0 [1..10] → [11,12]: state at the last block boundary of the prefill, 8; KV of
       every full block of input + output: 12 tokens. 12 + 10 = 22 B.
    r1 [1..10,13,14]: hits 8. KV matches 10 tokens, only 2 past the hit (< one block):
       no shared-prefix state. Prefill end 12 → state at 12.
    r2 [1..6,20,21]: KV matches 6 tokens, no state on them: 6 − 0 ≥ 4 → a state at the
       shared-prefix boundary floor(6/4)·4 = 4 (2nd sighting), and at the prefill end 8.
    r3 [1..5,30]: hits the state at 4 (3rd sighting).
    Hits 0 + 8 + 0 + 4 = 12 of 36 tokens.
    """
    w = token_workload([list(range(1, 11)), list(range(1, 11)) + [13, 14],
                        [1, 2, 3, 4, 5, 6, 20, 21], [1, 2, 3, 4, 5, 30]],
                       outputs=[[11, 12], [], [], []])
    hits, run = hits_of("vllm-align", w, 1000, vllm=VllmParams(block_tokens=4))
    assert hits == [0, 8, 0, 4]
    assert run.cache.state_used == 10 * 4           # states at 8, 12, 4, 8 (r2's branch)


def test_grid_rounds_admission_down_honestly():
    """Marconi with a 4-token engine grid: r0 [1..6] → state at floor(6/4)·4 = 4 only and
    nothing past it is cached; r1 [1..6,7] hits 4, not 6."""
    w = token_workload([[1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6, 7]])
    hits, run = hits_of("marconi", w, 1000, chunk_tokens=4)
    assert hits == [0, 4]


def test_registry_lists_known_policies_and_refuses_unknown_names():
    assert {"infinite", "marconi", "marconi-static", "sglang", "vllm-align",
            "vllm-all"} <= set(policy_names())
    with pytest.raises(UserError, match="unknown policy 'lru'; expected one of .*sglang"):
        get_policy("lru")


def test_a_new_policy_registers_itself_with_the_decorator():
    from marconi.runtime.cache import policies
    from marconi.runtime.cache.eviction import LeafLRU

    @register("test-only-everything")
    class Everything(Policy):
        def make_index(self):
            return LeafLRU()

        def admit(self, seq, m):
            return Admission(len(seq.ids), (len(seq.ids),))
    try:
        assert get_policy("test-only-everything") is Everything
        with pytest.raises(ValueError, match="already registered"):
            register("test-only-everything")(type("Other", (Policy,), {}))
        r = replay("test-only-everything", SESSION, 1000)
        assert r.policy == "test-only-everything" and r.token_hit_rate > 0
    finally:
        policies._REGISTRY.pop("test-only-everything")


def _chat_agent(seed):
    return generate([ChatSpec(sessions=8, turns=(2, 8), user_median=40, output_median=60),
                     AgentSpec(sessions=4, system_tokens=150, rounds=(6, 14),
                               observation_median=60, action_median=20)], seed=seed)


def test_marconi_tunes_alpha_once_on_the_bootstrap_window():
    """The tuned α must be the best on the window [f, 5·(f+1)) when each α is replayed
    from scratch (independent of the snapshot/fork machinery)."""
    w, cost = _chat_agent(3), paper_7b_cost()
    cfg = CacheConfig(Capacity.shared(cost.kv_bytes_per_token * 3000),
                      marconi=MarconiParams(bootstrap_multiplier=3))
    policy = Marconi(cost, cfg, w)
    run = Replay(w, cost, policy)
    run.run()
    f, end = policy.first_eviction, policy.tuned_at
    assert f is not None and end == 3 * (f + 1) <= len(w.requests)
    window = sum(r.input_tokens for r in w.requests[f:end])
    scratch = {}
    for alpha in cfg.marconi.alpha_grid:
        fresh = Replay(w, cost, Marconi(cost, cfg, w, alpha=alpha, tune=False))
        fresh.run(stop=end)
        scratch[alpha] = sum(fresh.hits[f:end]) / window
    assert scratch == pytest.approx(policy.window_scores)
    assert policy.alpha == max(scratch, key=lambda a: (scratch[a], -a))
    assert run.first_eviction == f


def test_marconi_static_picks_the_best_fixed_alpha():
    w, cost = _chat_agent(4), paper_7b_cost()
    cfg = CacheConfig(Capacity.shared(cost.kv_bytes_per_token * 3000),
                      marconi=MarconiParams(alpha_grid=(0.0, 0.5, 1.0, 2.0)))
    result = run_policy("marconi-static", w, cost, cfg)
    rates = {}
    for alpha in cfg.marconi.alpha_grid:
        fresh = Replay(w, cost, Marconi(cost, cfg, w, alpha=alpha, tune=False))
        fresh.run()
        rates[alpha] = sum(fresh.hits) / w.total_input_tokens
    assert result.params["alpha"] == max(rates, key=lambda a: (rates[a], -a))
    assert result.token_hit_rate == pytest.approx(rates[result.params["alpha"]])


BOUNDED = ["vllm-all", "vllm-align", "sglang", "marconi", "marconi-static"]


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), tokens=st.integers(300, 4000),
       state_fraction=st.sampled_from([None, 0.3]), chunk=st.sampled_from([None, 16]))
def test_peak_occupancy_never_exceeds_capacity(seed, tokens, state_fraction, chunk):
    w = generate([ChatSpec(sessions=3, turns=(2, 5), user_median=30, output_median=40),
                  AgentSpec(sessions=2, system_tokens=60, rounds=(6, 9),
                            observation_median=30, action_median=10)], seed=seed)
    cost = toy_cost(kv_per_token=2, state=120, flops_per_token=3.0, attention_np=0.01)
    total = 2 * tokens
    cap = (Capacity.shared(total) if state_fraction is None
           else Capacity.split(total, state_fraction))
    cfg = CacheConfig(cap, chunk_tokens=chunk,
                      marconi=MarconiParams(alpha_grid=(0.0, 1.0), bootstrap_multiplier=2),
                      vllm=VllmParams(block_tokens=16))
    for name in BOUNDED:
        cls = get_policy(name)
        if name == "marconi-static":
            r = replay_policy(cls, w, cost, cfg)
            assert r.peak_occupancy <= 1.0
            continue
        run = Replay(w, cost, cls(cost, cfg, w))
        run.run()
        run.cache.check(kv_only_leaves=cls.kv_only_leaves)
        assert run.cache.peak_occupancy <= 1.0, name


@pytest.mark.parametrize("policy", ["marconi", "marconi-static"])
def test_alpha_replays_in_worker_processes_give_the_same_answer(policy):
    w, cost = _chat_agent(5), paper_7b_cost()
    base = CacheConfig(Capacity.shared(cost.kv_bytes_per_token * 3000),
                       marconi=MarconiParams(bootstrap_multiplier=3,
                                             alpha_grid=(0.0, 0.5, 1.0, 2.0)))
    serial = run_policy(policy, w, cost, base)
    parallel = run_policy(policy, w, cost, base, executor=ProcessExecutor(2))
    assert serial.params == parallel.params or (
        {k: v for k, v in serial.params.items() if k != "tuning_seconds"}
        == {k: v for k, v in parallel.params.items() if k != "tuning_seconds"})
    assert dataclasses.replace(serial, seconds=0) == dataclasses.replace(
        parallel, seconds=0, params=serial.params)

"""`planned-hedged` (issue #14 item 3): the leader rule against its slow definition, ghosts
against the simulator's replay, following one expert = being it, an index switch = a fresh
clone of the same contents, and following whichever expert is best on small workloads."""

from __future__ import annotations

import random

import pytest

from marconi.runtime.capacity import Capacity
from marconi.runtime.cache.eviction import LeafLRU
from marconi.runtime.cache.ghost import Ghost, SwitchIndex, WindowLeader, held_in, \
    held_in_reference, take_recency, window_leaders_reference
from marconi.runtime.cache.policies import get_policy
from marconi.runtime.cache.policies.base import Admission, Policy
from marconi.runtime.cache.policies.hedged import Hedged
from marconi.runtime.cache.policies.sglang import SGLangPlus
from marconi.runtime.config import CacheConfig
from marconi.runtime.sim.generators import AgentSpec, ChatSpec, generate
from marconi.runtime.sim.replay import Replay
from marconi.runtime.sim.simulator import run_policy, summarize
from helpers import paper_7b_cost

COST = paper_7b_cost()
EXPERTS = ("vllm-align", "sglang", "marconi")


def chat(seed=2):
    return generate([ChatSpec(sessions=10, turns=(2, 8), user_median=60, output_median=80)],
                    seed=seed)


def agents(seed=2):
    return generate([AgentSpec(sessions=5, system_tokens=300, rounds=(6, 14),
                               observation_median=80, action_median=30)], seed=seed)


def config(workload, fraction):
    tokens = sum(r.input_tokens + r.output_tokens for r in workload.requests)
    return CacheConfig(Capacity.shared(int(COST.kv_bytes_per_token * tokens * fraction)))


def replay(cls, workload, cfg):
    policy = cls(COST, cfg, workload)
    run = Replay(workload, COST, policy)
    run.run()
    run.cache.check(kv_only_leaves=cls.kv_only_leaves)
    return run, policy


@pytest.mark.parametrize("sustained,z", [(False, 0.0), (True, 0.0), (False, 1.0),
                                         (True, 2.0)])
@pytest.mark.parametrize("seed", range(6))
def test_window_leader_matches_its_definition(seed, sustained, z):
    rng = random.Random(seed)
    n, k = 120, rng.randint(2, 4)
    window, margin = rng.choice([1, 5, 17, 200]), rng.choice([0.0, 0.05, 0.3])
    evidence = rng.choice([0, 0, 7, 60])
    prefill = [float(rng.randint(1, 50)) for _ in range(n)]
    # integers: the running sums are exact, so both sides compare the same numbers
    saved = [[float(rng.randint(0, int(p))) for _ in range(k)] for p in prefill]
    rule = WindowLeader(k, window, margin, evidence=evidence, sustained=sustained, z=z)
    fast = [rule.observe(s, p) for s, p in zip(saved, prefill)]
    assert fast == window_leaders_reference(saved, prefill, window, margin, evidence=evidence,
                                            sustained=sustained, z=z)
    assert rule.switches == sum(a != b for a, b in zip([0] + fast, fast))
    assert set(fast[:max(0, evidence - 1)]) <= {0}


def test_a_sustained_leader_ignores_a_lead_won_in_one_window():
    """Expert 1 wins the last window by far but is behind since the start: the plain rule
    switches, the sustained one stays; once 1 is ahead overall as well, both have switched."""
    saved = [[10.0, 0.0]] * 20 + [[0.0, 10.0]] * 5
    prefill = [10.0] * 25
    plain = WindowLeader(2, 5, 0.05)
    sustained = WindowLeader(2, 5, 0.05, sustained=True)
    assert [plain.observe(s, p) for s, p in zip(saved, prefill)][-1] == 1
    assert [sustained.observe(s, p) for s, p in zip(saved, prefill)][-1] == 0
    # ahead since the start by 5 % of the prefill: 10 (5 + m) > 200 + 0.5 (25 + m), m = 18
    leaders = [sustained.observe([0.0, 10.0], 10.0) for _ in range(18)]
    assert leaders == [0] * 17 + [1] and sustained.switches == 1
    # after the switch, the sums since the lead changed start afresh
    assert sustained.since_total == 0.0
    w = chat()
    assert Hedged.with_params(sustained=True)(COST, config(w, 0.1), w).rule.sustained
    assert not Hedged(COST, config(w, 0.1), w).rule.sustained


@pytest.mark.parametrize("name", EXPERTS)
def test_a_ghost_replays_as_the_simulator_does(name):
    w = agents()
    cfg = config(w, 0.1)
    cls = get_policy(name)
    run, _ = replay(cls, w, cfg)
    host = Replay(w, COST, cls(COST, cfg, w))       # what_if for the ghost's Marconi
    ghost = Ghost(cls(COST, cfg, w), COST, w, host)
    saved = [ghost.step(i) for i in range(len(w.requests))]
    assert ghost.hits == run.hits
    assert saved == [COST.saved_flops(h, r.input_tokens - h) if h else 0.0
                     for h, r in zip(run.hits, w.requests)]


@pytest.mark.parametrize("name", EXPERTS)
@pytest.mark.parametrize("fraction", [0.03, 0.2])
def test_following_a_single_expert_is_that_expert(name, fraction):
    """Admission, eviction index, recency (PATH emulated on a HIT replay) and Marconi's
    α taken from its ghost: the real cache hits exactly as the expert's own replay."""
    w = chat()
    cfg = config(w, fraction)
    alone, _ = replay(get_policy(name), w, cfg)
    hedged, policy = replay(Hedged.with_params(experts=(name,)), w, cfg)
    assert hedged.hits == alone.hits
    assert policy.rule.switches == 0
    assert alone.cache.evictions > 0                 # the capacity binds


class SwitchingSGLang(SGLangPlus):
    """SGLang+ in a cache whose index can be switched."""

    def make_index(self):
        return SwitchIndex(LeafLRU())


def test_an_index_switch_equals_a_fresh_clone_of_the_same_contents():
    """Switching the real cache's index to vLLM's, mid-replay, continues exactly as a
    clone of the same tree ordered by a fresh vLLM index (`Replay.fork`)."""
    w = agents()
    cfg = config(w, 0.05)
    align = get_policy("vllm-align")
    run = Replay(w, COST, SwitchingSGLang(COST, cfg, w))
    run.run(stop=len(w.requests) // 2)
    before = sorted((n.depth, n.ckpt, n.last_access) for n in run.cache.nodes())
    fork = run.fork(align(COST, cfg, w))
    run.cache.index.switch(align(COST, cfg, w).make_index())
    assert sorted((n.depth, n.ckpt, n.last_access) for n in run.cache.nodes()) == before
    run.policy = align(COST, cfg, w)
    run.run()
    fork.run()
    assert run.hits == fork.hits
    assert run.cache.evictions == fork.cache.evictions > 0


class Nothing(Policy):
    """An expert that caches nothing (the worst there is)."""

    def make_index(self):
        return LeafLRU()

    def admit(self, seq, m):
        return Admission(0, ())


@pytest.mark.parametrize("name", EXPERTS)
def test_it_leaves_a_bad_start_for_the_better_expert(name):
    w = chat()
    cfg = config(w, 0.2)
    window = 8
    H = Hedged.with_params(experts=(Nothing, name), window=window)
    run, policy = replay(H, w, cfg)
    assert policy.leaders[0] == 0 and policy.leaders[-1] == 1
    assert policy.rule.switches == 1
    alone = run_policy(name, w, COST, cfg).flop_savings
    hedged = summarize("h", run, COST, cfg, {}).flop_savings
    # not ≤ alone: having cached nothing early, its later contents differ (LRU is no optimum)
    assert hedged > 0.8 * alone > 0
    # it cannot hit before the first switch; the switch comes after the first window
    # in which the expert's ghost saved anything
    first = next(i for i, h in enumerate(policy.ghosts[1].hits) if h)
    switch = policy.leaders.index(1)
    assert switch == first + 1
    assert all(h == 0 for h in run.hits[:switch])


@pytest.mark.parametrize("workload, fraction", [(chat, 0.1), (chat, 0.4), (agents, 0.1),
                                                (agents, 0.4)])
def test_it_follows_whichever_baseline_is_best(workload, fraction):
    """On workloads where different experts win, the hedged real cache stays within a few
    points of the best (these traces are ~60 requests: the window's lag is most of it) and
    above the worst."""
    w = workload()
    cfg = config(w, fraction)
    scores = {p: run_policy(p, w, COST, cfg).flop_savings for p in EXPERTS}
    run, _ = replay(Hedged.with_params(window=16), w, cfg)
    hedged = summarize("h", run, COST, cfg, {}).flop_savings
    assert hedged >= max(scores.values()) - 0.04
    assert hedged >= min(scores.values())


def test_refuses_an_expert_it_cannot_follow():
    from marconi.errors import UserError
    w = chat()
    with pytest.raises(UserError, match="experts"):
        Hedged.with_params(experts=("vllm-all",))(COST, config(w, 0.1), w)


def test_a_fixed_alpha_marconi_expert_is_marconi_at_that_alpha():
    from marconi.runtime.cache.policies.marconi import Marconi

    class At1(Marconi):
        def __init__(self, cost, config, workload):
            super().__init__(cost, config, workload, alpha=1.0, tune=False)

    w = chat()
    cfg = config(w, 0.05)
    alone, _ = replay(At1, w, cfg)
    hedged, policy = replay(Hedged.with_params(experts=("marconi@1.0",)), w, cfg)
    assert hedged.hits == alone.hits and policy.real[0].alpha == 1.0
    for bad in ("marconi@x", "marconi@-1", "marconi@nan", "marconi@inf"):
        from marconi.errors import UserError
        with pytest.raises(UserError, match="experts"):
            Hedged.with_params(experts=(bad,))(COST, cfg, w)


def test_a_block_trace_starts_behind_vllm_align():
    from helpers import block_workload
    w = block_workload([(12, 4, [1, 2, 3]), (12, 4, [1, 2, 4])])
    policy = Hedged(COST, config(w, 0.5), w)
    assert policy.names[policy.leader] == "vllm-align" == policy.names[policy.rule.leader]
    w = chat()
    assert Hedged(COST, config(w, 0.5), w).leader == 0


# ------------------------------------------------------ `planned` as marconi-plan runs it

def _plan(workload, cfg, **rules):
    import dataclasses

    from marconi.runtime.plan.rules import default_plan
    return dataclasses.replace(default_plan(COST.model, COST.fingerprint(),
                                            workload.block_size, None,
                                            cfg.capacity.total_bytes), **rules)


@pytest.mark.parametrize("fraction", [0.03, 0.2])
def test_a_plan_hedged_by_nothing_is_the_plan(fraction):
    """`Hedged.around` with no baselines: the plan's own replay, hit for hit (its rules and
    sightings mirrored from its ghost, PATH recency emulated)."""
    from marconi.runtime.cache.policies.planned import Planned
    w = chat()
    cfg = config(w, fraction)
    rules = Planned.with_plan(_plan(w, cfg))
    alone, _ = replay(rules, w, cfg)
    hedged, policy = replay(Hedged.around(rules, baselines=()), w, cfg)
    assert hedged.hits == alone.hits
    assert alone.cache.evictions > 0
    assert policy.describe()["rules"] == rules.plan.rules_dict()


def test_a_hedged_plan_leads_first_and_keeps_its_memory_layout():
    import dataclasses

    from marconi.runtime.cache.policies.planned import Planned
    from marconi.runtime.plan.rules import MemoryRules
    w = chat()
    cfg = config(w, 0.1)
    plan = _plan(w, cfg, memory=MemoryRules(pools="split", state_fraction=0.25))
    cls = Hedged.around(Planned.with_plan(plan))
    assert cls.name == "planned" and cls.prior == 0
    policy = cls(COST, cfg, w)
    assert policy.leader == 0 and policy.names[0] == "planned"
    assert policy.capacity() == Capacity.split(cfg.capacity.total_bytes, 0.25)
    assert dataclasses.asdict(policy.capacity()) != dataclasses.asdict(cfg.capacity)


def test_a_hedged_plan_hands_the_lead_to_a_better_baseline():
    """Rules that admit nothing (no input or output ends, no branches): every baseline's
    ghost saves more, the lead passes, and the real cache saves what the baseline would."""
    from marconi.runtime.cache.policies.planned import Planned
    w = chat()
    cfg = config(w, 0.2)
    from marconi.runtime.plan.rules import AdmissionRules
    useless = _plan(w, cfg, admission=AdmissionRules(input_end=False, output_end=False,
                                                     branch_sighting=0))
    cls = Hedged.with_params(window=16).around(Planned.with_plan(useless))
    assert cls(COST, cfg, w).rule.evidence == 16       # a full window before any switch
    result = run_policy("planned", w, COST, cfg, bound={"planned": cls})
    hedge = result.params["hedge"]
    assert hedge["expert_flop_savings"]["planned"] == 0.0
    assert hedge["switches"] >= 1 and hedge["leader_share"]["planned"] < 0.5
    best = max(v for k, v in hedge["expert_flop_savings"].items() if k != "planned")
    assert result.flop_savings > 0.5 * best


def test_an_online_plan_hedged_by_nothing_is_the_online_plan():
    """Re-planned online (in its ghost only: planned once per due point, not twice) on a
    workload where only some requests have output ids: hit for hit the plan alone."""
    import dataclasses

    from marconi.planner.plan import replan_online
    from marconi.runtime.cache.policies.planned import Planned
    base = chat(seed=4)
    w = dataclasses.replace(base, requests=tuple(
        dataclasses.replace(r, output_ids=None) if r.index % 3 == 0 else r
        for r in base.requests))
    cfg = config(w, 0.05)
    calls = []

    def replan(window, cost, capacity, chunk_tokens):
        calls.append(len(window.requests))
        return replan_online(window, cost, capacity, chunk_tokens)

    class Online(Planned.with_planner(replan)):
        min_online_window, replan_every, replan_window = 10, 15, 20

    alone, solo = replay(Online, w, cfg)
    planned_alone = list(calls)
    calls.clear()
    hedged, policy = replay(Hedged.around(Online, baselines=()), w, cfg)
    assert len(planned_alone) >= 2 and calls == planned_alone      # the ghost plans, once
    assert hedged.hits == alone.hits
    assert policy.describe()["replanned_at_requests"] == solo.replanned


def test_the_baselines_ghosts_run_in_a_split_plans_layout():
    """A plan with split pools: every ghost runs in the real cache's layout, so the lead
    passes on what a baseline would save in this cache, and the real cache gets it."""
    from marconi.runtime.cache.policies.planned import Planned
    from marconi.runtime.plan.rules import AdmissionRules, MemoryRules
    w = chat()
    cfg = config(w, 0.2)
    useless = _plan(w, cfg, memory=MemoryRules(pools="split", state_fraction=0.5),
                    admission=AdmissionRules(input_end=False, output_end=False,
                                             branch_sighting=0))
    cls = Hedged.with_params(window=16).around(Planned.with_plan(useless))
    policy = cls(COST, cfg, w)
    split = Capacity.split(cfg.capacity.total_bytes, 0.5)
    assert [p.capacity() for p in policy.ghost_policies] == [split] * 4
    result = run_policy("planned", w, COST, cfg, bound={"planned": cls})
    hedge = result.params["hedge"]
    best = max(v for k, v in hedge["expert_flop_savings"].items() if k != "planned")
    assert hedge["switches"] >= 1 and result.flop_savings > 0.8 * best


@pytest.mark.parametrize("output_end, fraction", [(False, 0.1), (True, 0.05)],
                         ids=["input-ends", "input-and-output-ends"])
def test_a_plan_on_repeated_requests_is_still_the_plan_when_hedged(output_end, fraction):
    """Each request comes again one request later. With input ends only the repeat admits
    nothing (the rules then admit the hit's depth, so PATH still refreshes its path, as
    the hedged cache does); with output ends the repeat's output is cached already, past
    its input, and the hedged cache's PATH emulation must touch it too."""
    import dataclasses

    from marconi.runtime.cache.policies.planned import Planned
    from marconi.runtime.plan.rules import AdmissionRules
    base = chat(seed=5).requests
    twice = []                      # r0, r1, r0 again, r2, r1 again, ...
    for i, r in enumerate(base):
        twice.append(dataclasses.replace(r, index=len(twice)))
        if i:
            twice.append(dataclasses.replace(base[i - 1], index=len(twice),
                                             arrival_ms=r.arrival_ms))
    w = dataclasses.replace(chat(seed=5), requests=tuple(twice))
    cfg = config(w, fraction)
    rules = Planned.with_plan(_plan(w, cfg, admission=AdmissionRules(
        input_end=True, output_end=output_end, branch_sighting=0, fresh_threshold=0.0)))
    alone, _ = replay(rules, w, cfg)
    hedged, _ = replay(Hedged.around(rules, baselines=()), w, cfg)
    assert alone.cache.evictions > 0 and sum(alone.hits) > 0
    assert hedged.hits == alone.hits


# ------------------------------------------------ the Marconi α a plan is fitted with

def test_the_fitted_marconi_alpha_is_the_best_of_separate_replays():
    """`tune.marconi_alpha` (one replay to the first eviction, forks after it) against its
    definition: Marconi at each α of the grid replayed on its own, most FLOP savings wins
    (ties: the smaller α)."""
    from marconi.planner.tune import marconi_alpha
    from marconi.runtime.cache.policies.hedged import marconi_at
    from marconi.runtime.sim.simulator import replay_policy
    w = chat(seed=4)
    cfg = config(w, 0.04)
    alpha, savings = marconi_alpha(w, COST, cfg)
    slow = {a: replay_policy(marconi_at(a), w, COST, cfg).flop_savings
            for a in cfg.marconi.alpha_grid}
    assert set(savings) == set(slow)
    for a in slow:
        assert savings[a] == pytest.approx(slow[a], abs=1e-12), a
    assert alpha == max(slow, key=lambda a: (slow[a], -a))
    assert len({round(v, 9) for v in slow.values()}) > 1          # α matters here


def test_a_plan_with_a_fitted_alpha_is_hedged_by_marconi_at_that_alpha():
    """With `Plan.marconi_alpha` the Marconi ghost runs at it and never searches α online
    (its cost per request); without one it is the tuning `marconi` baseline."""
    import dataclasses

    from marconi.planner.plan import hedge_baselines, planned_policy
    w = chat()
    cfg = config(w, 0.05)
    plan = _plan(w, cfg)
    assert hedge_baselines(plan) == hedge_baselines(None) == ("sglang", "vllm-align", "marconi")
    fitted = dataclasses.replace(plan, marconi_alpha=1.5)
    assert hedge_baselines(fitted)[:2] == ("sglang", "vllm-align")
    assert hedge_baselines(fitted)[-1].name == "marconi@1.5"
    run, policy = replay(planned_policy(fitted), w, cfg)
    marconi = policy.ghost_policies[-1]
    assert policy.names[-1] == "marconi@1.5" and marconi.alpha == 1.5 and not marconi.tune
    assert run.first_eviction is not None and marconi.tuning_seconds == 0.0
    assert set(policy.describe()["hedge"]["expert_flop_savings"]) == {
        "planned", "sglang", "vllm-align", "marconi@1.5"}
    _, online = replay(planned_policy(plan), w, cfg)
    assert online.names[-1] == "marconi" and online.ghost_policies[-1].tune


def test_a_significant_lead_moves_the_leader_and_a_lucky_one_does_not():
    """With z = 1: a challenger ahead by one big hit among misses (D = 20, standard error
    56) stays behind; one ahead by 3 on every request (no spread) takes the lead. Without
    the test both take it."""
    lucky = [[5.0, 0.0]] * 7 + [[5.0, 60.0]]
    steady = [[5.0, 8.0]] * 8
    for rows, moves in ((lucky, False), (steady, True)):
        tested, plain = WindowLeader(2, 8, 0.0, z=1.0), WindowLeader(2, 8, 0.0)
        assert [tested.observe(r, 10.0) for r in rows][-1] == int(moves)
        assert [plain.observe(r, 10.0) for r in rows][-1] == 1


def _halfway(name, w, cfg):
    run = Replay(w, COST, get_policy(name)(COST, cfg, w))
    run.run(stop=len(w.requests) // 2)
    return run


@pytest.mark.parametrize("workload", [chat, agents])
@pytest.mark.parametrize("a, b, some", [
    ("sglang", "sglang", True), ("vllm-align", "vllm-align", True),
    ("sglang", "marconi", True), ("marconi", "sglang", True),
    # vLLM's states sit on block boundaries, SGLang's at input ends: few or none shared
    ("sglang", "vllm-align", False), ("vllm-align", "sglang", False)])
def test_held_in_matches_its_definition(workload, a, b, some):
    """Which nodes of one policy's cache another's holds (path and state), by one walk,
    against every prefix of the other tree; both trees halfway through the same requests,
    at different capacities (policies with the same admission: some nodes held, not all)."""
    w = workload()
    one = _halfway(a, w, config(w, 0.3)).cache
    other = _halfway(b, w, config(w, 0.05)).cache
    held = held_in(one, other)
    assert held == held_in_reference(one, other)
    n = sum(1 for _ in one.nodes()) - 1
    assert len(held) < n
    if some:
        assert held
    assert held_in(one, one).keys() == {node.uid for node in one.nodes()} - {one.root.uid}


def test_a_warm_switch_evicts_first_what_the_new_leader_lacks():
    """After `take_recency` from a ghost, the nodes the ghost holds carry its recency, the
    others are older than all of them, and an LRU index evicts a held node only when no
    node the ghost lacks is a candidate."""
    w = chat()
    run = _halfway("vllm-align", w, config(w, 0.1))
    ghost = _halfway("sglang", w, config(w, 0.05)).cache
    cache = run.cache
    held = held_in(cache, ghost)
    take_recency(cache, ghost)
    nodes = [n for n in cache.nodes() if n is not cache.root]
    assert all(n.last_access == held[n.uid].last_access for n in nodes if n.uid in held)
    foreign = [n for n in nodes if n.uid not in held]
    assert foreign and len(foreign) < len(nodes)
    assert max(n.last_access for n in foreign) < min(n.last_access for n in nodes
                                                     if n.uid in held)
    run.cache.index = index = SwitchIndex(LeafLRU())
    index.bind(cache)
    index.switch(LeafLRU())
    evicted_held = 0
    while (v := index.victim()) is not None:
        node = v[0]
        if node.uid in held:
            evicted_held += 1
            assert not any(n.alive and not n.children and n.uid not in held
                           for n in cache.nodes() if n is not cache.root)
        cache.evict_node(*v)
        index.release()
    assert evicted_held > 0


@pytest.mark.parametrize("fraction", [0.05, 0.2])
def test_a_warm_switch_takes_the_new_leaders_recency(fraction, monkeypatch):
    """Each switch of a warm hedge hands the new leader's ghost to `take_recency`, before
    the re-filing; before the first switch warm and cold are the same cache."""
    import marconi.runtime.cache.policies.hedged as hedged
    w = chat()
    cfg = config(w, fraction)
    H = Hedged.with_params(experts=(Nothing, "sglang", "marconi"), window=8)
    cold, cold_policy = replay(H, w, cfg)
    calls = []
    monkeypatch.setattr(hedged, "take_recency", lambda cache, ghost: calls.append(
        (cache, ghost)) or take_recency(cache, ghost))
    warm, warm_policy = replay(H.with_params(warm=True), w, cfg)
    assert warm_policy.rule.switches > 0
    assert len(calls) == warm_policy.rule.switches
    leaders = warm_policy.leaders
    switched_to = [leaders[i] for i in range(1, len(leaders)) if leaders[i] != leaders[i - 1]]
    assert [g for _, g in calls] == [warm_policy.ghosts[k].cache for k in switched_to]
    assert all(c is warm.cache for c, _ in calls)
    first = cold_policy.leaders.index(1)
    assert warm_policy.leaders[:first + 1] == cold_policy.leaders[:first + 1]
    assert warm.hits[:first] == cold.hits[:first]

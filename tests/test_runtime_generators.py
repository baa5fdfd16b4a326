"""Workload generators: seeded, shaped as documented, modest default."""

from __future__ import annotations

import pytest

from marconi.errors import UserError
from marconi.runtime.sim.generators import (AgentSpec, ChatSpec, DocumentSpec, SharedPromptSpec,
                                        default_workload, generate, named_workload,
                                        workload_names)
from marconi.runtime.sim.trace_stats import prefix_stats


def by_session(workload):
    out = {}
    for r in workload.requests:
        out.setdefault(r.session, []).append(r)
    return out


@pytest.mark.parametrize("name", workload_names())
def test_seeded_and_ordered(name):
    a, b, c = named_workload(name, 1), named_workload(name, 1), named_workload(name, 2)
    assert a.requests == b.requests and a.requests != c.requests
    times = [r.arrival_ms for r in a.requests]
    assert times == sorted(times) and [r.index for r in a.requests] == list(range(len(times)))


def test_chat_turns_extend_the_whole_history():
    w = generate([ChatSpec(sessions=5, turns=(3, 6))], seed=0)
    for turns in by_session(w).values():
        for prev, cur in zip(turns, turns[1:]):
            history = prev.input_ids + prev.output_ids
            assert cur.input_ids[:len(history)] == history and cur.arrival_ms > prev.arrival_ms


def test_agent_history_collapse_rewrites_the_middle():
    w = generate([AgentSpec(sessions=3, rounds=(12, 12), max_context=10**6)], seed=0)
    sessions = by_session(w)
    systems = {turns[0].input_ids[:1500] for turns in sessions.values()}
    assert len(systems) == 1                              # one shared system prompt
    for turns in sessions.values():
        extends = [cur.input_ids[:len(p.input_ids) + len(p.output_ids)]
                   == p.input_ids + p.output_ids for p, cur in zip(turns, turns[1:])]
        # rounds 1..5 append; from the 6th complete pair on, an old observation is deleted
        assert extends[:5] == [True] * 5 and not any(extends[5:])


def test_shared_prompts_and_documents_fan_out():
    w = generate([SharedPromptSpec(prompts=2, requests_total=40),
                  DocumentSpec(documents=2, questions=(3, 3))], seed=0)
    stats = prefix_stats(w)
    assert stats.ideal_token_hit_rate > 0.5                # most tokens are shared prefixes
    assert stats.branch_points >= 4                        # 2 prompts + 2 documents


def test_default_workload_is_modest():
    w = default_workload()
    assert 300 <= len(w.requests) <= 1000 and w.total_input_tokens < 3_000_000
    assert w.name == "builtin:default" and w.kind == "generated"
    assert {r.session.split("-")[0] for r in w.requests} == {"chat", "agent", "prompt", "doc"}


def test_unknown_builtin_name():
    with pytest.raises(UserError, match="unknown built-in workload 'x'; expected one of"):
        named_workload("x")

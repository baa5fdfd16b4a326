"""State-free models (no recurrent layers): every policy resumes from any cached KV prefix.

With unlimited capacity each policy that caches every sequence whole is checked, request by
request, against the obviously-correct figure: the longest prefix of the input that an
earlier sequence left in the cache, at the policy's engine granularity (any id; vLLM: whole
blocks). (`planned` is not: its rules may leave KV out, an admission choice.) At finite
capacity, policies that share SGLang's admission length and LRU eviction but place their
checkpoints differently must hit the same tokens for a state-free model (checkpoints cost
nothing and resume nothing the KV does not), and do not for a hybrid one.
"""

from __future__ import annotations

import itertools

import pytest

from helpers import causal_toy_cost, random_workload
from marconi.runtime.capacity import Capacity
from marconi.runtime.config import CacheConfig
from marconi.runtime.cache.policies import get_policy, policy_names
from marconi.runtime.cache.policies.base import Admission
from marconi.runtime.cache.policies.sglang import SGLangPlus
from marconi.runtime.sim.replay import Replay
from marconi.runtime.seq import make_seq
from marconi.runtime.sim.simulator import run_policy

STATE_FREE = causal_toy_cost(kv=10, state=0)
HYBRID = causal_toy_cost(kv=10, state=200)
VLLM = {"vllm-all", "vllm-align"}
TRACES = [pytest.param(seed, block, id=f"{'block' if block > 1 else 'token'}-seed{seed}")
          for seed in range(5) for block in (1, 4)]


def reference_hits(workload, grid: int | None) -> list[int]:
    """Hit tokens per request of an unbounded KV-only cache: the longest common prefix of
    the input with any earlier sequence (input + known output ids; block traces' outputs
    are unknown, so never matched), floored to `grid` tokens."""
    fresh = itertools.count(-1, -1)
    seen: list[tuple] = []
    out = []
    for r in workload.requests:
        seq = make_seq(r, fresh)
        ids = r.input_ids
        depth = max((next((i for i, (a, b) in enumerate(zip(ids, s)) if a != b),
                          min(len(ids), len(s))) for s in seen), default=0)
        out.append(seq.tokens(seq.floor_grid(depth, grid)))
        seen.append(ids + (r.output_ids or ()))
    return out


def replay_hits(name, workload, cost, config) -> list[int]:
    cls = get_policy(name)
    run = Replay(workload, cost, cls(cost, config, workload))
    run.run()
    run.cache.check(cls.kv_only_leaves)
    return run.hits


@pytest.mark.parametrize("chunk", [None, 2], ids=["exact", "chunk2"])
@pytest.mark.parametrize("seed,block", TRACES)
def test_unlimited_capacity_every_policy_hits_every_cached_prefix(seed, block, chunk):
    workload = random_workload(seed, n=30, vocab=3, max_len=8, block_size=block)
    chunk = chunk and chunk * block                  # a grid of whole blocks
    config = CacheConfig(capacity=Capacity.unbounded(), chunk_tokens=chunk)
    vllm_block = config.vllm_block(block)            # 32 tokens, or the trace's block
    for name in [p for p in policy_names() if p != "planned"]:
        expected = reference_hits(workload, vllm_block if name in VLLM else None)
        if name == "marconi-static":                 # a meta-policy: its totals only
            got = run_policy(name, workload, STATE_FREE, config).hit_tokens
            assert got == sum(expected), name
        else:
            assert replay_hits(name, workload, STATE_FREE, config) == expected, name


class EndOnly(SGLangPlus):
    """SGLang+ with a state at the end only (no branch-point state)."""

    def admit(self, seq, m):
        end = super().admit(seq, m).length
        return Admission(end, (end,) if end > m.hit_depth else ())


class EveryOtherId(SGLangPlus):
    """SGLang+ with a state at every second id of the new part and at the end."""

    def admit(self, seq, m):
        end = super().admit(seq, m).length
        return Admission(end, tuple(sorted({*range(m.hit_depth + 2, end, 2), end}
                                           - {m.hit_depth})))


@pytest.mark.parametrize("capacity", [150, 400, 900], ids=lambda c: f"C{c}")
@pytest.mark.parametrize("seed,block", TRACES)
def test_checkpoint_placement_does_not_matter_without_state(seed, block, capacity):
    workload = random_workload(seed, n=40, vocab=3, max_len=10, block_size=block)
    config = CacheConfig(capacity=Capacity.shared(capacity))
    runs = {}
    for cls in (SGLangPlus, EndOnly, EveryOtherId):
        run = Replay(workload, STATE_FREE, cls(STATE_FREE, config, workload))
        run.run()
        run.cache.check()
        runs[cls.__name__] = run.hits
    assert runs["EndOnly"] == runs["SGLangPlus"] == runs["EveryOtherId"]


def test_checkpoint_placement_matters_with_state():
    """The same comparison for the hybrid model differs (so the test above has teeth)."""
    differ = 0
    for seed, block in itertools.product(range(5), (1, 4)):
        workload = random_workload(seed, n=40, vocab=3, max_len=10, block_size=block)
        config = CacheConfig(capacity=Capacity.shared(900))
        hits = []
        for cls in (SGLangPlus, EveryOtherId):
            run = Replay(workload, HYBRID, cls(HYBRID, config, workload))
            run.run()
            hits.append(run.hits)
        differ += hits[0] != hits[1]
    assert differ >= 3


@pytest.mark.parametrize("seed,block", TRACES[:4])
def test_state_free_hits_at_least_the_hybrid_ones(seed, block):
    """Unbounded: a state-free model hits wherever the same policy hits for a hybrid one
    (a checkpointed node is cached KV), and `infinite` is the same for both. Not
    `vllm-all`: its hybrid form keeps the paper's state after a trailing partial block,
    which a Transformer's vLLM, hashing full blocks only, cannot hit."""
    workload = random_workload(seed, n=30, vocab=3, max_len=8, block_size=block)
    config = CacheConfig(capacity=Capacity.unbounded())
    for name in ("sglang", "vllm-align", "marconi", "planned"):
        free = replay_hits(name, workload, STATE_FREE, config)
        hybrid = replay_hits(name, workload, HYBRID, config)
        assert all(f >= h for f, h in zip(free, hybrid)), name
    assert replay_hits("infinite", workload, STATE_FREE, config) == \
        replay_hits("infinite", workload, HYBRID, config)

"""Cached prefill and generation equal the unwrapped model, for every supported family.

Each case replays a seeded script of requests (shared system prompt, branches, multi-turn
follow-ups that extend earlier outputs, exact repeats, history rewrites) through
`marconi.wrap` and checks, per request, against a full forward of the unwrapped model
from token 0 without any cache object:

- the logits of the input positions the wrapper computed (after its restored prefix);
- the greedy tokens, and the logits each was chosen from.

Tolerance (float32): max(1e-4, the family's own chunked-vs-full prefill difference),
where the latter is measured here on the same model with its own cache class. A negative
control shows the tolerance is tight enough to catch a wrong state: continuing from a
zeroed recurrent state lands outside it.
"""

from __future__ import annotations

import functools
import zlib

import pytest
import torch

from marconi.runtime.serve.cached_model import wrap
from marconi.runtime.serve.model_adapters import adapter_for
from wrap_helpers import (HF_FAMILIES, LINEAR_SPEC, REF_FAMILIES, Script, cost_for,
                          full_logits, model_for)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CASES = [pytest.param("hf", n, id=f"hf-{n}") for n in HF_FAMILIES] + \
        [pytest.param("ref", n, id=f"ref-{n}") for n in REF_FAMILIES + (LINEAR_SPEC["name"],)]


@torch.no_grad()
def chunked_vs_full(model, seed: int = 1, length: int = 40) -> float:
    """Largest |logits| difference between prefilling in pieces with the model's own cache
    (one token at a time where a multi-token forward cannot continue) and in one pass."""
    a = adapter_for(model)
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 200, (1, length), generator=g)
    full, _ = a.forward(ids, a.new_cache())
    worst = 0.0
    for cuts in ([7, 19, 33], [1, 2, 30], [16]):
        cache, parts, lo = a.new_cache(), [], 0
        for hi in [*cuts, length]:
            step = hi - lo if (a.continues_prefill or lo == 0) else 1
            for s in range(lo, hi, step):
                out, cache = a.forward(ids[:, s:s + step], cache)
                parts.append(out)
            lo = hi
        worst = max(worst, (torch.cat(parts, 1) - full).abs().max().item())
    return worst


@functools.lru_cache(maxsize=None)
def tolerance(kind: str, name: str) -> float:
    return max(1e-4, chunked_vs_full(model_for(kind, name)))


@pytest.mark.parametrize("capacity", ["ample", "tight"])
@pytest.mark.parametrize("kind,name", CASES)
def test_cached_outputs_equal_uncached(kind, name, capacity):
    model = model_for(kind, name)
    tol = tolerance(kind, name)
    cost = cost_for(kind, name)
    per_ckpt = cost.state_bytes() + 40 * cost.kv_bytes_per_token
    # tight: room for about three checkpoints with their prefixes, so entries get evicted
    cap = 64 * per_ckpt if capacity == "ample" else 3 * per_ckpt
    cached = wrap(model, capacity=cap, poison_freed=True, cost=cost)
    script = Script(seed=zlib.crc32(name.encode()) % 1000)
    hits = 0
    for _ in range(9):
        ids = script.next()
        out = cached.serve(ids, max_new_tokens=3)
        ref = full_logits(model, ids + list(out.tokens[:-1]))
        L, h = len(ids), out.prefill.start
        hits += h > 0
        assert out.prefill.logits.shape[0] == L - h
        assert (out.prefill.logits - ref[h:L]).abs().max().item() < tol
        assert (out.logits - ref[L - 1:]).abs().max().item() < tol
        assert list(out.tokens) == ref[L - 1:].argmax(-1).tolist()
        cached.cache.check_payloads()
        script.record(ids, out.tokens)
    stats = cached.stats()
    assert hits >= 3 and stats.reused_tokens > 0, stats
    assert stats.checkpoints_skipped == 0
    if not cached.adapter.continues_prefill:       # HF Jamba: the one-token path really ran
        assert stats.single_token_steps > 0, stats
    if capacity == "tight":
        assert stats.evictions > 0, stats
    assert stats.bytes_held <= cap


@pytest.mark.parametrize("kind,name", [CASES[0], CASES[len(HF_FAMILIES)]])
@torch.no_grad()
def test_tolerance_catches_a_wrong_state(kind, name):
    """Negative control: resuming from zeroed recurrent states is outside the tolerance."""
    model = model_for(kind, name)
    a = adapter_for(model)
    ids = torch.randint(0, 200, (1, 30), generator=torch.Generator().manual_seed(3))
    full, _ = a.forward(ids, a.new_cache())
    _, cache = a.forward(ids[:, :20], a.new_cache())
    kv = [t.clone() for t in a.kv(cache)]
    zeros = [torch.zeros_like(t) for t in a.states(cache)]
    cache = a.restore(kv, zeros, 20)
    parts = []
    for s in range(20, 30):
        out, cache = a.forward(ids[:, s:s + 1], cache)
        parts.append(out)
    assert (torch.cat(parts, 1) - full[:, 20:]).abs().max().item() > tolerance(kind, name)

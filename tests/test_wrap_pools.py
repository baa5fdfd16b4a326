"""Pools and eviction in the wrapper: slots mirror the tree byte for byte, evicted entries
return their slots and release their tensors, and no request reads a slot that was freed
(freed slots are poisoned with NaN, so such a read would show in its logits)."""

from __future__ import annotations

import gc
import random

import pytest
import torch

from marconi.runtime.serve.cached_model import wrap
from marconi.runtime.serve.model_adapters.base import TensorSpec
from marconi.runtime.serve.pools import KVPool, StatePool
from wrap_helpers import Script, cost_for, full_logits, model_for

pytestmark = pytest.mark.usefixtures("one_torch_thread")

KV_SPECS = (TensorSpec(0, "k", "kv", (2, 4), torch.float32),
            TensorSpec(0, "v", "kv", (3,), torch.bfloat16))
STATE_SPECS = (TensorSpec(1, "ssm", "recurrent", (2, 3, 4), torch.float32),
               TensorSpec(1, "conv", "conv", (5, 3), torch.float16))


@pytest.mark.parametrize("seed", [0, 1])
def test_kv_pool_round_trip_matches_plain_indexing(seed):
    g = torch.Generator().manual_seed(seed)
    pool = KVPool(KV_SPECS, tokens=16, device="cpu")
    a, b = pool.alloc(5), pool.alloc(3)
    rows_a = [torch.randn(5, *s.row, generator=g).to(s.dtype) for s in KV_SPECS]
    rows_b = [torch.randn(3, *s.row, generator=g).to(s.dtype) for s in KV_SPECS]
    pool.write(a, rows_a)
    pool.write(b, rows_b)
    for buf, ra, rb in zip(pool.buffers, rows_a, rows_b):       # slow path: plain indexing
        assert torch.equal(buf[a, 0], ra) and torch.equal(buf[b, 0], rb)
    both = torch.cat([b, a])
    for got, ra, rb in zip(pool.read(both), rows_a, rows_b):
        assert torch.equal(got, torch.cat([rb, ra]))
    assert pool.used_bytes == 8 * pool.bytes_per_token
    assert pool.bytes_per_token == sum(s.nbytes for s in KV_SPECS) == 2 * 4 * 4 + 3 * 2


def test_state_pool_round_trip_poison_and_double_free():
    pool = StatePool(STATE_SPECS, slots=3, device="cpu", poison=True)
    states = [torch.randn(1, *s.row).to(s.dtype) for s in STATE_SPECS]
    slot = pool.alloc()
    pool.save(slot, states)
    loaded = pool.load(slot)
    assert all(torch.equal(x, y) for x, y in zip(loaded, states))
    loaded[0].add_(1.0)                      # a working copy, not a view of the pool
    assert torch.equal(pool.buffers[0][slot], states[0][0])
    pool.free(slot)
    assert all(torch.isnan(b[slot].float()).all() for b in pool.buffers)
    with pytest.raises(RuntimeError, match="freed twice"):
        pool.free(slot)
    assert [pool.alloc() for _ in range(3)] == [0, 1, 2]
    with pytest.raises(MemoryError):
        pool.alloc()


def _run_script(cached, model, seed: int, n: int):
    """Serve `n` scripted requests, checking outputs and slot bookkeeping after each."""
    script = Script(seed=seed)
    for _ in range(n):
        ids = script.next()
        out = cached.serve(ids, max_new_tokens=2)
        ref = full_logits(model, ids + list(out.tokens[:-1]))
        h = out.prefill.start
        assert torch.isfinite(out.prefill.logits).all() and torch.isfinite(out.logits).all()
        assert (out.prefill.logits - ref[h:len(ids)]).abs().max().item() < 1e-4
        assert list(out.tokens) == ref[len(ids) - 1:].argmax(-1).tolist()
        cached.cache.check_payloads()
        script.record(ids, out.tokens)


@pytest.mark.parametrize("kind,name", [("ref", "qwen3-next-tiny"), ("hf", "nemotron-h-tiny")])
def test_evicted_slots_return_and_are_never_read(kind, name):
    model, cost = model_for(kind, name), cost_for(kind, name)
    # room for three checkpoints and their prefixes (a branching request needs two new
    # ones beside the locked one it branches from): most requests evict, and freed
    # (NaN-poisoned) slots are handed to new entries again and again
    cap = 3 * (cost.state_bytes() + 40 * cost.kv_bytes_per_token)
    cached = wrap(model, capacity=cap, poison_freed=True, cost=cost)
    _run_script(cached, model, seed=5, n=14)
    s = cached.stats()
    assert s.evictions >= 5 and s.checkpoints_evicted >= 5 and s.hit_requests >= 3, s
    assert s.peak_occupancy <= 1.0
    # evicting everything returns every slot and leaves only the root
    assert cached.cache.evict(cap, 0)
    cached.cache.check_payloads()
    assert cached.kv_pool.slots.used == 0 and cached.state_pool.slots.used == 0
    assert cached.cache.kv_used == cached.cache.state_used == 0
    assert not cached.cache.kv_slots and not cached.cache.state_slot
    # poisoned pools still serve exact outputs after the purge
    _run_script(cached, model, seed=6, n=4)


def test_a_stale_slot_read_would_show():
    """Negative control for the poison: restoring from a freed slot gives NaN logits."""
    model, cost = model_for("ref", "qwen3-next-tiny"), cost_for("ref", "qwen3-next-tiny")
    cached = wrap(model, capacity="1MiB", poison_freed=True, cost=cost)
    ids = list(range(30))
    cached.prefill(ids)
    (node,) = cached.cache.root.children.values()
    cached.state_pool.free(cached.cache.state_slot[node])     # freed behind the tree's back
    out = cached.prefill(ids + [7, 8, 9])
    assert out.start == 30 and torch.isnan(out.logits).all()


def _tensors() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if issubclass(type(o), torch.Tensor))


def test_requests_leave_no_tensors_behind():
    """Working caches, snapshots and restored copies are released after each request:
    the only tensors that persist are the pools' buffers and the tree's slot lists."""
    model, cost = model_for("ref", "nemotron-h-tiny"), cost_for("ref", "nemotron-h-tiny")
    cached = wrap(model, capacity=3 * (cost.state_bytes() + 40 * cost.kv_bytes_per_token),
                  cost=cost)
    script = Script(seed=9)
    for _ in range(4):                                       # warm up caches of torch itself
        ids = script.next()
        script.record(ids, cached.serve(ids, max_new_tokens=2).tokens)
    before = _tensors() - len(cached.cache.kv_slots)
    for _ in range(8):
        ids = script.next()
        script.record(ids, cached.serve(ids, max_new_tokens=2).tokens)
    assert _tensors() - len(cached.cache.kv_slots) == before
    assert cached.stats().evictions > 0


def test_bytes_held_equal_pool_bytes_in_use():
    model, cost = model_for("ref", "kimi-linear-tiny"), cost_for("ref", "kimi-linear-tiny")
    cached = wrap(model, capacity="4MiB", cost=cost)
    rng = random.Random(2)
    base = [rng.randrange(256) for _ in range(16)]
    for i in range(5):
        cached.prefill(base + [rng.randrange(256) for _ in range(4 + i)])
    s = cached.stats()
    assert s.kv_bytes_held == s.cached_tokens * cost.kv_bytes_per_token \
        == cached.kv_pool.used_bytes
    assert s.state_bytes_held == s.checkpoints_held * cost.state_bytes() \
        == cached.state_pool.used_bytes
    assert s.bytes_held == s.kv_bytes_held + s.state_bytes_held

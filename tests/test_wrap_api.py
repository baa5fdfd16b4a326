"""`marconi.wrap`: what it accepts and refuses, the policies it runs, its statistics."""

from __future__ import annotations

import random

import pytest
import torch

from marconi.errors import PlanError, UnsupportedModelError, UserError
from marconi.runtime.serve.cached_model import CachedModel, wrap
from marconi.runtime.capacity import Capacity
from marconi.runtime.config import CacheConfig
from marconi.runtime.serve.model_adapters import ReferenceAdapter, adapter_for
from marconi.runtime.cache.policies import get_policy
from wrap_helpers import Script, cost_for, full_logits, left_pad, model_for

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_refuses_models_it_does_not_know():
    with pytest.raises(UnsupportedModelError, match="not a model marconi.wrap knows"):
        wrap(torch.nn.Linear(4, 4))


def test_refuses_a_hugging_face_model_that_is_not_a_supported_hybrid():
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, vocab_size=64)
    with pytest.raises(UnsupportedModelError, match="model_type 'llama'"):
        wrap(LlamaForCausalLM(cfg))


def test_refuses_a_cache_dtype_it_cannot_account_for():
    import copy
    model = copy.deepcopy(model_for("hf", "nemotron-h-tiny")).double()
    with pytest.raises(UnsupportedModelError, match=r"model: cache dtype torch.float64; "
                                                     r"expected one of float32, bfloat16"):
        wrap(model)


@pytest.mark.parametrize("policy,match", [
    pytest.param("vllm-all", "keeps a state every", id="dense-stride"),
    pytest.param("infinite", "no capacity limit", id="unbounded"),
    pytest.param("lru", "unknown policy", id="unknown"),
])
def test_refuses_policies_it_cannot_run(policy, match):
    kind, name = "ref", "qwen3-next-tiny"
    with pytest.raises(UserError, match=match):
        wrap(model_for(kind, name), policy=policy, cost=cost_for(kind, name))


def test_cost_model_must_match_the_cache_it_accounts_for():
    with pytest.raises(UserError, match="^cost: .*pools would not match"):
        wrap(model_for("ref", "qwen3-next-tiny"), cost=cost_for("ref", "nemotron-h-tiny"))


def _plan_for(cost, capacity: int):
    from marconi.runtime.plan.rules import default_plan
    return default_plan(cost.model, cost.fingerprint(), 1, None, capacity)


def test_plan_for_another_model_is_refused(tmp_path):
    from marconi.runtime.plan.plan_file import write_plan
    cost_a, cost_b = cost_for("ref", "qwen3-next-tiny"), cost_for("ref", "nemotron-h-tiny")
    plan = _plan_for(cost_a, 1 << 20)
    path = tmp_path / "runtime.yaml"
    write_plan(plan, path)
    cached = wrap(model_for("ref", "qwen3-next-tiny"), plan=str(path), cost=cost_a)
    assert cached.capacity.total_bytes == 1 << 20 and cached.policy.rules == plan
    for given in (str(path), plan):
        with pytest.raises(PlanError, match="cost_fingerprint"):
            wrap(model_for("ref", "nemotron-h-tiny"), plan=given, cost=cost_b)
    with pytest.raises(UserError, match="given with a plan"):
        wrap(model_for("ref", "qwen3-next-tiny"), plan=plan, policy="marconi", cost=cost_a)


def test_a_plan_made_from_the_config_file_is_accepted(tmp_path):
    """`marconi-plan examples/hf/X` names the model after its folder and wrap after the
    model's name_or_path: the fingerprint compares caches and costs, not names."""
    from marconi.passes import build_cost_model
    from marconi.runtime.plan.plan_file import write_plan
    from marconi.spec import load_model
    from marconi.units import DType
    from wrap_helpers import HF_DIR
    name = "nemotron-h-tiny"
    cli_cost = build_cost_model(load_model(HF_DIR / name), dtype=DType.FLOAT32)
    assert cli_cost.model != cost_for("hf", name).model
    write_plan(_plan_for(cli_cost, 1 << 20), tmp_path / "runtime.yaml")
    cached = wrap(model_for("hf", name), plan=str(tmp_path / "runtime.yaml"),
                  cost=cost_for("hf", name))
    assert cached.capacity.total_bytes == 1 << 20


@pytest.mark.parametrize("policy", ["planned", "marconi", "sglang", "vllm-align"])
def test_every_runnable_policy_is_exact(policy):
    kind, name = "ref", "kimi-linear-tiny"
    model, cost = model_for(kind, name), cost_for(kind, name)
    cached = wrap(model, policy=policy, poison_freed=True, cost=cost,
                  capacity=4 * (cost.state_bytes() + 60 * cost.kv_bytes_per_token))
    script = Script(seed=11, system=36, turn=(8, 40))   # past vllm-align's 32-token grid
    for _ in range(10):
        ids = script.next()
        out = cached.serve(ids, max_new_tokens=2)
        ref = full_logits(model, ids + list(out.tokens[:-1]))
        h = out.prefill.start
        assert (out.prefill.logits - ref[h:len(ids)]).abs().max().item() < 1e-4
        assert list(out.tokens) == ref[len(ids) - 1:].argmax(-1).tolist()
        cached.cache.check_payloads()
        script.record(ids, out.tokens)
    s = cached.stats()
    assert s.policy == policy and s.hit_requests > 0 and s.checkpoints_skipped == 0


def test_stats_count_what_happened():
    """Three requests sharing a 20-token prefix under Marconi's admission: the second
    sighting checkpoints the branch point (a split prefill), the third hits it."""
    kind, name = "ref", "nemotron-h-tiny"
    model, cost = model_for(kind, name), cost_for(kind, name)
    cached = wrap(model, policy="sglang", cost=cost)
    rng = random.Random(0)
    shared = [rng.randrange(256) for _ in range(20)]
    reqs = [shared + [rng.randrange(256) for _ in range(k)] for k in (5, 7, 9)]
    outs = [cached.prefill(r) for r in reqs]
    assert [o.start for o in outs] == [0, 0, 20]
    s = cached.stats()
    assert (s.requests, s.hit_requests, s.input_tokens, s.reused_tokens) == (3, 1, 81, 20)
    assert s.prefill_tokens == 61 and s.token_hit_rate == pytest.approx(20 / 81)
    assert s.split_forwards == 1 and s.forward_calls == 4        # 25 | 20 + 7 | 9
    assert s.flop_savings == pytest.approx(
        cost.saved_flops(20, 9) / sum(cost.prefill_flops(len(r), 0) for r in reqs))
    # held: the tree 0-20 (state), 20-25 (state), 20-27 (state), 20-29 (state)
    assert (s.cached_tokens, s.checkpoints_held) == (20 + 5 + 7 + 9, 4)
    assert s.bytes_held == 41 * cost.kv_bytes_per_token + 4 * cost.state_bytes()
    assert s.split_extra_flops == pytest.approx(
        cost.prefill_flops(20, 0) + cost.prefill_flops(7, 20) - cost.prefill_flops(27, 0))


@pytest.mark.parametrize("ids,match", [
    pytest.param([], "empty", id="empty"),
    pytest.param([1, 256, 2], r"id 256 is outside the vocabulary; expected ids in \[0, 256\)",
                 id="past-vocab"),
    pytest.param([3, -1], "id -1 is outside the vocabulary", id="negative"),
    pytest.param([[1, 2], [3, 4]], "expected one sequence of integer", id="nested-list"),
    pytest.param([1.5, 2.0], "expected one sequence of integer", id="floats"),
    pytest.param(torch.zeros(2, 3, dtype=torch.long), "use prefill_batch", id="batch-2"),
])
def test_bad_input_ids_are_refused_before_the_cache_changes(ids, match):
    kind, name = "ref", "nemotron-h-tiny"
    cached, twin = (wrap(model_for(kind, name), policy="sglang", cost=cost_for(kind, name))
                    for _ in range(2))
    prompt = list(range(12))
    for c in (cached, twin):
        c.prefill(prompt + [40, 41])
        c.prefill(prompt + [50])
    before = cached.stats()
    with pytest.raises(UserError, match=match):
        cached.serve(ids, max_new_tokens=2)
    assert cached.stats() == before and cached.clock.now == 2.0
    after, expected = cached.prefill(prompt + [60]), twin.prefill(prompt + [60])
    assert after.start == expected.start == 12           # the cache serves on as if untouched
    assert cached.stats() == twin.stats()


class _OneTokenAfterHit(ReferenceAdapter):
    """The reference model presented as a family whose multi-token forward cannot resume
    a restored state (as HF Jamba): exercises the one-token and recompute paths."""

    continues_prefill = False


def test_a_family_that_cannot_continue_runs_token_by_token_and_recomputes():
    kind, name = "ref", "qwen3-next-tiny"
    model, cost = model_for(kind, name), cost_for(kind, name)
    adapter = _OneTokenAfterHit(model)
    cap = Capacity.shared(1 << 22)
    cached = CachedModel(adapter, cost, get_policy("sglang"), CacheConfig(capacity=cap))
    rng = random.Random(1)
    shared = [rng.randrange(256) for _ in range(16)]
    reqs = [shared + [rng.randrange(256) for _ in range(k)] for k in (4, 6, 8)]
    for r in reqs:
        out = cached.prefill(r)
        ref = full_logits(model, r)
        assert (out.logits - ref[out.start:]).abs().max().item() < 1e-4
    s = cached.stats()
    # 2nd request: a miss with a checkpoint at 16, reached by recomputing 16 tokens;
    # 3rd: a hit at 16, then its 8 new tokens one at a time
    assert s.recomputed_tokens == 16 and s.single_token_steps == 8
    assert s.forward_calls == 1 + 2 + 8
    assert s.split_extra_flops == pytest.approx(
        cost.prefill_flops(16, 0) + sum(cost.prefill_flops(1, t) for t in range(16, 24))
        - cost.prefill_flops(8, 16))


def test_generate_of_a_padded_batch_equals_serving_each_row():
    """`generate` serves the rows of a batch one by one, unpadded: each row's tokens and
    logits are `serve`'s for that row alone, and the statistics are the same requests'."""
    kind, name = "ref", "falcon-h1-tiny"
    model, cost = model_for(kind, name), cost_for(kind, name)
    rng = random.Random(3)
    shared = [rng.randrange(256) for _ in range(12)]
    batch = [shared + [rng.randrange(256) for _ in range(k)] for k in (3, 5, 4, 6)]
    one, many = wrap(model, cost=cost), wrap(model, cost=cost)
    singles = [one.serve(ids, max_new_tokens=3) for ids in batch]
    ids, mask = left_pad(batch, pad=0)
    out = many.generate(ids, attention_mask=mask, max_new_tokens=3,
                        return_dict_in_generate=True, output_logits=True)
    width = ids.shape[1]
    assert out.sequences.shape == (4, width + 3) and out.sequences.dtype == torch.int64
    assert torch.equal(out.sequences[:, :width], ids) and out.scores is None
    for b, single in enumerate(singles):
        assert out.sequences[b, width:].tolist() == list(single.tokens)
        assert torch.equal(torch.stack([step[b] for step in out.logits]), single.logits)
    assert out.restored_tokens == tuple(s.prefill.start for s in singles)
    assert one.stats() == many.stats()
    # the second row sees the shared prefix a second time, which checkpoints the branch
    # point; the later rows restore it
    assert out.restored_tokens == (0, 0, len(shared), len(shared)), out.restored_tokens


def test_prefill_batch_hits_what_an_earlier_sequence_cached():
    """A follow-up (an earlier input and more) restores the earlier input's end state; an
    exact repeat cannot, because the logits of its last position must be computed."""
    kind, name = "ref", "falcon-h1-tiny"
    first = list(range(10, 30))
    cached = wrap(model_for(kind, name), cost=cost_for(kind, name))
    starts = [p.start for p in cached.prefill_batch([first, first + [7, 8, 9], first])]
    assert starts == [0, len(first), 0]
    s = cached.stats()
    assert (s.hit_requests, s.reused_tokens) == (1, len(first))


def test_adapter_layout_bytes_equal_the_cost_model_for_every_reference_family():
    for name in ("jamba-tiny", "nemotron-h-tiny", "qwen3-next-tiny", "kimi-linear-tiny",
                 "falcon-h1-tiny"):
        layout, cost = adapter_for(model_for("ref", name)).layout(), cost_for("ref", name)
        assert layout.kv_bytes_per_token == cost.kv_bytes_per_token
        assert layout.state_bytes == cost.state_bytes()


def test_wrap_is_public_and_lazy():
    import subprocess
    import sys

    code = "import sys, marconi; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_public_wrap_binds_the_planner_for_online_planning():
    """`marconi.wrap`'s default `planned` plans online with the planner; the runtime's own
    `wrap`, given no re-planner, keeps the default rules."""
    import marconi
    from marconi.planner.plan import replan_online
    model, cost = model_for("ref", "nemotron-h-tiny"), cost_for("ref", "nemotron-h-tiny")
    assert type(marconi.wrap(model, cost=cost).policy).replanner is replan_online
    assert type(wrap(model, cost=cost).policy).replanner is None
    assert type(marconi.wrap(model, policy="sglang", cost=cost).policy).name == "sglang"

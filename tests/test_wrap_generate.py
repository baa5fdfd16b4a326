"""`CachedModel.generate` is a drop-in for transformers' `generate` (greedy search).

Every check compares against `model.generate` of the unwrapped Hugging Face model, called
with the same arguments: the full `[B, W + new]` ids with `torch.equal`, on left-padded
batches of rows of different lengths, before and after the cache holds their prefixes;
EOS stopping and the padding of finished rows; the `return_dict_in_generate` fields; and
the arguments it refuses instead of ignoring.
"""

from __future__ import annotations

import random

import pytest
import torch

from marconi.errors import UserError
from marconi.runtime.serve.cached_model import CachedModel, wrap
from marconi.runtime.capacity import Capacity
from marconi.runtime.config import CacheConfig
from marconi.runtime.serve.generation import GenerateOutput
from marconi.runtime.serve.model_adapters import ReferenceAdapter
from marconi.runtime.cache.policies import get_policy
from wrap_helpers import cost_for, left_pad, model_for

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAMILIES = [pytest.param(n, id=n) for n in ("nemotron-h-tiny", "falcon-h1-tiny",
                                              "qwen3-next-tiny")]


def _batch(seed: int, suffixes=(4, 9, 2), shared: int = 12):
    """Rows sharing a `shared`-id prefix (a system prompt), then distinct suffixes. Ids
    start at 3: none is a pad (0), BOS (1) or EOS (2) id of the tiny configs."""
    rng = random.Random(seed)
    prefix = [rng.randrange(3, 256) for _ in range(shared)]
    return [prefix + [rng.randrange(3, 256) for _ in range(k)] for k in suffixes]


@torch.no_grad()
def hf_generate(model, ids, **kwargs):
    return model.generate(ids, **kwargs)


@pytest.mark.parametrize("name", FAMILIES)
def test_generate_equals_transformers_on_a_left_padded_batch_and_hits_when_repeated(name):
    model = model_for("hf", name)
    rows = _batch(seed=1)
    ids, mask = left_pad(rows, pad=0)
    kwargs = dict(attention_mask=mask, max_new_tokens=6, do_sample=False)
    expected = hf_generate(model, ids, **kwargs)
    assert expected.shape == (3, ids.shape[1] + 6)

    cached = wrap(model, cost=cost_for("hf", name))
    first = cached.generate(ids, **kwargs)
    assert first.dtype == torch.int64 and torch.equal(first, expected)
    before = cached.stats()
    again = cached.generate(ids, **kwargs)
    after = cached.stats()
    assert torch.equal(again, expected)
    # every row of the repeat restores at least the shared prefix (checkpointed at the
    # branch point the first call's second row revealed)
    assert after.hit_requests - before.hit_requests == 3, (before, after)
    assert after.reused_tokens - before.reused_tokens >= 3 * 12, (before, after)
    assert after.requests == 6 and after.prefill_tokens < after.input_tokens


def test_a_follow_up_turn_hits_and_still_equals_transformers():
    """The next turn of each conversation (its output and new user ids) restores the state
    the first turn left, on different rows of a differently padded batch."""
    name = "nemotron-h-tiny"
    model = model_for("hf", name)
    rows = _batch(seed=2, suffixes=(3, 8, 5))
    ids, mask = left_pad(rows, pad=0)
    cached = wrap(model, cost=cost_for("hf", name))
    out = cached.generate(ids, attention_mask=mask, max_new_tokens=4)
    rng = random.Random(5)
    turns = [r + out[b, ids.shape[1]:].tolist() + [rng.randrange(3, 256) for _ in range(b + 2)]
             for b, r in enumerate(rows)]
    ids2, mask2 = left_pad(turns, pad=0)
    got = cached.generate(ids2, attention_mask=mask2, max_new_tokens=4,
                          return_dict_in_generate=True)
    assert torch.equal(got.sequences, hf_generate(model, ids2, attention_mask=mask2,
                                                  max_new_tokens=4))
    # each follow-up restores at least its own first turn's input (past the shared prefix)
    assert all(h >= len(r) for h, r in zip(got.restored_tokens, rows)), got.restored_tokens


def test_without_a_mask_the_pad_id_is_masked_as_transformers_infers():
    name = "nemotron-h-tiny"                      # pad_token_id 0, eos_token_id 2
    model = model_for("hf", name)
    ids, _ = left_pad(_batch(seed=3, suffixes=(1, 6, 3)), pad=0)
    expected = hf_generate(model, ids, max_new_tokens=3)
    assert torch.equal(wrap(model, cost=cost_for("hf", name)).generate(ids, max_new_tokens=3),
                       expected)


@pytest.mark.filterwarnings("ignore:Using the model-agnostic default")
def test_default_budget_is_transformers_default():
    """No max_new_tokens: 20 new ids, as transformers 5.24 defaults."""
    name = "falcon-h1-tiny"
    model = model_for("hf", name)
    ids, mask = left_pad(_batch(seed=4, suffixes=(2, 5)), pad=0)
    expected = hf_generate(model, ids, attention_mask=mask)
    got = wrap(model, cost=cost_for("hf", name)).generate(ids, attention_mask=mask)
    assert got.shape == (2, ids.shape[1] + 20) and torch.equal(got, expected)


def _stop(case: str, new: torch.Tensor) -> dict:
    """EOS settings whose stops fall inside the budget, taken from the ids the rows emit
    without any EOS (`new` [3, 8])."""
    if case == "one-row-stops":                       # pad_token_id: the model's (0)
        return dict(eos_token_id=int(new[0, 2]))
    if case == "every-row-stops":
        return dict(eos_token_id=[int(new[0, 2]), int(new[1, 1]), int(new[2, 0])],
                    pad_token_id=7)
    return dict(eos_token_id=int(new[1, 4]), pad_token_id=None)  # pad: the first EOS id


@pytest.mark.parametrize("case", ["one-row-stops", "every-row-stops", "pad-is-eos"])
def test_eos_stops_rows_and_pads_them_as_transformers(case):
    name = "nemotron-h-tiny"
    model = model_for("hf", name)
    ids, mask = left_pad(_batch(seed=1), pad=0)
    width = ids.shape[1]
    plain = hf_generate(model, ids, attention_mask=mask, max_new_tokens=8)
    kwargs = dict(attention_mask=mask, max_new_tokens=8, return_dict_in_generate=True,
                  output_scores=True, output_logits=True, **_stop(case, plain[:, width:]))
    expected = hf_generate(model, ids, **kwargs)
    cached = wrap(model, cost=cost_for("hf", name))
    for _ in range(2):                                     # a miss, then hits
        got = cached.generate(ids, **kwargs)
        assert isinstance(got, GenerateOutput)
        assert torch.equal(got.sequences, expected.sequences)
        for field in ("scores", "logits"):
            ours, theirs = getattr(got, field), getattr(expected, field)
            assert len(ours) == len(theirs) == got.sequences.shape[1] - width
            for a, b in zip(ours, theirs):
                assert a.shape == b.shape == (3, 256) and a.dtype == b.dtype == torch.float32
                assert (a - b).abs().max().item() < 1e-4
    if case == "every-row-stops":              # the batch ends when its last row stops
        assert expected.sequences.shape[1] < width + 8
    else:                                      # a stopped row is padded to the end
        assert expected.sequences.shape[1] == width + 8
        assert not torch.equal(expected.sequences, plain)
    assert cached.stats().hit_requests >= 3


def test_return_dict_fields_follow_the_flags():
    name = "qwen3-next-tiny"                      # its config sets no pad or EOS id
    model = model_for("hf", name)
    ids, mask = left_pad(_batch(seed=6, suffixes=(2, 4)), pad=0)
    cached = wrap(model, cost=cost_for("hf", name))
    plain = cached.generate(ids, attention_mask=mask, max_new_tokens=2, output_scores=True)
    assert isinstance(plain, torch.Tensor)           # output_* without return_dict: ids only
    out = cached.generate(ids, attention_mask=mask, max_new_tokens=2, output_scores=True,
                          return_dict_in_generate=True)
    ref = hf_generate(model, ids, attention_mask=mask, max_new_tokens=2, output_scores=True,
                      return_dict_in_generate=True)
    assert ref.logits is None and out.logits is None and len(out.scores) == len(ref.scores)
    assert torch.equal(out.sequences, plain) and torch.equal(out.sequences, ref.sequences)


# --------------------------------------------------------------------------- refusals
class _SettingsAdapter(ReferenceAdapter):
    """The reference model carrying generation settings, as a Hugging Face model does."""

    settings: dict = {}

    def generation_settings(self) -> dict:
        return dict(self.settings)


def _ref_cached(settings=None) -> CachedModel:
    kind, name = "ref", "nemotron-h-tiny"
    adapter = _SettingsAdapter(model_for(kind, name))
    adapter.settings = settings or {}
    return CachedModel(adapter, cost_for(kind, name), get_policy("sglang"),
                       CacheConfig(capacity=Capacity.shared(1 << 22)))


IDS, MASK = left_pad([[5, 6, 7, 8], [9, 10]], pad=0)


@pytest.mark.parametrize("kwargs,match", [
    pytest.param(dict(do_sample=True), r"^do_sample: True; .*greedy.*expected do_sample=False",
                 id="sampling"),
    pytest.param(dict(num_beams=4), r"^num_beams: 4; .*expected num_beams=1", id="beams"),
    pytest.param(dict(repetition_penalty=1.3), r"^repetition_penalty: 1.3; .*expected "
                 r"repetition_penalty=1.0", id="processor"),
    pytest.param(dict(min_new_tokens=3), r"^min_new_tokens: 3", id="min-new-tokens"),
    pytest.param(dict(temperature=0.7), r"^temperature: 0.7 is only read when sampling",
                 id="sampling-only"),
    pytest.param(dict(output_attentions=True), r"^output_attentions: True", id="attentions"),
    pytest.param(dict(streamer=object()), r"^streamer: not supported.*expected one of "
                 r"attention_mask, max_new_tokens", id="unknown"),
    pytest.param(dict(max_new_tokens=0), r"^max_new_tokens: 0; expected ≥ 1", id="no-budget"),
    pytest.param(dict(max_length=4), r"^max_length: 4 is not longer than the input \(4 ids",
                 id="max-length-short"),
])
def test_unsupported_arguments_are_refused_before_the_cache_changes(kwargs, match):
    cached = _ref_cached()
    with pytest.raises(UserError, match=match):
        cached.generate(IDS, attention_mask=MASK, **kwargs)
    assert cached.stats().requests == 0 and cached.clock.now == 0.0


@pytest.mark.parametrize("ids,mask,match", [
    pytest.param(IDS.flip(1), MASK.flip(1), r"row 1 is not left-padded", id="right-padded"),
    pytest.param(IDS, torch.tensor([[1, 0, 1, 1], [0, 0, 1, 1]]), r"row 0 is not left-padded",
                 id="hole"),
    pytest.param(IDS, torch.tensor([[1, 1, 1, 1], [0, 0, 0, 0]]), r"row 1 masks every token",
                 id="empty-row"),
    pytest.param(IDS, MASK[:, 1:], r"attention_mask: shape \(2, 3\); expected .*\(2, 4\)",
                 id="mask-shape"),
    pytest.param(IDS, MASK * 2, r"values other than 0 and 1", id="mask-values"),
    pytest.param(IDS[0], None, r"input_ids: shape \(4,\); expected a LongTensor \[batch, "
                 r"length\]", id="one-dimensional"),
    pytest.param(IDS.float(), MASK, r"dtype torch.float32; expected integer ids", id="floats"),
    pytest.param(torch.tensor([[3, 256]]), None, r"id 256 is outside the vocabulary",
                 id="past-vocab"),
])
def test_bad_batches_are_refused_before_the_cache_changes(ids, mask, match):
    cached = _ref_cached()
    cached.generate(torch.tensor([[5, 6, 7]]), max_new_tokens=1)
    before = cached.stats()
    with pytest.raises(UserError, match=match):
        cached.generate(ids, attention_mask=mask, max_new_tokens=2)
    assert cached.stats() == before


def test_an_inferred_mask_with_a_hole_names_the_pad_id():
    cached = _ref_cached({"pad_token_id": 0})
    with pytest.raises(UserError, match=r"row 0 is not left-padded .*inferred from "
                                        r"pad_token_id 0.*pass attention_mask"):
        cached.generate(torch.tensor([[5, 0, 7]]), max_new_tokens=1)
    assert cached.stats().requests == 0


def test_the_models_own_settings_are_read_and_refused_or_overridden():
    sampling = _ref_cached({"do_sample": True, "temperature": 0.6, "top_p": 0.9})
    with pytest.raises(UserError, match=r"^do_sample: True in the model's generation_config; "
                                        r".*pass do_sample=False"):
        sampling.generate(IDS, attention_mask=MASK, max_new_tokens=2)
    # as in transformers, a call's do_sample=False wins and the sampling knobs are unused
    greedy = _ref_cached().generate(IDS, attention_mask=MASK, max_new_tokens=2)
    assert torch.equal(sampling.generate(IDS, attention_mask=MASK, max_new_tokens=2,
                                         do_sample=False), greedy)
    # the model's max_new_tokens and EOS id apply when the call sets none
    first = int(greedy[1, 4])
    stopping = _ref_cached({"max_new_tokens": 2, "eos_token_id": first, "pad_token_id": 0})
    assert stopping.generate(IDS, attention_mask=MASK)[1].tolist() == \
        [0, 0, 9, 10, first, 0]
    # a call's eos_token_id=None turns stopping off, as it does in transformers
    assert torch.equal(stopping.generate(IDS, attention_mask=MASK, eos_token_id=None), greedy)

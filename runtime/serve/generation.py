"""What `CachedModel.generate` takes and returns: transformers' `generate` contract, greedy.

`cached.generate(input_ids, attention_mask=None, max_new_tokens=…, …)` answers what
`model.generate` of transformers 5.24 answers for the same call, for the greedy search it
runs when nothing asks for more (generation/utils.py `GenerationMixin.generate`, `_sample`):

- **settings**: a call's arguments override the model's own `generation_config` field by
  field; `eos_token_id` may be one id or several; `pad_token_id` defaults to the first
  EOS id; without `max_new_tokens` or `max_length` 20 new tokens, capped by
  `max_position_embeddings` (`_prepare_generated_length`);
- **padding**: decoder-only inputs are left-padded; a row's real tokens are those the
  attention mask keeps. Without a mask, one is inferred from `pad_token_id` when the pad
  id occurs in the input and is not an EOS id (`_prepare_attention_mask_for_generation`);
- **stopping**: a row stops after it emits an EOS id; later steps give it `pad_token_id`;
  the batch stops when every row has stopped or after the new-token budget;
- **result**: `[B, W + T]` long ids (the padded input, then T new tokens per row), or with
  `return_dict_in_generate=True` a `GenerateOutput` holding the fields of transformers'
  `GenerateDecoderOnlyOutput` the wrapper supports (`sequences`, `scores`, `logits`).

Everything that would make transformers choose or score tokens otherwise (sampling, beams,
a logits processor, another stop) is refused with a `UserError` naming the argument, from
a call or from the model's `generation_config`, rather than ignored. The wrapper serves
the rows one after another, each unpadded through the prefix cache (`CachedModel.serve`).
"""

from __future__ import annotations

import dataclasses
import operator
from typing import Any, Mapping

import torch
from torch import Tensor

from marconi.errors import UserError

DEFAULT_NEW_TOKENS = 20      # transformers' global default `max_length`, counted as new tokens

# Settings that make transformers decode or score otherwise than plain greedy search, each
# with the values that leave greedy search alone (`_get_logits_processor`,
# `_get_stopping_criteria`, `get_generation_mode`). None is "unset" throughout.
GREEDY_ONLY: dict[str, tuple] = {
    "do_sample": (None, False),
    "num_beams": (None, 1),
    "num_return_sequences": (None, 1),
    "penalty_alpha": (None,),
    "prompt_lookup_num_tokens": (None,),
    "guidance_scale": (None, 1.0),
    "sequence_bias": (None,),
    "repetition_penalty": (None, 1.0),
    "no_repeat_ngram_size": (None, 0),
    "bad_words_ids": (None,),
    "min_length": (None, 0),
    "min_new_tokens": (None, 0),
    "forced_bos_token_id": (None,),
    "forced_eos_token_id": (None,),
    "remove_invalid_values": (None, False),
    "exponential_decay_length_penalty": (None,),
    "suppress_tokens": (None,),
    "begin_suppress_tokens": (None,),
    "watermarking_config": (None,),
    "renormalize_logits": (None, False),
    "max_time": (None,),
    "stop_strings": (None,),
    "use_cache": (None, True),
    "output_attentions": (None, False),
    "output_hidden_states": (None, False),
}
# Read only when sampling: transformers' greedy search ignores them, so a model's own
# generation_config may set them; a call that passes one is refused (it would be ignored).
SAMPLING_ONLY = ("temperature", "top_k", "top_p", "min_p", "typical_p", "epsilon_cutoff",
                 "eta_cutoff", "top_h")
SUPPORTED = ("attention_mask", "max_new_tokens", "max_length", "eos_token_id", "pad_token_id",
             "return_dict_in_generate", "output_scores", "output_logits")


@dataclasses.dataclass(frozen=True)
class GenerateOutput:
    """`generate(…, return_dict_in_generate=True)`: transformers' `GenerateDecoderOnlyOutput`
    fields that the wrapper supports, and the prefix each row restored from the cache."""

    sequences: Tensor                        # [B, W + T] int64: padded input, new tokens
    scores: tuple[Tensor, ...] | None        # T × [B, V] float32 (with output_scores)
    logits: tuple[Tensor, ...] | None        # T × [B, V] float32 (with output_logits)
    restored_tokens: tuple[int, ...]         # per row: input tokens served from the cache


@dataclasses.dataclass(frozen=True)
class GenerationArgs:
    """One `generate` call's settings, merged with the model's and checked."""

    max_new_tokens: int | None
    max_length: int | None
    eos_token_ids: tuple[int, ...]
    pad_token_id: int | None                 # the first EOS id when unset
    return_dict_in_generate: bool
    output_scores: bool
    output_logits: bool

    @property
    def keeps_scores(self) -> bool:
        return self.return_dict_in_generate and (self.output_scores or self.output_logits)

    def new_tokens(self, width: int, max_positions: int | None) -> int:
        """The new-token budget for inputs `width` ids wide (padding included)."""
        if self.max_new_tokens is not None:
            if self.max_new_tokens < 1:
                raise UserError("max_new_tokens", f"{self.max_new_tokens}; expected ≥ 1")
            return self.max_new_tokens
        if self.max_length is not None:
            if self.max_length <= width:
                raise UserError("max_length", f"{self.max_length} is not longer than the input "
                                f"({width} ids, padding included); expected more than {width},"
                                " or max_new_tokens")
            return self.max_length - width
        total = width + DEFAULT_NEW_TOKENS
        if max_positions is not None:
            total = min(total, max_positions)
        if total <= width:
            raise UserError("input_ids", f"{width} ids wide, as long as the model's "
                            f"max_position_embeddings {max_positions}; expected shorter inputs")
        return total - width


def parse_generation_args(settings: Mapping[str, Any],
                          kwargs: Mapping[str, Any]) -> GenerationArgs:
    """Merge a call's `kwargs` over the model's generation `settings`, as transformers does,
    refusing what greedy search without logits processors cannot answer."""
    for name, value in kwargs.items():
        if name in GREEDY_ONLY:
            if not _neutral(value, GREEDY_ONLY[name]):
                raise UserError(name, f"{value!r}; marconi's generate runs greedy search only; "
                                f"expected {_expected(name)}")
        elif name in SAMPLING_ONLY:
            if value is not None:
                raise UserError(name, f"{value!r} is only read when sampling, and marconi's "
                                f"generate runs greedy search only; expected no {name}")
        elif name not in SUPPORTED:
            raise UserError(name, "not supported by marconi's generate; expected one of "
                            f"{', '.join(SUPPORTED)}, or " + ", ".join(
                                f"{k}={GREEDY_ONLY[k][1]!r}" for k in ("do_sample", "num_beams")))
    for name, allowed in GREEDY_ONLY.items():
        if name not in kwargs and not _neutral(settings.get(name), allowed):
            raise UserError(name, f"{settings[name]!r} in the model's generation_config; "
                            "marconi's generate runs greedy search only; expected "
                            f"{_expected(name)} (pass {name}={allowed[-1]!r} to override it)")

    def pick(name):             # a call's value, even None, replaces the model's
        return kwargs[name] if name in kwargs else settings.get(name)

    eos = _eos_ids(pick("eos_token_id"))
    pad = pick("pad_token_id")
    if pad is not None:
        pad = _token_id("pad_token_id", pad)
    elif eos:
        pad = eos[0]
    lengths = {n: pick(n) for n in ("max_new_tokens", "max_length")}
    for name, value in lengths.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise UserError(name, f"{value!r}; expected a number of tokens")
    return GenerationArgs(lengths["max_new_tokens"], lengths["max_length"], eos, pad,
                          bool(pick("return_dict_in_generate")), bool(pick("output_scores")),
                          bool(pick("output_logits")))


def unpad(input_ids, attention_mask, args: GenerationArgs) -> tuple[Tensor, list[list[int]]]:
    """(input_ids as int64 [B, W], each row's real ids), checked for left padding."""
    ids = _batch("input_ids", input_ids)
    inferred = attention_mask is None
    mask = _inferred_mask(ids, args) if inferred else \
        _batch("attention_mask", attention_mask).to(ids.device)
    if mask.shape != ids.shape:
        raise UserError("attention_mask", f"shape {tuple(mask.shape)}; expected the shape of "
                        f"input_ids, {tuple(ids.shape)}")
    if ((mask != 0) & (mask != 1)).any():
        raise UserError("attention_mask", "values other than 0 and 1; expected 1 for a real "
                        "token and 0 for padding")
    rows = []
    for b in range(ids.shape[0]):
        keep = mask[b].bool()
        n = int(keep.sum())
        if n == 0:
            raise UserError("attention_mask", f"row {b} masks every token; expected at least "
                            "one real token per row")
        if not keep[-n:].all():
            hint = (f" (inferred from pad_token_id {args.pad_token_id}, as transformers "
                    "infers it: pass attention_mask where that id is a real token)"
                    if inferred else "")
            raise UserError("attention_mask", f"row {b} is not left-padded (a 0 after a 1)"
                            f"{hint}; expected padding on the left, as transformers pads "
                            "decoder-only models")
        rows.append(ids[b, -n:].tolist())
    return ids, rows


def assemble(ids: Tensor, tokens: list[tuple[int, ...]], logits: list[Tensor | None],
             restored: list[int], args: GenerationArgs):
    """The answer of one call: [B, W + T] ids, or a `GenerateOutput`.

    tokens[b]: row b's new ids (ending at its EOS, if any); logits[b]: [T, V] for every
    step of the batch (rows that stopped early carry on past their EOS), or None."""
    steps = max(len(t) for t in tokens)
    pad = args.pad_token_id
    new = torch.tensor([list(t) + [pad] * (steps - len(t)) for t in tokens],
                       dtype=torch.int64).reshape(len(tokens), steps)
    sequences = torch.cat([ids, new.to(ids.device)], dim=1)
    if not args.return_dict_in_generate:
        return sequences
    per_step = None
    if args.keeps_scores:
        stacked = torch.stack([row.to(ids.device) for row in logits])      # [B, T, V]
        per_step = tuple(stacked[:, t] for t in range(steps))
    return GenerateOutput(sequences, per_step if args.output_scores else None,
                          per_step if args.output_logits else None, tuple(restored))


# ---------------------------------------------------------------------- helpers
def _neutral(value, allowed: tuple) -> bool:
    """Whether `value` is one of `allowed` (a bool only where a bool is allowed)."""
    if value is None:
        return None in allowed
    return any(a is not None and isinstance(value, bool) == isinstance(a, bool) and value == a
               for a in allowed)


def _expected(name: str) -> str:
    allowed = [a for a in GREEDY_ONLY[name] if a is not None]
    return f"{name}={allowed[0]!r} or unset" if allowed else f"no {name}"


def _token_id(name: str, value) -> int:
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    try:
        return operator.index(value)
    except TypeError:
        raise UserError(name, f"{value!r}; expected a token id") from None


def _eos_ids(value) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, Tensor):
        value = value.reshape(-1).tolist()
    if isinstance(value, (list, tuple)):
        return tuple(_token_id("eos_token_id", v) for v in value)
    return (_token_id("eos_token_id", value),)


def _batch(name: str, value) -> Tensor:
    """`value` as an int64 [B, W] tensor on its device (a tensor or a rectangular list)."""
    if not isinstance(value, Tensor):
        try:
            value = torch.tensor(value)
        except (TypeError, ValueError, RuntimeError):
            raise UserError(name, f"{value!r:.80}; expected a LongTensor [batch, length]") \
                from None
    if value.dim() != 2 or value.numel() == 0:
        raise UserError(name, f"shape {tuple(value.shape)}; expected a LongTensor [batch, "
                        "length], as transformers' generate (one sequence: ids[None], or "
                        "CachedModel.serve)")
    if value.dtype.is_floating_point or value.dtype.is_complex:
        raise UserError(name, f"dtype {value.dtype}; expected integer ids")
    return value.to(torch.int64)


def _inferred_mask(ids: Tensor, args: GenerationArgs) -> Tensor:
    """transformers' mask for a call without one: the non-pad ids, when the pad id occurs in
    the input and is not an EOS id; else every id."""
    pad = args.pad_token_id
    if pad is not None and (ids == pad).any() and pad not in args.eos_token_ids:
        return (ids != pad).long()
    return torch.ones_like(ids)

"""Shared pieces of the wrap tests: tiny models of every family, seeded request scripts,
and the uncached reference (a full forward from token 0, no cache object at all)."""

from __future__ import annotations

import functools
import logging
import random
from pathlib import Path

import torch

from marconi.passes.reference_model import build
from marconi.spec import load_model, parse_spec

REPO = Path(__file__).resolve().parents[1]
HF_DIR = REPO / "examples" / "hf"

HF_FAMILIES = ("jamba-tiny", "bamba-tiny", "nemotron-h-tiny", "falcon-h1-tiny",
               "granite-4.0-h-tiny-moe", "zamba2-tiny", "qwen3-next-tiny", "qwen3.5-tiny",
               "kimi-linear-tiny")

# examples/hf has no Bamba: a tiny one in the same spirit (d_model 64, vocab 256), with
# attention at layers 1 and 3 of 4 and Mamba2 (2 groups) elsewhere
BAMBA_TINY = {"model_type": "bamba", "hidden_size": 64, "num_hidden_layers": 4,
              "attn_layer_indices": [1, 3], "intermediate_size": 128,
              "num_attention_heads": 4, "num_key_value_heads": 2, "mamba_n_heads": 8,
              "mamba_d_head": 16, "mamba_d_state": 16, "mamba_n_groups": 2,
              "mamba_chunk_size": 16, "vocab_size": 256}
# reference twins covering every recurrent kind: mamba1, mamba2, GDN, KDA + MLA, parallel
REF_FAMILIES = ("jamba-tiny", "nemotron-h-tiny", "qwen3-next-tiny", "kimi-linear-tiny",
                "falcon-h1-tiny")

# the two kinds no example uses: gated linear attention and LFM2's short conv
LINEAR_SPEC = {
    "name": "linear-conv-tiny", "d_model": 32, "vocab_size": 256,
    "blocks": {"L": {"kind": "linear_attention", "n_heads": 2, "head_dim": 16, "d_conv": 4},
               "C": {"kind": "short_conv", "d_conv": 3},
               "*": {"kind": "attention", "n_heads": 2, "n_kv_heads": 1, "head_dim": 16},
               "-": {"kind": "mlp", "d_ff": 64, "gated": True}},
    "pattern": "L-C*L-",
}


@functools.lru_cache(maxsize=None)
def hf_model(name: str):
    from transformers import AutoConfig, AutoModelForCausalLM, BambaConfig
    logging.getLogger("transformers").setLevel(logging.ERROR)
    if name == "bamba-tiny":
        cfg = BambaConfig(**{k: v for k, v in BAMBA_TINY.items() if k != "model_type"})
    else:
        cfg = AutoConfig.from_pretrained(HF_DIR / name)
    cfg.dtype = torch.float32
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(cfg).float().eval()


@functools.lru_cache(maxsize=None)
def ref_model(name: str):
    spec = parse_spec(LINEAR_SPEC) if name == LINEAR_SPEC["name"] else \
        load_model(HF_DIR / name / "model.yaml")
    return build(spec, seed=0).eval()


def model_for(kind: str, name: str):
    return hf_model(name) if kind == "hf" else ref_model(name)


@torch.no_grad()
def full_logits(model, ids: list[int]) -> torch.Tensor:
    """Logits [L, V] of the unwrapped model over `ids`, from token 0, without a cache."""
    x = torch.tensor([ids])
    out = model(x) if not hasattr(model, "config") else model(input_ids=x, use_cache=False)
    logits = out[0] if isinstance(out, tuple) else out.logits
    return logits[0].float()


def left_pad(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), both int64 [B, W]: `rows` left-padded with `pad`, as a
    transformers tokenizer pads a batch for a decoder-only model."""
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad] * (width - len(r)) + list(r) for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


class Script:
    """Seeded request sequences with shared prefixes, branches and multi-turn follow-ups.

    `next(outputs_of_last)` returns the next input: a fresh branch off a shared system
    prompt, a follow-up turn of an earlier conversation (its input + generated tokens +
    new user tokens), an exact repeat, or a rewrite that cuts an earlier history short.
    """

    def __init__(self, seed: int, vocab: int = 256, system: int = 12, turn: tuple = (2, 9)):
        self.rng = random.Random(seed)
        self.vocab, self.turn = vocab, turn
        self.system = self._tokens(system)
        self.histories: list[list[int]] = []

    def _tokens(self, n: int) -> list[int]:
        return [self.rng.randrange(self.vocab) for _ in range(n)]

    def next(self) -> list[int]:
        r, h = self.rng.random(), self.histories
        if not h or r < 0.3:
            ids = self.system + self._tokens(self.rng.randint(*self.turn))
        elif r < 0.7:
            ids = self.rng.choice(h) + self._tokens(self.rng.randint(*self.turn))
        elif r < 0.85:
            ids = list(self.rng.choice(h))
        else:
            old = self.rng.choice(h)
            cut = self.rng.randint(len(self.system), len(old))
            ids = old[:cut] + self._tokens(self.rng.randint(*self.turn))
        return ids

    def record(self, ids: list[int], generated: tuple[int, ...]) -> None:
        self.histories.append(list(ids) + list(generated))


@functools.lru_cache(maxsize=None)
def cost_for(kind: str, name: str):
    """The CostModel `wrap` builds for this model (built once per test session)."""
    from marconi.runtime.serve.model_adapters import adapter_for
    return adapter_for(model_for(kind, name)).cost_model()



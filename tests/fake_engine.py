"""A small engine model for the tests of the flag search and `marconi-plan engines`.

Two flags over existing policies (so every replay is one the simulator already checks):
``--mode`` picks vLLM's all or align mode or SGLang+'s judicious admission, ``--block-size``
their block (the vLLM block, or the checkpoint grid of the judicious mode). The judicious
mode refuses a 16-token grid (when resolved) and so does the align mode (when replayed),
so the search meets both kinds of refused combination. `noop` adds a
third flag that changes nothing (for the strict-improvement rule).
"""

from __future__ import annotations

import dataclasses
import shlex

from marconi.errors import UserError
from marconi.runtime.cache.policies.sglang import SGLangPlus
from marconi.runtime.cache.policies.vllm import VLLMAlign, VLLMAll
from marconi.runtime.config import VllmParams
from marconi.runtime.engines.base import Flag, check_choice, resolve_flags

MODES = {"all": VLLMAll, "align": VLLMAlign, "judicious": SGLangPlus}


class FakeEngine:
    name = "fake"
    version = "0.0.1"

    def __init__(self, mode="all", block=64, noop: bool = False):
        self.flags = (
            Flag("--mode", mode, tuple(MODES), "fake.py:Scheduler.admit", "admission mode"),
            Flag("--block-size", block, (16, 32, 64, 128), "fake.py:Pool.block",
                 "KV block and state grid"),
        ) + ((Flag("--noop", "a", ("a", "b"), "fake.py:nothing", "changes nothing"),)
             if noop else ())

    def resolve(self, flags):
        out = resolve_flags(self.flags, flags, self.name)
        check_choice("--mode", out["--mode"], tuple(MODES))
        check_choice("--block-size", out["--block-size"], (16, 32, 64, 128))
        if out["--mode"] == "judicious" and out["--block-size"] < 32:
            raise UserError("--block-size", "judicious mode needs a grid of 32 or more")
        return out

    def policy(self, flags):
        f = self.resolve(flags)
        base, block = MODES[f["--mode"]], f["--block-size"]

        def __init__(self, cost, config, workload):
            if base is VLLMAlign and block == 16:     # refused when replayed, not resolved
                raise UserError("--block-size", "16 with align mode; expected 32 or more")
            config = dataclasses.replace(config, vllm=VllmParams(block_tokens=block))
            if base is SGLangPlus:
                config = dataclasses.replace(config, chunk_tokens=block)
            base.__init__(self, cost, config, workload)

        return type(f"Fake{base.__name__}", (base,), {"__init__": __init__})

    def launch(self, model, flags, capacity_bytes):
        f = self.resolve(flags)
        parts = ["fake", "serve", model]
        for flag in self.flags:
            if f[flag.name] != flag.default:
                parts += [flag.name, str(f[flag.name])]
        if capacity_bytes is not None:
            parts += ["--cache-bytes", str(capacity_bytes)]
        return shlex.join(parts)

    def failure_modes(self, flags, workload, cost):
        f = self.resolve(flags)
        short = sum(r.input_tokens < f["--block-size"] for r in workload.requests)
        if not short:
            return []
        return [f"{short / len(workload.requests):.1%} of prompts are shorter than the "
                f"{f['--block-size']}-token block and can never hit"]

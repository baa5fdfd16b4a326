"""What every engine model provides: its flags, a policy that replays them, a launch line.

An engine model (`vllm.py`, `sglang.py`, `trtllm.py`) describes one release of one serving
engine as its flags make it. Each `Flag` names the engine's own option text, its default in
that release, the values a search tries, and the engine source that gives it its effect
(file and function). `EngineModel.policy(flags)` returns a `Policy` subclass with the flag
values bound, so a replay (`runtime.sim.simulator.replay_policy`) runs the engine's
admission, eviction and memory layout as those flags set them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Protocol

from marconi.errors import UserError
from marconi.passes.cost_model import CostModel
from marconi.runtime.cache.policies.base import Policy
from marconi.runtime.workload import Workload


@dataclasses.dataclass(frozen=True)
class Flag:
    """One engine option.

    name: the engine's own text (``--mamba-cache-mode``; TensorRT-LLM: the dotted key in
        ``kv_cache_config``, e.g. ``tokens_per_block``).
    default: its value in the modelled release when the user sets nothing; None = unset.
    choices: the values a flag search tries (the default among them), in a fixed order.
    source: where the engine implements its effect, ``path/in/repo.py:function``.
    help: one line on what it does in the model.
    """

    name: str
    default: Any
    choices: tuple[Any, ...]
    source: str
    help: str


Flags = Mapping[str, Any]


class EngineModel(Protocol):
    """One engine release, as its flags make it."""

    name: str                 # "vllm", "sglang", "trtllm"
    version: str              # the release modelled, e.g. "0.33.0"
    flags: tuple[Flag, ...]   # every flag the model honours

    def resolve(self, flags: Flags) -> dict[str, Any]:
        """Every flag's value: `flags` over the defaults, each checked (a UserError naming
        the flag and what it accepts)."""
        ...

    def policy(self, flags: Flags) -> type[Policy]:
        """A Policy subclass that replays the engine with `flags` (resolved) bound."""
        ...

    def launch(self, model: str, flags: Flags, capacity_bytes: int | None) -> str:
        """The exact command line (vLLM, SGLang) or ``extra_llm_api_options`` YAML
        (TensorRT-LLM) that runs `model` with `flags`; flags at their default are left out."""
        ...

    def failure_modes(self, flags: Flags, workload: Workload, cost: CostModel) -> list[str]:
        """Sentences on what these flags do badly on `workload` (e.g. prompts shorter than
        the block, which can never hit), each with the measured share; [] if none."""
        ...


def resolve_flags(flags_of: tuple[Flag, ...], given: Flags, engine: str) -> dict[str, Any]:
    """`given` over the defaults of `flags_of`; an unknown flag is a UserError naming it and
    the engine's known flags. Values are checked by each engine model."""
    known = {f.name: f for f in flags_of}
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise UserError(f"{engine} flags", f"unknown {', '.join(unknown)}; expected one of "
                        f"{', '.join(known)}")
    return {name: given.get(name, f.default) for name, f in known.items()}


def check_choice(flag: str, value: Any, allowed: tuple[Any, ...]) -> Any:
    """`value` if it is one of `allowed`, else a UserError naming `flag`."""
    if value not in allowed:
        raise UserError(flag, f"{value!r}; expected one of {', '.join(map(str, allowed))}")
    return value


def check_positive(flag: str, value: Any, multiple_of: int | None = None) -> int:
    """`value` if it is a positive int (and a multiple of `multiple_of`), else a UserError
    naming `flag`."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise UserError(flag, f"{value!r}; expected a positive integer")
    if multiple_of and value % multiple_of:
        raise UserError(flag, f"{value}; expected a multiple of {multiple_of}")
    return value


def trace_grid(tokens: int, block: int) -> int:
    """An engine grid of `tokens` on a trace of `block`-token ids: itself where the ids
    divide it, else the next multiple of the id at or above it. A block-hash trace (Mooncake:
    512-token ids) tells prefixes apart only at id boundaries, so a position inside an id
    cannot be matched or checkpointed; the baselines replay such traces on the id grid too
    (`runtime.config.VllmParams.block_for`). Token traces (block 1) keep every grid."""
    return -(-tokens // block) * block


STATE_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


def ssm_dtype_cost(cost: CostModel, dtype: str, flag: str) -> CostModel:
    """`cost` with its recurrent (SSM) state stored as `dtype` ("auto": unchanged); conv
    states keep the model's dtype (vLLM `config/cache.py`: ``mamba_ssm_cache_dtype`` is the
    SSM state only; TensorRT-LLM's V2 manager: ``conv_state_dtype = mamba_cache_dtype``).
    `flag` names the engine's option in errors."""
    if dtype == "auto":
        return cost
    if cost.state_dtype not in STATE_DTYPE_BYTES:
        raise UserError(flag, f"{dtype}: the model's state dtype {cost.state_dtype!r} is not "
                        f"one of {', '.join(STATE_DTYPE_BYTES)}, so the resize is unknown")
    num, den = STATE_DTYPE_BYTES[dtype], STATE_DTYPE_BYTES[cost.state_dtype]
    layers = tuple(dataclasses.replace(l, recurrent_state_bytes=l.recurrent_state_bytes * num
                                       // den) for l in cost.layers)
    return dataclasses.replace(cost, layers=layers, state_dtype=dtype)

"""CacheConfig: everything about a replay that is not the model, the trace or the policy."""

from __future__ import annotations

import dataclasses
import enum
import math
from typing import TypeVar

from marconi.errors import UserError
from marconi.runtime.capacity import Capacity

E = TypeVar("E", bound=enum.Enum)

ALPHA_GRID = tuple(round(0.1 * i, 1) for i in range(21))   # Marconi's {0, 0.1, …, 2.0}


class Recency(str, enum.Enum):
    """Marconi's recency term (`runtime.cache.eviction.FlopAware`); the value is the
    flag's and the reports' text."""

    LINEAR = "linear"        # last-access time
    INVERSE = "inverse"      # 1 / (now − last access + 1 ms), the artifact's form

    def __str__(self) -> str:
        return self.value


def parse_choice(kind: type[E], value: E | str, where: str) -> E:
    """`value` (a member or its text) as a member of the str-valued enum `kind`, else a
    UserError naming `where` and the known values."""
    try:
        return kind(value)
    except ValueError:
        raise UserError(where, f"unknown {value!r}; expected one of "
                        f"{', '.join(m.value for m in kind)}") from None


def check_tokens(value: int | None, where: str) -> None:
    """A UserError naming `where` unless `value` is None or a positive number of tokens."""
    if value is not None and (not isinstance(value, int) or value <= 0):
        raise UserError(where, f"{value!r}; expected a positive number of tokens")


def grid_for(block: int, tokens: int) -> int:
    """`tokens` if it is a whole number of a workload's `block`-token ids."""
    if tokens % block:
        raise UserError("chunk_tokens", f"{tokens} tokens is not a multiple of the trace's "
                        f"{block}-token block; expected a multiple of {block}")
    return tokens


@dataclasses.dataclass(frozen=True)
class MarconiParams:
    """Marconi's own parameters (`runtime.cache.policies.marconi`; `planned` reuses the
    bootstrap window for when it plans online).

    alpha_grid: the α values Marconi's tuner and the static sweep try.
    recency: Marconi's recency term, "linear" (last-access time) or "inverse" (artifact).
    bootstrap_multiplier: Marconi's tuning window, in multiples of the requests seen before
        the first eviction (paper §4.2: 5-15×; the artifact's default is 5).
    """

    alpha_grid: tuple[float, ...] = ALPHA_GRID
    recency: Recency = Recency.LINEAR    # the flag's text converts here
    bootstrap_multiplier: int = 5

    def __post_init__(self):
        if not self.alpha_grid or any(isinstance(a, bool) or not isinstance(a, (int, float))
                                      or a < 0 for a in self.alpha_grid):
            raise UserError("alpha_grid", f"{self.alpha_grid!r}; expected one or more "
                            "non-negative α values")
        if self.bootstrap_multiplier < 1:
            raise UserError("bootstrap_multiplier", f"{self.bootstrap_multiplier}; expected ≥ 1")
        object.__setattr__(self, "recency", parse_choice(Recency, self.recency, "recency"))


@dataclasses.dataclass(frozen=True)
class VllmParams:
    """The vLLM-style policies' parameters (`runtime.cache.policies.vllm`).

    block_tokens: their block (KV page = checkpoint stride). None = the engine grid
        (`CacheConfig.chunk_tokens`) if set, else the trace's block for block-hash traces,
        else 32 tokens (the paper's vLLM+, §6.1).
    """

    block_tokens: int | None = None

    def __post_init__(self):
        check_tokens(self.block_tokens, "block_tokens")

    def block_for(self, block: int, chunk_tokens: int | None) -> int:
        """Tokens per vLLM block for a workload of `block` tokens per id."""
        return grid_for(block, self.block_tokens or chunk_tokens or (block if block > 1 else 32))


@dataclasses.dataclass(frozen=True)
class CacheConfig:
    """What every replay of one simulation shares, and each policy's own parameters.

    capacity: the byte budget (one pool, or KV and state pools).
    chunk_tokens: engine checkpoint grid: states only at token positions that are multiples
        of it (hits round down to it). None = exact positions (the paper's assumption).
    warmup: the fraction of a workload's requests, from its start, that fill the cache but
        are not counted in any metric (cache studies measure the last half: 0.5); in
        [0, 1), so at least one request is counted. `warmup_requests` makes it a count.
    device: latency profile for TTFT (`marconi.runtime.sim.latency.DEVICES`). No policy
        reads it; it is how every replay's results are measured, so it is replay-wide
        like `warmup` (which also changes the figures, not the decisions).
    marconi, vllm: the parameters of Marconi's policies and of the vLLM-style ones; other
        policies take none.
    """

    capacity: Capacity
    chunk_tokens: int | None = None
    warmup: float = 0.0
    device: str = "jamba-1.5-mini-4xa100"
    marconi: MarconiParams = MarconiParams()
    vllm: VllmParams = VllmParams()

    def __post_init__(self):
        check_tokens(self.chunk_tokens, "chunk_tokens")
        check_warmup(self.warmup)

    def warmup_requests(self, n: int) -> int:
        """How many of a workload's `n` requests warm the cache up (`warmup_requests`)."""
        return warmup_requests(self.warmup, n)

    def grid_for(self, block: int) -> int | None:
        """The engine grid (`chunk_tokens`) for a workload of `block` tokens per id,
        checked against it."""
        return None if self.chunk_tokens is None else grid_for(block, self.chunk_tokens)

    def vllm_block(self, block: int) -> int:
        """Tokens per vLLM block for a workload of `block` tokens per id."""
        return self.vllm.block_for(block, self.chunk_tokens)


def check_warmup(fraction: float, where: str = "warmup") -> float:
    """`fraction` if it is a warm-up fraction in [0, 1), else a UserError naming `where`."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or \
            not 0.0 <= fraction < 1.0:
        raise UserError(where, f"{fraction!r}; expected a fraction of the requests in [0, 1) "
                        "that warm the cache up uncounted")
    return float(fraction)


def warmup_requests(fraction: float, n: int) -> int:
    """The first ⌊fraction·n⌋ of `n` requests warm the cache up (at most n − 1, so one is
    counted; the 1e-9 keeps 0.29·100 = 28.999… from rounding down to 28)."""
    return min(max(n - 1, 0), math.floor(check_warmup(fraction) * n + 1e-9))

"""A Plan: the rules an online runtime applies, compiled from the offline optimum.

Three groups, each a frozen dataclass, so that the `planned` policy
(`marconi.runtime.cache.policies.planned`) reads plain data and `serialize.py` writes it to
runtime.yaml:

- `AdmissionRules`: which positions of a request get a recurrent-state checkpoint, by reuse
  class (background/marconi.md §2: purely-input vs input+output reuse), on which sighting
  of a prefix, how shallow a checkpoint may be, an optional stride for new content;
- `EvictionRules`: class-offset LRU. A candidate's priority is its last access time plus
  an offset for its reuse class; the smallest goes first. Offset 0 everywhere is LRU;
  a class whose offset is larger survives that much longer idle. Offsets are tuned by
  replay (`plan.py`);
- `MemoryRules`: one shared pool or separate KV and state pools.

Optionally a `next_use` predictor (`runtime.plan.next_use`): when present, `planned`
evicts by predicted next use (Belady with predictions) instead of class-offset LRU.

Plus `pinned` prefixes (hot shared prefixes the offline optimum keeps all the time),
`marconi_alpha` (the α of Marconi's eviction fitted on the same workload: the hedged
`planned` runs its Marconi ghost at it instead of tuning one online) and `provenance`: what
the plan was tuned on and what it was measured to reach there.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
from typing import Any

import numpy as np

from marconi.runtime.plan.next_use import NextUsePredictor
from marconi.runtime.plan.reuse_odds import ReuseOdds

SCHEMA_VERSION = 1


class ReuseClass(str, enum.Enum):
    """The reuse class a checkpoint node carries (eviction offsets are keyed by it). Its
    value is the text runtime.yaml and JSON reports use, and it compares equal to it."""

    FRESH = "fresh"                  # end of an input mostly unseen before
    CONTINUATION = "continuation"    # end of an input that extends something seen before
    OUTPUT = "output"                # after the last decoded token (known outputs only)
    BRANCH = "branch"                # where the input leaves a prefix seen before
    STRIDE = "stride"                # a stride position inside new content
    PASSED = "passed"                # a state a later request extended past (now interior)
    PINNED = "pinned"                # on a pinned hot prefix

    def __str__(self) -> str:
        return self.value


CLASSES = tuple(ReuseClass)


@dataclasses.dataclass(frozen=True)
class AdmissionRules:
    """Where a request leaves checkpoints (depths in tokens, floored to the engine grid).

    input_end: a state at the end of the input (block traces: its last full block),
        for inputs whose seen-before share is ≥ `fresh_threshold` (continuations), and
        for fresh ones too when `admit_fresh`.
    output_end: a state after the last decoded token (only outputs with known ids can be
        hit by a later input).
    branch_sighting: a state where the input leaves the prefixes seen before, once that
        prefix was passed by at least this many earlier sequences (1: on its second
        sighting; Marconi's speculative insertion sees only what is still cached); 0: off.
    stride_tokens: states every `stride_tokens` inside an input's new (unseen) part, so a
        later request that branches there can hit on the prefix's second sighting.
    min_prefix_tokens: no state shallower than this.
    """

    input_end: bool = True
    output_end: bool = False
    branch_sighting: int = 1
    stride_tokens: int | None = None
    min_prefix_tokens: int = 0
    fresh_threshold: float = 0.3
    admit_fresh: bool = True


@dataclasses.dataclass(frozen=True)
class EvictionRules:
    """Class-offset LRU: evict the smallest

        last_access_ms + offsets_ms[class] + efficiency_ms · efficiency / efficiency_ref

    where efficiency is Marconi's FLOP efficiency of the node (FLOPs its state saves
    beyond its parent's, per byte of state and path KV; paper Eq. 1) and efficiency_ref
    that of a typical hit of the workload it was planned on. With efficiency_ms = 0 it is
    LRU per class; it is a static-normalisation form of Marconi's Eq. 2.
    """

    offsets_ms: tuple[tuple[ReuseClass, float], ...] = tuple((c, 0.0) for c in CLASSES)
    efficiency_ms: float = 0.0
    efficiency_ref: float = 1.0

    def __post_init__(self):
        # classes given by their text (a caller's literal) become the enum
        object.__setattr__(self, "offsets_ms",
                           tuple((ReuseClass(c), v) for c, v in self.offsets_ms))

    def offset(self, cls: ReuseClass) -> float:
        return dict(self.offsets_ms).get(cls, 0.0)

    def with_offset(self, cls: ReuseClass, value: float) -> EvictionRules:
        d = dict(self.offsets_ms)
        d[cls] = float(value)
        return dataclasses.replace(self, offsets_ms=tuple((c, d.get(c, 0.0)) for c in CLASSES))


@dataclasses.dataclass(frozen=True)
class MemoryRules:
    """``pools``: "shared" (one budget) or "split" (`state_fraction` of it for states)."""

    pools: str = "shared"
    state_fraction: float | None = None


@dataclasses.dataclass(frozen=True)
class PinnedPrefix:
    """A hot prefix, by its length in ids and a digest of those ids (no ids on disk)."""

    ids: int
    digest: str

    @classmethod
    def of(cls, ids) -> PinnedPrefix:
        return cls(len(ids), prefix_digest(ids))

    def matches(self, ids) -> bool:
        return len(ids) >= self.ids and prefix_digest(ids[:self.ids]) == self.digest


def prefix_digest(ids) -> str:
    """Stable digest of an id sequence (blake2b of its int64 bytes, 16 hex digits)."""
    data = np.asarray(ids, dtype=np.int64).tobytes()
    return hashlib.blake2b(data, digest_size=8).hexdigest()


@dataclasses.dataclass(frozen=True)
class Plan:
    """Everything the `planned` policy needs; serialises to runtime.yaml."""

    model: str
    cost_fingerprint: str
    block_tokens: int                 # tokens per id of the workload it was made for
    chunk_tokens: int | None          # engine checkpoint grid it assumes (None: exact)
    capacity_bytes: int
    admission: AdmissionRules = AdmissionRules()
    eviction: EvictionRules = EvictionRules()
    memory: MemoryRules = MemoryRules()
    pinned: tuple[PinnedPrefix, ...] = ()
    provenance: tuple[tuple[str, Any], ...] = ()
    schema_version: int = SCHEMA_VERSION
    next_use: NextUsePredictor | None = None
    # Marconi's α with the most FLOP savings on the planned workload (None: not fitted;
    # the hedge's Marconi ghost then tunes α online, as the `marconi` baseline does)
    marconi_alpha: float | None = None
    # survival counts that refine the class-offset order among its first victims (None or
    # candidates = 1: the order as it is; `runtime.plan.reuse_odds`)
    reuse_odds: ReuseOdds | None = None

    def rules_dict(self) -> dict[str, Any]:
        """The chosen rules as plain data (reports and JSON)."""
        return {
            "admission": dataclasses.asdict(self.admission),
            "eviction": {"policy": "class-offset-lru",
                         "offsets_ms": {str(c): v for c, v in self.eviction.offsets_ms},
                         "efficiency_ms": self.eviction.efficiency_ms,
                         "efficiency_ref": self.eviction.efficiency_ref},
            "memory": dataclasses.asdict(self.memory),
            "pinned_prefixes": [dataclasses.asdict(p) for p in self.pinned],
            **({} if self.next_use is None else
               {"next_use": {"levels": [len(t) for t in self.next_use.levels],
                             "horizon_ms": self.next_use.horizon_ms}}),
            **({} if self.marconi_alpha is None else
               {"hedge": {"marconi_alpha": self.marconi_alpha}}),
            **({} if self.reuse_odds is None else
               {"reuse_odds": {"candidates": self.reuse_odds.candidates,
                               "levels": [len(t) for t in self.reuse_odds.levels],
                               "edges": len(self.reuse_odds.edges_ms)}}),
        }


def default_plan(model: str, cost_fingerprint: str, block_tokens: int,
                 chunk_tokens: int | None, capacity_bytes: int,
                 output_end: bool = False) -> Plan:
    """The rules `planned` starts from before it has planned: input ends and branch
    points on their second sighting, plain LRU (close to vLLM's align mode); with
    `output_end` (outputs with ids, as in token traces) a state after the last decoded
    token as well."""
    return Plan(model=model, cost_fingerprint=cost_fingerprint, block_tokens=block_tokens,
                chunk_tokens=chunk_tokens, capacity_bytes=capacity_bytes,
                admission=AdmissionRules(output_end=output_end))

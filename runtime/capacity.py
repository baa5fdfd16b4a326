"""Capacity: how many bytes a cache may hold, in one shared pool or in two pools.

Engines differ here: vLLM puts KV pages and recurrent-state pages in one pool; SGLang sizes
a KV pool and a state ("Mamba") pool separately (background/engines.md §1.2, §2.2).
"""

from __future__ import annotations

import dataclasses
import math

from marconi.errors import CapacityError


@dataclasses.dataclass(frozen=True)
class Capacity:
    """Byte budget. `state_bytes` None = one shared pool of `total_bytes`; otherwise the
    state pool holds `state_bytes` and the KV pool the rest. `total_bytes` None = unbounded."""

    total_bytes: int | None
    state_bytes: int | None = None

    def __post_init__(self):
        if self.total_bytes is not None and self.total_bytes <= 0:
            raise CapacityError("capacity", f"must be positive, got {self.total_bytes}")
        if self.state_bytes is not None:
            if self.total_bytes is None or not 0 < self.state_bytes < self.total_bytes:
                raise CapacityError("state_fraction", "the state pool must be a positive "
                                    "part of a bounded capacity, smaller than the total")

    @classmethod
    def shared(cls, total_bytes: int) -> Capacity:
        return cls(int(total_bytes))

    @classmethod
    def split(cls, total_bytes: int, state_fraction: float) -> Capacity:
        """Two pools: `state_fraction` of the bytes for states, the rest for KV."""
        if not 0.0 < state_fraction < 1.0:
            raise CapacityError("state_fraction",
                                f"{state_fraction!r}; expected a fraction in (0, 1)")
        return cls(int(total_bytes), int(total_bytes * state_fraction))

    @classmethod
    def unbounded(cls) -> Capacity:
        return cls(None)

    @property
    def separate(self) -> bool:
        return self.state_bytes is not None

    @property
    def kv_limit(self) -> float:
        """Bytes the KV pool may hold (the whole budget for a shared pool)."""
        if self.total_bytes is None:
            return math.inf
        return self.total_bytes - (self.state_bytes or 0)

    @property
    def state_limit(self) -> float:
        if self.total_bytes is None:
            return math.inf
        return self.state_bytes if self.state_bytes is not None else self.total_bytes

    def fits(self, kv_used: int, state_used: int) -> bool:
        if self.total_bytes is None:
            return True
        if self.state_bytes is None:
            return kv_used + state_used <= self.total_bytes
        return kv_used <= self.kv_limit and state_used <= self.state_bytes

    def occupancy(self, kv_used: int, state_used: int) -> float:
        """Fraction of the budget in use (the fuller pool when there are two)."""
        if self.total_bytes is None:
            return 0.0
        if self.state_bytes is None:
            return (kv_used + state_used) / self.total_bytes
        return max(kv_used / self.kv_limit, state_used / self.state_bytes)

    def one_pool_bytes(self, what: str = "the offline planner") -> int:
        """The bytes of a bounded, shared pool: what `what` models; a CapacityError for an
        unbounded capacity or two pools."""
        if self.total_bytes is None:
            raise CapacityError("capacity", f"unbounded; {what} needs a bounded byte budget")
        if self.separate:
            raise CapacityError("capacity", f"two pools (state {self.state_bytes} B of "
                                f"{self.total_bytes} B); {what} models one shared pool")
        return self.total_bytes

    def scaled(self, factor: float) -> Capacity:
        """This capacity times `factor` (at least one byte), the pools split alike."""
        if self.total_bytes is None:
            return self
        total = max(1, int(self.total_bytes * factor))
        if self.state_bytes is None:
            return Capacity(total)
        return Capacity.split(total, self.state_bytes / self.total_bytes)

    def describe(self) -> dict:
        return {"total_bytes": self.total_bytes, "state_bytes": self.state_bytes,
                "pools": "separate" if self.separate else "shared"}

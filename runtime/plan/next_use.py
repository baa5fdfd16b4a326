"""The exported next-use predictor: an entry's time to its next reuse from online features,
as plain tables (fitted by `planner.next_use.fit_predictor`, stored in runtime.yaml).

Features of an entry (a cached node) at one of its passes (its creation, or a request that
touched it), each binned (`bin_features`):

- ``passes``: earlier passes of the entry (0 at creation), capped at 4;
- ``gap``: log2 bin of the last gap between two passes in seconds (-1: none yet);
- ``depth``: log2 bin of the prefix length in 512-token units;
- ``age``: log2 bin of the time since the entry's first pass in seconds.

The model is a backoff table of the mean of log(1 + gap to the next pass in ms), the gap
capped at ``horizon_ms`` (entries never used again count as the horizon): ``levels[k]``
maps the first k+1 bins to that mean, fitted where at least a minimum number of passes
fell; a lookup uses the most specific level that has the key, else ``prior``. One
prediction is a few dict lookups (microseconds), without the planner.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from marconi.errors import UserError

FEATURES = ("passes", "gap", "depth", "age")
MAX_BIN = 30


def _log_bin(x: float) -> int:
    return min(MAX_BIN, int(math.log2(1.0 + x)))


def bin_features(passes: int, gap_ms: float | None, depth_tokens: int,
                 age_ms: float) -> tuple[int, int, int, int]:
    """The binned features of one pass, in `FEATURES` order."""
    return (min(passes, 4),
            -1 if gap_ms is None else _log_bin(gap_ms / 1000.0),
            _log_bin(depth_tokens / 512.0),
            _log_bin(age_ms / 1000.0))


@dataclasses.dataclass(frozen=True)
class NextUsePredictor:
    """Backoff tables of the mean log gap to the next pass (module docstring)."""

    levels: tuple[dict[tuple[int, ...], float], ...]
    prior: float
    horizon_ms: float

    def log_gap(self, bins: tuple[int, ...]) -> float:
        for k in range(len(self.levels) - 1, -1, -1):
            v = self.levels[k].get(bins[:k + 1])
            if v is not None:
                return v
        return self.prior

    def gap_ms(self, bins: tuple[int, ...]) -> float:
        """Predicted time to the next pass (ms)."""
        return math.expm1(self.log_gap(bins))

    def to_dict(self) -> dict[str, Any]:
        return {"features": list(FEATURES), "prior": self.prior,
                "horizon_ms": self.horizon_ms,
                "levels": [[[*key, v] for key, v in sorted(level.items())]
                           for level in self.levels]}

    @classmethod
    def from_dict(cls, d: Any, where: str = "next_use") -> NextUsePredictor:
        if not isinstance(d, dict):
            raise UserError(where, f"expected a mapping, got {type(d).__name__}")
        if d.get("features") != list(FEATURES):
            raise UserError(f"{where}.features", f"expected {list(FEATURES)}, got "
                            f"{d.get('features')!r}")
        try:
            levels = []
            for k, rows in enumerate(d["levels"]):
                level = {}
                for row in rows:
                    if len(row) != k + 2:
                        raise UserError(f"{where}.levels[{k}]", f"rows of {k + 2} numbers "
                                        f"expected, got {row!r}")
                    level[tuple(int(x) for x in row[:-1])] = float(row[-1])
                levels.append(level)
            return cls(levels=tuple(levels), prior=float(d["prior"]),
                       horizon_ms=float(d["horizon_ms"]))
        except KeyError as e:
            raise UserError(where, f"missing field {e.args[0]!r}") from e
        except (TypeError, ValueError) as e:
            raise UserError(where, f"expected numbers: {e}") from e

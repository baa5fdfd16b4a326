"""The exported reuse-odds table: how likely an entry that has waited is to be used soon.

`runtime.plan.next_use` predicts one number per entry (its mean log gap to the next pass),
fixed when the entry was last used; an entry that was due back long ago and did not come
keeps its early prediction. This table keeps, for the same binned features of an entry's
last pass (`next_use.bin_features`: earlier passes, last gap, depth, age), the *survival
counts* of its gap to the next pass: ``survivors[j]`` = how many of the fitting workload's
passes with those features waited longer than ``edges_ms[j]`` (never used again counts as
waiting forever). From them, for an entry that has waited `elapsed` since its last pass,

    odds(elapsed, within) = (N(> elapsed) − N(> elapsed + within)) / N(> elapsed),

the share of the entries that had waited as long which were used in the next `within` ms
(N linear between edges, constant past the last one). A lookup uses the most specific
level of bins whose N(> elapsed) reaches `min_count`, else the table of every pass.

`planned` uses it to refine its order (`policies.planned.ClassOffsetLRU`): among the
`candidates` first victims of its class-offset order, the one with the lowest odds of use
within the cache's current LRU age goes first (1: no refinement). A few dict lookups and
one interpolation per candidate, without the planner. Fitted by
`planner.next_use.fit_reuse_odds`; stored in runtime.yaml as ``reuse_odds:``.
"""

from __future__ import annotations

import dataclasses
import math
from bisect import bisect_right
from typing import Any

from marconi.errors import UserError
from marconi.runtime.plan.next_use import FEATURES


@dataclasses.dataclass(frozen=True)
class ReuseOdds:
    """Survival counts of the gap to the next pass, per feature bins (module docstring)."""

    edges_ms: tuple[float, ...]                 # 0 = edges_ms[0] < edges_ms[1] < …
    prior: tuple[int, ...]                      # every pass: N(> edge) per edge
    levels: tuple[dict[tuple[int, ...], tuple[int, ...]], ...]   # first k+1 bins → counts
    candidates: int = 1                         # victims compared (1: order unchanged)
    min_count: int = 10

    def survivors(self, counts: tuple[int, ...], t: float) -> float:
        """N(> t) from one row of counts (linear between edges)."""
        edges = self.edges_ms
        j = bisect_right(edges, t) - 1
        if j < 0:
            return float(counts[0])
        if j >= len(edges) - 1:
            return float(counts[-1])
        w = (t - edges[j]) / (edges[j + 1] - edges[j])
        return counts[j] + w * (counts[j + 1] - counts[j])

    def row(self, bins: tuple[int, ...], elapsed_ms: float) -> tuple[int, ...]:
        """The most specific counts whose N(> elapsed) reaches `min_count` (else the prior)."""
        for k in range(len(self.levels) - 1, -1, -1):
            counts = self.levels[k].get(bins[:k + 1])
            if counts is not None and self.survivors(counts, elapsed_ms) >= self.min_count:
                return counts
        return self.prior

    def odds(self, bins: tuple[int, ...], elapsed_ms: float, within_ms: float) -> float:
        """The share of entries with these features, unused for `elapsed_ms`, that were
        used within the next `within_ms` (0 where none had waited as long)."""
        counts = self.row(bins, elapsed_ms)
        alive = self.survivors(counts, elapsed_ms)
        if alive <= 0:
            return 0.0
        return (alive - self.survivors(counts, elapsed_ms + within_ms)) / alive

    def to_dict(self) -> dict[str, Any]:
        return {"features": list(FEATURES), "candidates": self.candidates,
                "min_count": self.min_count, "edges_ms": list(self.edges_ms),
                "prior": list(self.prior),
                "levels": [[[*key, *counts] for key, counts in sorted(level.items())]
                           for level in self.levels]}

    def __post_init__(self):
        _check_edges(self.edges_ms, "reuse_odds.edges_ms")

    @classmethod
    def from_dict(cls, d: Any, where: str = "reuse_odds") -> ReuseOdds:
        if not isinstance(d, dict):
            raise UserError(where, f"expected a mapping, got {type(d).__name__}")
        unknown = sorted(set(d) - {"features", "candidates", "min_count", "edges_ms",
                                   "prior", "levels"})
        if unknown:
            raise UserError(f"{where}.{unknown[0]}", "unknown field")
        missing = sorted({"features", "edges_ms", "prior", "levels"} - set(d))
        if missing:
            raise UserError(where, f"missing field {missing[0]!r}")
        if d["features"] != list(FEATURES):
            raise UserError(f"{where}.features", f"expected {list(FEATURES)}, got "
                            f"{d['features']!r}")
        edges = tuple(_number(x, f"{where}.edges_ms[{j}]")
                      for j, x in enumerate(_list(d["edges_ms"], f"{where}.edges_ms")))
        _check_edges(edges, f"{where}.edges_ms")      # before the counts are sized by it
        n = len(edges)

        def counts(row, field):
            vals = tuple(_integer(x, f"{field}[{j}]", 0) for j, x in enumerate(row))
            if len(vals) != n or any(b > a for a, b in zip(vals, vals[1:])):
                raise UserError(field, f"expected {n} non-increasing counts ≥ 0 (one per "
                                f"edge), got {list(row)!r}")
            return vals

        levels = []
        rows_of = _list(d["levels"], f"{where}.levels")
        if len(rows_of) > len(FEATURES):
            raise UserError(f"{where}.levels", f"at most {len(FEATURES)} levels, got "
                            f"{len(rows_of)}")
        for k, rows in enumerate(rows_of):
            level = {}
            for i, row in enumerate(_list(rows, f"{where}.levels[{k}]")):
                field = f"{where}.levels[{k}][{i}]"
                row = _list(row, field)
                if len(row) != k + 1 + n:
                    raise UserError(field, f"expected {k + 1} bins then {n} counts, got "
                                    f"{len(row)} numbers")
                key = tuple(_integer(x, f"{field}[{j}]", -1) for j, x in
                            enumerate(row[:k + 1]))
                if key in level:
                    raise UserError(field, f"bins {list(key)} listed twice")
                level[key] = counts(row[k + 1:], field)
            levels.append(level)
        return cls(edges_ms=edges,
                   prior=counts(_list(d["prior"], f"{where}.prior"), f"{where}.prior"),
                   levels=tuple(levels),
                   candidates=_integer(d.get("candidates", 1), f"{where}.candidates", 1),
                   min_count=_integer(d.get("min_count", 10), f"{where}.min_count", 1))


def _check_edges(edges: tuple[float, ...], field: str) -> None:
    if len(edges) < 2 or edges[0] != 0.0 or any(
            not (b > a) or not math.isfinite(b) for a, b in zip(edges, edges[1:])):
        raise UserError(field, "expected 0 then increasing finite times (ms), at least two; "
                        f"got {list(edges)!r}")


def _list(x: Any, field: str) -> list:
    if not isinstance(x, (list, tuple)):
        raise UserError(field, f"expected a list, got {x!r}")
    return list(x)


def _integer(x: Any, field: str, lo: int) -> int:
    """`x` if it is an integer ≥ `lo` (not a bool, a string or a fraction)."""
    if isinstance(x, bool) or not isinstance(x, int) or x < lo:
        raise UserError(field, f"expected an integer ≥ {lo}, got {x!r}")
    return x


def _number(x: Any, field: str) -> float:
    """`x` as a float if it is a finite number (not a bool or a string)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        raise UserError(field, f"expected a finite number, got {x!r}")
    return float(x)

"""Exact fit of a FLOP polynomial in (n new tokens, p cached tokens) from sampled counts.

Prefill FLOPs of every layer we count are a polynomial of degree ≤ 2 in (n, p) with six
monomials (n, n², n·p, p, p², 1). Six samples at points in general position determine it;
the fit is solved in exact rational arithmetic and then checked at further points, so a
layer whose cost is not such a polynomial fails loudly instead of being approximated.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Callable, Sequence

from marconi.passes.cost_model import FlopPoly

# (n, p) samples: a triangle of the grid (unisolvent for degree 2), n, p ≥ 2 because the
# traced graph's dynamic dims start at 2, and p + n ≤ 7 so that sliding windows of ≥ 7
# tokens do not cap them.
FIT_POINTS: tuple[tuple[int, int], ...] = ((2, 2), (3, 2), (4, 2), (2, 3), (3, 3), (2, 4))
CHECK_POINTS: tuple[tuple[int, int], ...] = ((5, 2), (3, 4), (2, 5))

MONOMIALS = ("c_n", "c_nn", "c_np", "c_p", "c_pp", "c_1")


class FitError(ValueError):
    """The sampled counts are not a polynomial of degree ≤ 2 in (n, p)."""


def monomials(n: int, p: int) -> list[int]:
    return [n, n * n, n * p, p, p * p, 1]


def solve_exact(rows: Sequence[Sequence[int]], values: Sequence[int]) -> list[Fraction]:
    """Solve the square system rows · x = values exactly (Gauss-Jordan over Fractions)."""
    size = len(rows)
    a = [[Fraction(v) for v in row] + [Fraction(values[i])] for i, row in enumerate(rows)]
    for col in range(size):
        pivot = next((r for r in range(col, size) if a[r][col] != 0), None)
        if pivot is None:
            raise FitError("sample points are degenerate")
        a[col], a[pivot] = a[pivot], a[col]
        for r in range(size):
            if r != col and a[r][col] != 0:
                factor = a[r][col] / a[col][col]
                a[r] = [x - factor * y for x, y in zip(a[r], a[col])]
    return [a[i][size] / a[i][i] for i in range(size)]


def fit_poly(samples: dict[tuple[int, int], int]) -> FlopPoly:
    """FlopPoly through the counts at FIT_POINTS; exact at every other sampled point."""
    coeffs = solve_exact([monomials(n, p) for n, p in FIT_POINTS],
                         [samples[pt] for pt in FIT_POINTS])
    for (n, p), value in samples.items():
        got = sum(c * m for c, m in zip(coeffs, monomials(n, p)))
        if got != value:
            raise FitError(f"count at n={n}, p={p} is {value}, the degree-2 fit gives "
                           f"{float(got):.6g}")
    return FlopPoly(**{name: _number(c) for name, c in zip(MONOMIALS, coeffs)})


def fit_many(evaluate: Callable[[int, int], dict[str, int]],
             points: Sequence[tuple[int, int]] = FIT_POINTS + CHECK_POINTS
             ) -> dict[str, FlopPoly]:
    """Fit one polynomial per key of `evaluate(n, p)` (e.g. per layer) from shared samples."""
    per_key: dict[str, dict[tuple[int, int], int]] = {}
    for pt in points:
        counts = evaluate(*pt)
        for key in set(counts) | set(per_key):
            per_key.setdefault(key, {})[pt] = counts.get(key, 0)
    for key, samples in per_key.items():
        for pt in points:
            samples.setdefault(pt, 0)
    return {key: fit_poly(samples) for key, samples in per_key.items()}


def _number(c: Fraction) -> float | int:
    return int(c) if c.denominator == 1 else float(c)

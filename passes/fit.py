"""Exact fit of a FLOP polynomial in (n new tokens, p cached tokens) from sampled counts.

Prefill FLOPs of every layer we count are a polynomial of degree ≤ 2 in (n, p) with six
monomials (n, n², n·p, p, p², 1). Six samples at points in general position determine it;
the fit is solved in exact rational arithmetic and then checked at further points, so a
layer whose cost is not such a polynomial fails loudly instead of being approximated.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Callable, Sequence

from marconi.passes.cost_model import FlopPoly, causal_entries

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


def fit_windowed(samples: dict[tuple[int, int], int], span: int) -> FlopPoly:
    """FlopPoly of a sliding-window attention layer whose queries see at most `span` keys.

    Its cost is c_n·n + c_e·(E(n, p) - n/2) + c_p·p + c_pp·p² + c_1, where E(n, p) =
    Σ_{i=1..n} min(span, p + i) are the score entries; without the cap E - n/2 = n·p + n²/2,
    so the uncapped polynomial has c_nn = c_e/2 and c_np = c_e (what
    `LayerCost.prefill_flops` assumes when it applies the window).
    """
    def basis(n, p):
        return [Fraction(n), Fraction(2 * causal_entries(n, p, span) - n) / 2, Fraction(p),
                Fraction(p * p), Fraction(1)]

    chosen = _independent([basis(*pt) for pt in samples], list(samples), 5)
    coeffs = solve_exact([basis(*pt) for pt in chosen], [samples[pt] for pt in chosen])
    for (n, p), value in samples.items():
        got = sum(c * m for c, m in zip(coeffs, basis(n, p)))
        if got != value:
            raise FitError(f"count at n={n}, p={p} is {value}, the windowed fit gives "
                           f"{float(got):.6g}")
    c_n, c_e, c_p, c_pp, c_1 = coeffs
    return FlopPoly(c_n=_number(c_n), c_nn=_number(c_e / 2), c_np=_number(c_e),
                    c_p=_number(c_p), c_pp=_number(c_pp), c_1=_number(c_1))


def _independent(rows, points, size):
    """The first `size` points whose basis rows are linearly independent (exact rank)."""
    chosen, basis_rows = [], []
    for row, pt in zip(rows, points):
        trial = basis_rows + [[Fraction(v) for v in row]]
        if _rank(trial) == len(trial):
            basis_rows, chosen = trial, chosen + [pt]
            if len(chosen) == size:
                return chosen
    raise FitError("sample points are degenerate")


def _rank(rows) -> int:
    a = [list(r) for r in rows]
    rank, cols = 0, len(a[0]) if a else 0
    for col in range(cols):
        pivot = next((r for r in range(rank, len(a)) if a[r][col] != 0), None)
        if pivot is None:
            continue
        a[rank], a[pivot] = a[pivot], a[rank]
        for r in range(len(a)):
            if r != rank and a[r][col] != 0:
                f = a[r][col] / a[rank][col]
                a[r] = [x - f * y for x, y in zip(a[r], a[rank])]
        rank += 1
    return rank


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

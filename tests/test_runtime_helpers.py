"""The shared test helpers (tests/helpers.py) are what the tests assume."""

from __future__ import annotations

import pytest

from helpers import paper_7b_cost, toy_cost


@pytest.mark.parametrize("L", [100, 10_000, 32_768], ids=lambda L: f"L{L}")
def test_paper_7b_matches_closed_forms(L):
    """The hand-built model reproduces the paper's numbers (marconi.md §1.1, §4)."""
    cost = paper_7b_cost()
    assert cost.kv_bytes_per_token == 65_536
    assert cost.state_bytes() == 24 * 1_116_160            # 26.79 MB per checkpoint
    D, N = 4096, 128
    paper = (24 * (12 * L * D * D + 16 * L * D * N + 10 * L * D) + 4 * (8 * L * D * D
             + 2 * L * L * D) + 28 * 16 * L * D * D)       # causal attention: half of 4L²D
    assert cost.prefill_flops(L, 0) == pytest.approx(paper, rel=1e-12)


def test_toy_cost_is_what_the_tests_assume():
    cost = toy_cost(kv_per_token=2, state=7, flops_per_token=3.0, attention_np=0.5)
    assert (cost.kv_bytes_per_token, cost.state_bytes()) == (2, 7)
    assert cost.prefill_flops(4, 10) == 3.0 * 4 + 0.5 * 4 * 10

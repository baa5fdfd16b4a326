"""The Mooncake traces of ../shared/traces: `infinite` reproduces the README's figures."""

from __future__ import annotations

import json

import pytest

from marconi.runtime.capacity import Capacity
from marconi.runtime.config import CacheConfig
from marconi.runtime.sim.simulator import run_policy
from marconi.runtime.sim.trace_stats import prefix_stats
from marconi.runtime.workload import load_trace
from helpers import block_workload, paper_7b_cost

# ../shared/traces/README.md: ideal prefix hit (blocks, tokens) and branch points
README = {
    "mooncake_conversation.jsonl": (0.366, 0.374, 3876),
    "mooncake_synthetic.jsonl": (0.640, 0.651, 398),
}


@pytest.mark.parametrize("name", sorted(README), ids=lambda n: n.split("_")[1].split(".")[0])
def test_infinite_reproduces_the_readme_figures(traces_dir, name):
    workload = load_trace(traces_dir / name)
    assert workload.block_size == 512 and workload.block_size_inferred
    blocks, tokens, branch_points = README[name]
    stats = prefix_stats(workload)
    assert round(stats.ideal_id_hit_rate, 3) == blocks
    assert round(stats.ideal_token_hit_rate, 3) == tokens
    assert stats.branch_points == branch_points
    result = run_policy("infinite", workload, paper_7b_cost(),
                        CacheConfig(Capacity.shared(10**12)))
    assert result.block_hit_rate == pytest.approx(stats.ideal_id_hit_rate, abs=1e-12)
    assert result.token_hit_rate == pytest.approx(stats.ideal_token_hit_rate, abs=1e-12)
    assert (round(result.block_hit_rate, 3), round(result.token_hit_rate, 3)) == (blocks,
                                                                                   tokens)


def test_prefix_stats_worked_example():
    # ids [1,2,3], [1,2,4], [1,5], [1,2,3]: hits 0, 2, 1, 3 of 3+3+2+3 = 11 ids.
    # Trie: root→1 (1 child), 1→{2,5}, 2→{3,4}: branch points at "1" and "1,2".
    w = block_workload([(12, 0, [1, 2, 3]), (10, 0, [1, 2, 4]), (6, 0, [1, 5]),
                        (12, 0, [1, 2, 3])], block=4)
    s = prefix_stats(w)
    assert s.ideal_id_hit_rate == 6 / 11
    # tokens: 0 + 8 + 4 + 12 = 24 of 40
    assert s.ideal_token_hit_rate == 24 / 40
    assert s.branch_points == 2



def test_a_full_blocks_only_copy_of_a_real_trace(traces_dir, tmp_path):
    """The synthetic trace as an engine that hashes only full blocks writes it (floor(L/512)
    ids): 512 is still inferred, every line with a partial block has an unhashed tail, and
    the ideal hit equals a naive set-of-prefixes model over the full blocks alone."""
    rows = [json.loads(line) for line in
            (traces_dir / "mooncake_synthetic.jsonl").read_text().splitlines()]
    for r in rows:
        r["hash_ids"] = r["hash_ids"][:r["input_length"] // 512]
    path = tmp_path / "floor.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    w = load_trace(path)
    assert w.block_size == 512 and w.block_size_inferred
    assert w.unhashed_tail_lines == sum(r["input_length"] % 512 != 0 for r in rows) > 0
    seen: set[tuple[int, ...]] = set()
    hit = 0
    for r in rows:
        ids = tuple(r["hash_ids"])
        hit += 512 * max((k for k in range(len(ids) + 1) if ids[:k] in seen or k == 0))
        seen.update(ids[:k] for k in range(1, len(ids) + 1))
    assert prefix_stats(w).ideal_token_hit_rate == hit / w.total_input_tokens

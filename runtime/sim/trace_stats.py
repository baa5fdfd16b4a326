"""Prefix statistics of a trace, by the obviously-correct route (a plain dict trie).

`prefix_stats` gives the figures of ../shared/traces/README.md: the ideal prefix hit of an
infinite cache (requests in order, an id hits only if every id before it hit too, inputs
only), in ids and in tokens, and the number of branch points (trie nodes, the root
included, with at least two children). The `infinite` policy must reproduce the hit rates;
tests compare the two.
"""

from __future__ import annotations

import dataclasses

from marconi.runtime.workload import Workload


@dataclasses.dataclass(frozen=True)
class PrefixStats:
    requests: int
    input_ids: int
    input_tokens: int
    ideal_id_hit_rate: float
    ideal_token_hit_rate: float
    branch_points: int
    trie_nodes: int


def prefix_stats(workload: Workload) -> PrefixStats:
    children: dict[int, dict[int, int]] = {0: {}}   # trie node → {id: child node}
    hit_ids = hit_tokens = total_ids = 0
    for r in workload.requests:
        node, matched = 0, True
        for k, i in enumerate(r.input_ids):
            nxt = children[node].get(i)
            if nxt is None:
                if matched:
                    hit_ids += k
                    hit_tokens += r.prefix_tokens(k)
                    matched = False
                nxt = len(children)
                children[node][i] = nxt
                children[nxt] = {}
            node = nxt
        if matched:
            hit_ids += len(r.input_ids)
            hit_tokens += r.input_tokens
        total_ids += len(r.input_ids)
    tokens = workload.total_input_tokens
    return PrefixStats(
        requests=len(workload.requests), input_ids=total_ids, input_tokens=tokens,
        ideal_id_hit_rate=hit_ids / total_ids if total_ids else 0.0,
        ideal_token_hit_rate=hit_tokens / tokens if tokens else 0.0,
        branch_points=sum(1 for c in children.values() if len(c) >= 2),
        trie_nodes=len(children))

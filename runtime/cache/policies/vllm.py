"""vLLM's hybrid prefix caching: the paper's vLLM+ (`vllm-all`) and today's align mode."""

from __future__ import annotations

from marconi.runtime.cache.dense_cache import DenseCache
from marconi.runtime.cache.eviction import LeafLRU, StateAndLeafLRU
from marconi.runtime.cache.policies import register
from marconi.runtime.cache.policies.base import Admission, Policy
from marconi.runtime.cache.tree import Refresh


@register("vllm-all")
class VLLMAll(Policy):
    """The paper's vLLM+ (background/marconi.md §6.1; vLLM `--mamba-cache-mode all`).

    Admission: the whole input + output, with a state at every block boundary (every
    `block` tokens: the trace's block for block traces, 32 tokens for token workloads as in
    the paper, or ``--block-size``) and at the end of the sequence (the artifact's trailing
    partial-block node). Eviction: LRU over leaves, a leaf's blocks freed tail first, one
    block (KV + its state) at a time. Recency: every node on the matched and inserted path.
    KV is shared at id granularity (a radix tree), not duplicated per partial block.
    A state-free model hits whole blocks of cached KV (vLLM hashes full blocks only).
    """

    refresh = Refresh.PATH
    cache_class = DenseCache

    def __init__(self, cost, config, workload):
        super().__init__(cost, config, workload)
        self.block_ids = config.vllm_block(workload.block_size) // workload.block_size

    def make_cache(self):
        return DenseCache.for_cost(self.cost, self.capacity(), self.make_index(),
                                   hit_grid=self.hit_grid(), stride=self.block_ids,
                                   block=self.workload.block_size)

    def hit_grid(self):
        return self.block_ids * self.workload.block_size

    def make_index(self):
        return LeafLRU()

    def admit(self, seq, m):
        n = len(seq.ids)
        return Admission(n, (n,))

    def describe(self):
        return {"block_tokens": self.block_ids * self.workload.block_size}


@register("vllm-align")
class VLLMAlign(Policy):
    """Today's vLLM `--mamba-cache-mode align` with shared-prefix admission.

    (background/engines.md §2.3; vllm#30877, #37898, #45238.) Per request, with B the
    block (as for `vllm-all`):

    - a state at the last block boundary of the prefill, floor(L_in / B)·B tokens;
    - a state at the shared-prefix boundary, floor(kv / B)·B, when the request's KV match
      (`kv`) runs at least one block deeper than its state hit: the second sighting of a
      prefix checkpoints it, the third hits;
    - the KV of every full block of input + output (vLLM hashes full blocks only), so KV
      may extend past the last state.

    Eviction: vLLM's single LRU queue over KV and state blocks, as two LRU lists (leaves by
    path recency; states by the time they were created or consumed; the older goes first).
    A hit touches the whole KV path but only the consumed state. Decode-time states and
    the per-scheduler-step checkpoints of long chunked prefills are not modelled. A
    state-free model hits whole blocks of cached KV (vLLM hashes full blocks only).
    """

    refresh = Refresh.PATH
    kv_only_leaves = True

    def __init__(self, cost, config, workload):
        super().__init__(cost, config, workload)
        self.block = config.vllm_block(workload.block_size)

    def make_index(self):
        return StateAndLeafLRU()

    def hit_grid(self):
        return self.block

    def admit(self, seq, m):
        B, hit = self.block, m.hit_depth
        ckpts = set()
        prefill_end = seq.floor_grid(seq.n_input, B)
        if prefill_end > hit:
            ckpts.add(prefill_end)
        if seq.tokens(m.depth) - seq.tokens(hit) >= B:
            shared = seq.floor_grid(m.depth, B)
            if shared > hit:
                ckpts.add(shared)
        return Admission(seq.floor_grid(len(seq.ids), B), tuple(sorted(ckpts)))

    def describe(self):
        return {"block_tokens": self.block}

"""vLLM 0.33.0's hybrid prefix cache, as its flags make it (docs/engines/vllm.md).

Every behaviour below is read from the vllm 0.33.0 wheel (paths inside the ``vllm``
package; the functions are cited where they are used):

- One shared block pool, one page size (`platforms/interface.py:
  Platform.update_block_size_for_backend`): the attention block is raised until one
  attention page (block × KV bytes per token of one layer) holds one Mamba page (the
  state of one recurrent layer, at ``--mamba-ssm-cache-dtype``); the Mamba page is padded
  to the attention page, so a checkpoint costs a whole page per recurrent layer. In align
  mode the Mamba block is then set to that block, whatever ``--mamba-block-size`` said.
- A hit is capped at the prompt minus one token (`v1/core/kv_cache_manager.py:
  KVCacheManager.get_computed_blocks`, ``max_cache_hit_length = num_tokens - 1``) and is
  the deepest block boundary where the attention KV and a Mamba state are both cached
  (`v1/core/kv_cache_coordinator.py:HybridKVCacheCoordinator.find_longest_cache_hit`;
  `v1/core/single_type_kv_cache_manager.py:MambaManager.find_longest_cache_hit` scans
  right to left for the last cached state).
- States kept (`MambaManager.reachable_block_mask`, with the boundaries from
  `SingleTypeKVCacheManager.cache_blocks`): the replay boundary ``num_prompt_tokens - 1``
  (`kv_cache_coordinator.py:replay_boundaries`) floored to the block; the shared-prefix
  junction, where the attention group hit deeper than the Mamba group (vllm#37898:
  ``shared_prefix_boundary`` in `get_computed_blocks`, block-floored by
  `v1/core/sched/scheduler.py`, always on with prefix caching); and with
  ``--prefix-cache-retention-interval R > 0`` one state per R-token segment.
- The attention KV of every full block is cached (`block_pool.py:
  BlockPool.cache_full_blocks`); blocks go back to one LRU free queue, a request's tail
  first (`SingleTypeKVCacheManager.free`), modelled by `StateAndLeafLRU`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

from marconi.errors import UserError
from marconi.passes.cost_model import CostModel
from marconi.runtime.capacity import Capacity
from marconi.runtime.cache.eviction import StateAndLeafLRU
from marconi.runtime.cache.policies.base import Admission, Policy
from marconi.runtime.cache.prefix_cache import PrefixCache
from marconi.runtime.cache.tree import Refresh
from marconi.runtime.engines.base import Flag, Flags, check_choice, check_positive, \
    resolve_flags, ssm_dtype_cost, STATE_DTYPE_BYTES, trace_grid
from marconi.runtime.seq import Seq
from marconi.runtime.workload import Workload

VERSION = "0.33.0"

# FlashAttention's smallest kernel block on CUDA (`v1/attention/backends/flash_attn.py:
# FlashAttentionBackend.get_supported_kernel_block_sizes`, MultipleOf(16)); also
# `config/cache.py:CacheConfig.DEFAULT_BLOCK_SIZE`.
KERNEL_BLOCK = 16
DTYPE_BYTES = STATE_DTYPE_BYTES   # `config/cache.py:MambaDType`

PREFIX = "--enable-prefix-caching"
MODE = "--mamba-cache-mode"
MAMBA_BLOCK = "--mamba-block-size"
BLOCK = "--block-size"
RETENTION = "--prefix-cache-retention-interval"
SSM_DTYPE = "--mamba-ssm-cache-dtype"

FLAGS = (
    Flag(PREFIX, True, (True, False), "vllm/config/cache.py:CacheConfig.enable_prefix_caching",
         "off: no prefix lookups at all (KVCacheCoordinatorNoPrefixCache), every prompt misses"),
    Flag(MODE, None, (None, "align", "none"),
         "vllm/engine/arg_utils.py:EngineArgs.create_engine_config",
         "deprecated in 0.33.0, no effect: the mode follows --enable-prefix-caching "
         "(MambaModelConfig.verify_and_update_config); 'all' is gone"),
    Flag(MAMBA_BLOCK, None, (None, 256, 1024),
         "vllm/platforms/interface.py:Platform.update_block_size_for_backend",
         "a hybrid in align mode overwrites it with the block size; an attention-free "
         "model checkpoints every that many tokens; needs prefix caching"),
    Flag(BLOCK, KERNEL_BLOCK, (16, 32, 64, 128),
         "vllm/platforms/interface.py:Platform.update_block_size_for_backend",
         "the attention block before page alignment raises it (a multiple of it after)"),
    Flag(RETENTION, 0, (0, 2048, 4096, 8192),
         "vllm/v1/core/single_type_kv_cache_manager.py:MambaManager.reachable_block_mask",
         "0: states only at the prompt's last block and shared-prefix junctions; R: also "
         "one per R-token segment (every block when R < 2 blocks)"),
    Flag(SSM_DTYPE, "auto", ("auto", "float32", "float16", "bfloat16"),
         "vllm/config/cache.py:CacheConfig.mamba_ssm_cache_dtype",
         "the SSM state's dtype: changes the Mamba page, hence the block and the bytes "
         "per checkpoint"),
)


@dataclasses.dataclass(frozen=True)
class Layout:
    """How vLLM lays out one model in its pool.

    block_tokens: the attention block = the Mamba block = the hit grid.
    kv_page_bytes: one attention layer's page (block × its KV bytes per token).
    mamba_page_bytes: one recurrent layer's state at the chosen SSM dtype (unpadded).
    cost: the cost model the cache counts bytes with: each recurrent layer's state padded
        to the page it occupies.
    """

    block_tokens: int
    kv_page_bytes: int
    mamba_page_bytes: int
    cost: CostModel


def aligned_block(block: int, kv_page_1: int, mamba_page: int) -> int:
    """The attention block `update_block_size_for_backend` settles on: the least multiple
    of ``max(16, block)`` whose page (× `kv_page_1` bytes per token) holds `mamba_page`,
    rounded up to 16, or `block` itself if that is larger."""
    align = max(KERNEL_BLOCK, block)
    raised = align * math.ceil(mamba_page / (align * kv_page_1))
    raised = KERNEL_BLOCK * math.ceil(raised / KERNEL_BLOCK)
    return max(block, raised)


def aligned_block_ref(block: int, kv_page_1: int, mamba_page: int) -> int:
    """`aligned_block` by search: grow ``max(16, block)`` a step at a time until the page
    fits, then round to 16 (the slow path its test compares with)."""
    align = max(KERNEL_BLOCK, block)
    b = align
    while b * kv_page_1 < mamba_page:
        b += align
    while b % KERNEL_BLOCK:
        b += 1
    return max(block, b)


def layout(cost: CostModel, flags: dict[str, Any]) -> Layout:
    """The block and the padded pages of `cost`'s model under resolved `flags`."""
    cost = ssm_dtype_cost(cost, flags[SSM_DTYPE], SSM_DTYPE)
    attn = [l.kv_bytes_per_token for l in cost.layers if l.kv_bytes_per_token]
    rec = [l.state_bytes for l in cost.layers if l.state_bytes]
    kv_1 = max(attn, default=0)
    mamba_page = max(rec, default=0)
    if not rec:                          # no Mamba group: the block is as given
        return Layout(flags[BLOCK], flags[BLOCK] * kv_1, 0, cost)
    if not attn:                         # attention-free: `MambaModelConfig` uses the
        block = flags[MAMBA_BLOCK] or flags[BLOCK]   # Mamba block, default the block
        return Layout(block, 0, mamba_page, cost)
    block = aligned_block(flags[BLOCK], kv_1, mamba_page)
    page = block * kv_1
    # the Mamba page is padded to the attention page (mamba_page_size_padded)
    padded = tuple(dataclasses.replace(l, recurrent_state_bytes=page, conv_state_bytes=0)
                   if l.state_bytes else l for l in cost.layers)
    return Layout(block, page, mamba_page,
                  dataclasses.replace(cost, layers=padded, layout=f"vllm-{VERSION}"))


class VllmPrefixCache(PrefixCache):
    """The radix cache matched as vLLM looks up: at most the input minus one token
    (`KVCacheManager.get_computed_blocks`: ``max_cache_hit_length = num_tokens - 1``; the
    last token is recomputed for its logits). For a block trace, the input's ids minus
    one cover at most L_in − 1 tokens and floor to the same vLLM block."""

    def match(self, seq: Seq, n: int):
        return super().match(seq, max(n - 1, 0))


class VllmPolicy(Policy):
    """vLLM 0.33.0 with `flags` (resolved) bound; `policy(flags)` makes the subclass."""

    name: ClassVar[str] = f"vllm-{VERSION}"
    flags: ClassVar[dict[str, Any]] = {}
    refresh = Refresh.PATH
    kv_only_leaves = True                # full attention caches KV past the last state

    def __init__(self, cost, config, workload):
        super().__init__(cost, config, workload)
        self.layout = layout(cost, self.flags)
        # on a block-hash trace, the id grid at or above vLLM's block (`trace_grid`)
        self.block = trace_grid(self.layout.block_tokens, workload.block_size)
        self.caching = self.flags[PREFIX]
        interval = self.flags[RETENTION]
        per = interval // self.block
        # `reachable_block_mask`: one state per segment, every block when per ≤ 1
        self.stride = None if interval == 0 else self.block * max(per, 1)

    def capacity(self) -> Capacity:
        """vLLM's one shared pool of ``--kv-cache-memory-bytes`` (config.capacity.total)."""
        return Capacity(self.config.capacity.total_bytes)

    def make_cache(self):
        return VllmPrefixCache.for_cost(self.layout.cost, self.capacity(), self.make_index(),
                                        hit_grid=self.hit_grid())

    def hit_grid(self) -> int:
        return self.block

    def make_index(self):
        return StateAndLeafLRU()

    def admit(self, seq: Seq, m) -> Admission:
        if not self.caching:
            return Admission(0, ())
        B, hit = self.block, m.hit_depth
        end = seq.floor_grid(len(seq.ids), B)            # every full block's KV
        ckpts = {seq.floor_grid(seq.n_input - 1, B)}     # replay boundary L_in − 1
        ckpts.add(seq.floor_grid(m.depth, B))            # shared-prefix junction (#37898)
        if self.stride:
            t = (seq.tokens(hit) // self.stride + 1) * self.stride
            while t <= seq.tokens(end):
                ckpts.add(seq.floor_grid(depth_at(seq, t, end), B))
                t += self.stride
        return Admission(end, tuple(sorted(c for c in ckpts if hit < c <= end)))

    def describe(self) -> dict[str, Any]:
        lay = self.layout
        return {"engine": f"vllm {VERSION}", "flags": dict(self.flags),
                "block_tokens": lay.block_tokens, "kv_page_bytes": lay.kv_page_bytes,
                "mamba_page_bytes": lay.mamba_page_bytes,
                "state_bytes": lay.cost.state_bytes()}


def depth_at(seq: Seq, tokens: int, end: int) -> int:
    """The deepest depth ≤ `end` covering at most `tokens` tokens."""
    lo, hi = 0, end
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if seq.tokens(mid) <= tokens:
            lo = mid
        else:
            hi = mid - 1
    return lo


class VllmModel:
    """vLLM 0.33.0 (`base.EngineModel`)."""

    name = "vllm"
    version = VERSION
    flags = FLAGS

    def resolve(self, flags: Flags) -> dict[str, Any]:
        v = resolve_flags(self.flags, flags, self.name)
        if not isinstance(v[PREFIX], bool):
            raise UserError(PREFIX, f"{v[PREFIX]!r}; expected True or False")
        check_choice(MODE, v[MODE], (None, "align", "none"))
        if v[MAMBA_BLOCK] is not None:
            check_positive(MAMBA_BLOCK, v[MAMBA_BLOCK])
            if not v[PREFIX]:       # `config/vllm.py:VllmConfig.validate_mamba_block_size`
                raise UserError(MAMBA_BLOCK, "can only be set with --enable-prefix-caching")
        check_positive(BLOCK, v[BLOCK])
        r = v[RETENTION]
        if isinstance(r, bool) or not isinstance(r, int) or r < 0:
            raise UserError(RETENTION, f"{r!r}; expected a non-negative number of tokens")
        check_choice(SSM_DTYPE, v[SSM_DTYPE], ("auto", *DTYPE_BYTES))
        return v

    def policy(self, flags: Flags) -> type[Policy]:
        resolved = self.resolve(flags)
        return type("VllmPolicy_" + VERSION.replace(".", "_"), (VllmPolicy,),
                    {"flags": resolved, "__doc__": VllmPolicy.__doc__})

    def launch(self, model: str, flags: Flags, capacity_bytes: int | None) -> str:
        resolved = self.resolve(flags)
        words = ["vllm", "serve", model]
        if capacity_bytes is not None:
            words += ["--kv-cache-memory-bytes", str(int(capacity_bytes))]
        for f in self.flags:
            value = resolved[f.name]
            if value == f.default and type(value) is type(f.default):
                continue
            if isinstance(value, bool):     # argparse BooleanOptionalAction
                words.append(f.name if value else "--no-" + f.name[2:])
            else:
                words += [f.name, str(value)]
        return " ".join(words)

    def failure_modes(self, flags: Flags, workload: Workload, cost: CostModel) -> list[str]:
        v = self.resolve(flags)
        reqs = workload.requests
        if not reqs:
            return []
        n = len(reqs)
        out = []
        if not v[PREFIX]:
            out.append(f"prefix caching is off (--no-enable-prefix-caching): 100 % of the "
                       f"{n} prompts recompute from token 0")
        lay = layout(cost, v)
        B = lay.block_tokens
        if lay.mamba_page_bytes:
            short = sum(1 for r in reqs if r.input_tokens <= B)
            if short:
                out.append(f"{pct(short, n)} of prompts ({short} of {n}) are at most the "
                           f"{B}-token block: they can never hit (a hit needs a cached state "
                           f"at a block boundary below the prompt's last token, vllm#40696)")
            if B > v[BLOCK] and lay.kv_page_bytes:
                lost = sum(r.input_tokens - (r.input_tokens - 1) // B * B for r in reqs)
                total = sum(r.input_tokens for r in reqs)
                out.append(f"the attention block is raised from {v[BLOCK]} to {B} tokens so "
                           f"one attention page holds a {lay.mamba_page_bytes}-byte Mamba "
                           f"state: {pct(lost, total)} of prompt tokens lie past a prompt's "
                           f"last block boundary and are always recomputed")
            if lay.kv_page_bytes > lay.mamba_page_bytes:
                waste = lay.kv_page_bytes - lay.mamba_page_bytes
                out.append(f"each Mamba page is padded from {lay.mamba_page_bytes} to "
                           f"{lay.kv_page_bytes} bytes: {pct(waste, lay.kv_page_bytes)} of "
                           "every checkpoint's bytes are padding")
        if v[MODE] is not None:
            out.append(f"{MODE} {v[MODE]} has no effect in vLLM {VERSION} (deprecated; the "
                       "mode follows --enable-prefix-caching)")
        if v[MAMBA_BLOCK] is not None and lay.mamba_page_bytes and lay.kv_page_bytes:
            out.append(f"{MAMBA_BLOCK} {v[MAMBA_BLOCK]} is overwritten by the {B}-token "
                       "block on a hybrid model (align mode)")
        return out


def pct(part: float, whole: float) -> str:
    return f"{100.0 * part / whole:.0f} %" if whole else "0 %"


MODEL = VllmModel()

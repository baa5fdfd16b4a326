"""SGLang 0.5.23 as its flags make it: the unified radix cache with its Mamba component.

Every behaviour cites the file and function of sglang 0.5.23 (``python/sglang/srt/…``)
it follows; docs/engines/sglang.md has the table. In one paragraph: a radix tree over
tokens whose nodes hold KV and at most one Mamba state (`UnifiedRadixCache` +
`MambaComponent`); a separate, slot-granular state pool sized against the KV pool by
``--mamba-full-memory-ratio`` or ``--max-mamba-cache-size``, part of which running requests
hold as working slots; a request hits the deepest state whose whole path has KV, at most
``input_len - 1`` tokens deep; with an extra buffer one state per prefill (the last
grid-aligned position, or the branch point) and one per decode track boundary is tracked,
and a finished request donates one of them; KV is evicted leaf-first in the order of
``--radix-eviction-policy``, states by a plain LRU list, internal states leaving their KV.

Two model parameters are not flags (``SGLangModel(...)``): `running_requests`, how many
requests run at once and so hold working slots (the simulator replays one request at a
time: 1), and `mamba_chunk_size`, the model's scan chunk (FLA's 64 unless the model's
config sets ``mamba_chunk_size``). `head_v_dim` sizes the int8 checkpoint's scales.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from typing import Any

from marconi.errors import UserError
from marconi.passes.cost_model import CostModel
from marconi.runtime.capacity import Capacity
from marconi.runtime.cache.eviction import HeapIndex
from marconi.runtime.cache.policies.base import Admission, Policy
from marconi.runtime.cache.prefix_cache import PrefixCache
from marconi.runtime.cache.tree import DROP_STATE, REMOVE, EvictionIndex, Node, Refresh, \
    TraceClock
from marconi.runtime.engines.base import Flag, Flags, check_choice, check_positive, \
    resolve_flags, trace_grid
from marconi.runtime.seq import Seq
from marconi.runtime.workload import Workload

VERSION = "0.5.23"
STRATEGIES = ("auto", "no_buffer", "extra_buffer", "extra_buffer_lazy")
EVICTION_POLICIES = ("lru", "lfu", "slru", "priority")
SSM_DTYPES = (None, "float32", "bfloat16", "float16")
DTYPE_BYTES = {"float32": 4, "fp32": 4, "bfloat16": 2, "bf16": 2, "float16": 2, "fp16": 2,
               "half": 2, "int8": 1, "float8_e4m3fn": 1, "fp8": 1}

# mem_cache/kv_cache_configurator.py: MAMBA_CACHE_SIZE_MAX_RUNNING_REQUESTS_RATIO, the slots
# per running request max_running_requests is capped by (before the tracking slots).
BASE_SLOT_RATIO = 3
SLRU_PROTECTED = 2           # mem_cache/evict_policy.py: SLRUStrategy(protected_threshold=2)

_SRT = "python/sglang/srt"
FLAGS = (
    Flag("--mamba-radix-cache-strategy", "auto", STRATEGIES,
         f"{_SRT}/arg_groups/overrides.py:_mamba_radix_cache_resolution (auto); "
         f"{_SRT}/managers/schedule_batch.py:_mamba_radix_cache_v2_req_prepare_for_extend",
         "no_buffer: one state at the end of input+output; extra_buffer(_lazy): a state at "
         "the prefill's grid end or branch point, or the last decode track boundary; auto = "
         "extra_buffer (the overlap scheduler is on by default)"),
    Flag("--mamba-full-memory-ratio", 0.9, (0.3, 0.6, 0.9, 1.5, 3.0),
         f"{_SRT}/mem_cache/kv_cache_configurator.py:KVCacheConfigurator "
         "(mamba_budget = rest·r/(1+r))",
         "state pool bytes / KV pool bytes; the state pool gets r/(1+r) of the capacity"),
    Flag("--max-mamba-cache-size", None, (None, 64, 256, 1024),
         f"{_SRT}/mem_cache/kv_cache_configurator.py:KVCacheConfigurator",
         "state slots (+1 padding slot) instead of the ratio; the KV pool gets the rest"),
    Flag("--mamba-track-interval", 256, (64, 128, 256, 512, 1024),
         f"{_SRT}/runtime_context.py:mamba_track_grid; "
         f"{_SRT}/mem_cache/unified_cache/components/mamba.py:_select_finished_checkpoint",
         "extra_buffer: decode states every lcm(grid, interval) tokens; a finished "
         "request donates the last one"),
    Flag("--page-size", None, (None, 16, 64, 128, 256),
         f"{_SRT}/runtime_context.py:mamba_checkpoint_grid; "
         f"{_SRT}/arg_groups/mamba_hook.py:validate_mamba_no_buffer",
         "tokens per KV page (None = 1): the state grid is lcm(max(chunk, page), page); "
         "no_buffer needs 1"),
    Flag("--enable-int8-mamba-checkpoint", False, (False, True),
         f"{_SRT}/mem_cache/mamba_checkpoint_pool.py:maybe_init_int8_mamba_checkpoint_pool",
         "cached states live int8 in a separate pool of 2× the state slots, outside the "
         "KV budget; running requests keep the full-precision pool"),
    Flag("--radix-eviction-policy", "lru", EVICTION_POLICIES,
         f"{_SRT}/mem_cache/evict_policy.py (strategies); "
         f"{_SRT}/mem_cache/unified_cache/components/full.py:_evict_device_start",
         "order of KV leaf eviction; the Mamba component keeps a plain LRU list"),
    Flag("--mamba-ssm-dtype", None, SSM_DTYPES,
         f"{_SRT}/arg_groups/fields/exec_.py:ExecMamba.mamba_ssm_dtype",
         "dtype of the SSM (temporal) state: bytes per state slot; None = the model's"),
)


@dataclasses.dataclass(frozen=True)
class Resolved:
    """The flags after SGLang's own resolution and checks (names in snake case)."""

    strategy: str                 # no_buffer | extra_buffer | extra_buffer_lazy
    ratio: float
    max_slots: int | None
    track_interval: int
    page: int
    int8: bool
    eviction: str
    ssm_dtype: str | None
    grid: int                     # tokens between states (mamba_checkpoint_grid)
    track_grid: int               # tokens between decode states (mamba_track_grid)

    @property
    def extra_buffer(self) -> bool:
        return self.strategy != "no_buffer"

    @property
    def working_slots(self) -> int:
        """State slots one running request holds: its active slot and the ping-pong
        tracking slots (mem_cache/allocation_sizing.py:get_mamba_tracking_slots, overlap
        on: extra_buffer 2, lazy 1 until its track boundary, no_buffer 0)."""
        return 1 + {"no_buffer": 0, "extra_buffer": 2, "extra_buffer_lazy": 1}[self.strategy]

    @property
    def slot_ratio(self) -> int:
        """Slots per request that cap max_running_requests
        (kv_cache_configurator.py:_calculate_mamba_ratio): 3 + tracking slots."""
        return BASE_SLOT_RATIO + self.working_slots - 1


@dataclasses.dataclass(frozen=True)
class Layout:
    """How SGLang lays `total_bytes` out (`memory_layout`). Bytes and slots."""

    slots: int                    # max_mamba_cache_size: the active state pool
    slot_bytes: int               # one active slot (conv + temporal at --mamba-ssm-dtype)
    running_slots: int            # slots running requests hold
    cache_slots: int              # states the radix tree may hold
    cache_slot_bytes: int         # one cached state (int8 when the checkpoint pool is on)
    kv_bytes: int                 # the KV pool
    max_running: int              # SGLang's cap on running requests from the state pool

    def capacity(self) -> Capacity:
        state = self.cache_slots * self.cache_slot_bytes
        return Capacity(self.kv_bytes + state, state)


@dataclasses.dataclass(frozen=True)
class SGLangModel:
    """SGLang 0.5.23; see the module docstring for the three model parameters."""

    running_requests: int = 1
    mamba_chunk_size: int = 64
    head_v_dim: int = 128
    name: str = "sglang"
    version: str = VERSION
    flags: tuple[Flag, ...] = FLAGS

    def __post_init__(self):
        check_positive("running_requests", self.running_requests)
        check_positive("mamba_chunk_size", self.mamba_chunk_size)
        check_positive("head_v_dim", self.head_v_dim)

    # ------------------------------------------------------------------ flags
    def resolve(self, flags: Flags) -> dict[str, Any]:
        v = resolve_flags(self.flags, flags, self.name)
        check_choice("--mamba-radix-cache-strategy", v["--mamba-radix-cache-strategy"],
                     STRATEGIES)
        ratio = v["--mamba-full-memory-ratio"]
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or ratio <= 0:
            raise UserError("--mamba-full-memory-ratio", f"{ratio!r}; expected a positive "
                            "ratio of state-pool bytes to KV-pool bytes")
        if v["--max-mamba-cache-size"] is not None:
            check_positive("--max-mamba-cache-size", v["--max-mamba-cache-size"])
        if v["--page-size"] is not None:
            check_positive("--page-size", v["--page-size"])
        page = v["--page-size"] or 1
        check_positive("--mamba-track-interval", v["--mamba-track-interval"])
        if not isinstance(v["--enable-int8-mamba-checkpoint"], bool):
            raise UserError("--enable-int8-mamba-checkpoint",
                            f"{v['--enable-int8-mamba-checkpoint']!r}; expected True or False")
        check_choice("--radix-eviction-policy", v["--radix-eviction-policy"],
                     EVICTION_POLICIES)
        check_choice("--mamba-ssm-dtype", v["--mamba-ssm-dtype"], SSM_DTYPES)
        strategy = v["--mamba-radix-cache-strategy"]
        if strategy == "auto":
            # overrides.py: auto → extra_buffer when the overlap scheduler is on (its
            # default) or page_size > 1, for a model that supports it; modelled as such
            v["--mamba-radix-cache-strategy"] = strategy = "extra_buffer"
        if strategy == "no_buffer" and page != 1:
            # mamba_hook.py:validate_mamba_no_buffer
            raise UserError("--page-size", f"{page} with --mamba-radix-cache-strategy "
                            "no_buffer; expected 1 (no_buffer only supports page_size=1)")
        chunk = self.mamba_chunk_size
        if max(chunk, page) % min(chunk, page):
            # arg_groups/overrides.py:mamba_cache_chunk_size
            raise UserError("--page-size", f"{page} against the model's {chunk}-token scan "
                            "chunk; expected one to divide the other")
        if strategy != "no_buffer" and v["--mamba-track-interval"] % page:
            # mamba_hook.py:validate_mamba_extra_buffer
            raise UserError("--mamba-track-interval", f"{v['--mamba-track-interval']}; "
                            f"expected a multiple of --page-size {page}")
        return v

    def settings(self, flags: Flags) -> Resolved:
        """`resolve(flags)` as the model's typed settings."""
        v = self.resolve(flags)
        page = v["--page-size"] or 1
        grid = math.lcm(max(self.mamba_chunk_size, page), page)
        return Resolved(
            strategy=v["--mamba-radix-cache-strategy"], ratio=float(v["--mamba-full-memory-ratio"]),
            max_slots=v["--max-mamba-cache-size"], track_interval=v["--mamba-track-interval"],
            page=page, int8=v["--enable-int8-mamba-checkpoint"],
            eviction=v["--radix-eviction-policy"], ssm_dtype=v["--mamba-ssm-dtype"],
            grid=grid if v["--mamba-radix-cache-strategy"] != "no_buffer" else 1,
            track_grid=math.lcm(grid, v["--mamba-track-interval"]))

    # ------------------------------------------------------------------ memory
    def slot_bytes(self, s: Resolved, cost: CostModel) -> tuple[int, int]:
        """(active slot bytes, cached state bytes): the conv state at its dtype, the
        temporal (SSM) state at --mamba-ssm-dtype; int8 checkpoints keep the conv state,
        one byte per temporal element and one scale (at the temporal dtype) per
        `head_v_dim` elements (mamba_checkpoint_pool.py:MambaCheckpointPool)."""
        own = _dtype_bytes(cost.state_dtype, "cost model state_dtype")
        temporal = sum(l.recurrent_state_bytes for l in cost.layers)
        conv = sum(l.conv_state_bytes for l in cost.layers)
        width = _dtype_bytes(s.ssm_dtype, "--mamba-ssm-dtype") if s.ssm_dtype else own
        elements = temporal // own
        active = conv + elements * width
        if not s.int8:
            return active, active
        return active, conv + elements + -(-elements // self.head_v_dim) * width

    def memory_layout(self, flags: Flags, cost: CostModel, total_bytes: int) -> Layout:
        """The pools SGLang builds from `total_bytes` (the memory left for KV and states,
        its ``total_rest_memory``), kv_cache_configurator.py:KVCacheConfigurator:
        slots K = ⌊(rest·r/(1+r) − slot) / slot⌋ (K + 1 with the padding slot), or K =
        --max-mamba-cache-size; KV gets the rest. Running requests hold
        `running_requests` × working slots; the tree may hold the remaining slots, or with
        int8 checkpoints 2K int8 states in their own pool outside the budget."""
        s = self.settings(flags)
        slot, cached = self.slot_bytes(s, cost)
        if s.max_slots is not None:
            slots = s.max_slots
        else:
            budget = total_bytes * s.ratio / (1 + s.ratio)
            slots = int((budget - slot) // slot)
        where = "--max-mamba-cache-size" if s.max_slots else "--mamba-full-memory-ratio"
        kv = total_bytes - (slots + 1) * slot
        if slots <= 0 or kv <= 0:
            raise UserError(where, f"{slots} state slots of {slot} B leave "
                            f"{max(kv, 0)} B of KV in {total_bytes} B; expected room for both")
        running = self.running_requests * s.working_slots
        if s.int8:
            if running > slots:
                raise UserError(where, f"{slots} state slots; the {self.running_requests} "
                                f"running requests need {running}")
            cache = 2 * slots      # mamba_checkpoint_pool.py: int8_mamba_ckpt_size or 2·K
        else:
            cache = slots - running
            if cache <= 0:
                raise UserError(where, f"{slots} state slots; the {self.running_requests} "
                                f"running requests hold {running} ({s.working_slots} each), "
                                "leaving none for the cache")
        return Layout(slots, slot, running, cache, cached, kv, slots // s.slot_ratio)

    # ------------------------------------------------------------------ the policy
    def policy(self, flags: Flags) -> type[Policy]:
        s = self.settings(flags)
        model = self

        class SGLangPolicy(_SGLangPolicy):
            settings, engine = s, model
        SGLangPolicy.__qualname__ = SGLangPolicy.__name__ = \
            f"SGLang_{s.strategy}_{s.eviction}"
        SGLangPolicy.name = "sglang-" + s.strategy
        SGLangPolicy.flags = dict(self.resolve(flags))
        return SGLangPolicy

    # ------------------------------------------------------------------ launch line
    def launch(self, model: str, flags: Flags, capacity_bytes: int | None) -> str:
        """``python -m sglang.launch_server --model-path MODEL`` then each flag not at its
        default, in `FLAGS` order (a True switch bare). SGLang has no byte-budget flag (it
        sizes pools from --mem-fraction-static of the GPU), so `capacity_bytes` is not
        written; pin the state pool with --max-mamba-cache-size instead."""
        self.resolve(flags)
        parts = ["python -m sglang.launch_server", "--model-path", model]
        for f in self.flags:
            if f.name not in flags or flags[f.name] == f.default:
                continue
            value = flags[f.name]
            if value is True:
                parts.append(f.name)
            elif value is not False and value is not None:
                parts += [f.name, str(value)]
        return " ".join(parts)

    # ------------------------------------------------------------------ failure modes
    def failure_modes(self, flags: Flags, workload: Workload, cost: CostModel) -> list[str]:
        s = self.settings(flags)
        reqs = workload.requests
        n = len(reqs)
        if not n or not cost.state_bytes():
            return []
        out = []
        if s.extra_buffer:
            short = sum(r.input_tokens < s.grid for r in reqs)
            if short:
                out.append(f"{_pct(short, n)} of prompts are shorter than the {s.grid}-token "
                           "state grid: their prefill tracks no state, so nothing after "
                           "their hit is ever cached")
            past = sum(_decode_state(r.input_tokens, r.output_tokens, s.track_grid)
                       for r in reqs)
            if past:
                out.append(f"{_pct(past, n)} of requests decode past a {s.track_grid}-token "
                           "track boundary: a finished request donates one state, so their "
                           "prefill or branch-point state is dropped for the decode one")
        else:
            out.append(f"{_pct(n, n)} of requests are cached only at the end of input + "
                       "output (no_buffer): a later prompt hits a state only if it extends "
                       "that whole sequence, never at a shared system prompt")
        exact = _aligned_repeats(workload, s.grid) if s.extra_buffer else 0
        if exact:
            out.append(f"{_pct(exact, n)} of prompts repeat an earlier prompt whose state "
                       "would sit at its very end: SGLang matches at most input_len − 1 "
                       "tokens, so that state is one token too deep to hit")
        if s.max_slots is not None and s.max_slots // s.slot_ratio < self.running_requests:
            out.append(f"--max-mamba-cache-size {s.max_slots} caps running requests at "
                       f"{s.max_slots // s.slot_ratio} ({s.slot_ratio} slots each), below the "
                       f"{self.running_requests} assumed")
        return out


class _SGLangPolicy(Policy):
    """The policy `SGLangModel.policy` binds `settings` into (see the module docstring)."""

    settings: Resolved
    engine: SGLangModel
    flags: dict[str, Any] = {}
    # full component: the matched and inserted path is refreshed; mamba component: only
    # the consumed state (components/mamba.py:refresh_lru MATCH_END), i.e. state_access
    refresh = Refresh.PATH

    def __init__(self, cost, config, workload):
        super().__init__(cost, config, workload)
        s, block = self.settings, workload.block_size
        # on a block-hash trace, the id grid at or above each of SGLang's (`trace_grid`)
        self.grid, self.track_grid = trace_grid(s.grid, block), trace_grid(s.track_grid, block)
        self.page = trace_grid(s.page, block) if s.page > 1 else None
        self.layout = None
        total = config.capacity.total_bytes
        if total is not None and cost.state_bytes():
            self.layout = self.engine.memory_layout(self.flags, cost, total)

    def capacity(self) -> Capacity:
        if self.layout is None:
            return self.config.capacity
        return self.layout.capacity()

    def make_cache(self):
        sb = cost_sb = self.cost.state_bytes()
        if cost_sb:
            sb = self.engine.slot_bytes(self.settings, self.cost)[1]
        return SGLangCache(self.cost.kv_bytes_per_token, sb, self.capacity(),
                           self.make_index(), state_free=cost_sb == 0,
                           hit_grid=self.hit_grid())

    def hit_grid(self):
        # a plain radix cache matches whole pages (radix_cache.py: page-aligned keys)
        return self.page

    def make_index(self):
        return TwoListIndex(self.settings.eviction)

    def admit(self, seq: Seq, m) -> Admission:
        s, hit = self.settings, m.hit_depth
        if not s.extra_buffer:
            # no_buffer: the running slot is donated at the committed length (the last
            # sampled token has no KV): mamba.py:prepare_for_caching_req
            end = _committed(seq)
            return Admission(end, (end,)) if end > hit else Admission(hit)
        # extra_buffer: schedule_batch.py:_mamba_radix_cache_v2_req_prepare_for_extend
        track = hit
        end = seq.floor_grid(seq.n_input, self.grid)
        if end > hit:
            track = end
            branch = seq.floor_grid(m.depth, self.grid)    # mamba.py: branching_seqlen
            if hit < branch < end:
                track = branch
        decode = seq.floor_grid(_committed(seq), self.track_grid)
        if seq.tokens(decode) > seq.input_tokens:
            track = decode                                 # the last decode track wins
        if track > hit:
            return Admission(track, (track,))
        return Admission(hit)

    def describe(self):
        out = {"engine": f"sglang {VERSION}", "flags": dict(self.flags),
               "running_requests": self.engine.running_requests,
               "mamba_chunk_size": self.engine.mamba_chunk_size,
               "state_grid_tokens": self.grid, "track_grid_tokens": self.track_grid}
        if self.layout is not None:
            out["layout"] = dataclasses.asdict(self.layout)
        return out


class SGLangCache(PrefixCache):
    """The radix cache with SGLang's two rules our shared cache lacks: a match reads at most
    ``input_len − 1`` tokens (managers/schedule_batch.py:Req._compute_max_prefix_len), and
    nodes count the inserts that walk through them (unified_tree_core.py:
    _inc_hit_count_and_check; a split copies the count) for lfu/slru. `kv_need` tells
    the index which pool an eviction round is for."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.hit_count: dict[Node, int] = {}
        self.kv_need = 0                  # KV bytes the running eviction round makes room for

    def match(self, seq, n):
        return super().match(seq, min(n, seq.n_input - 1))

    def insert(self, seq, length, checkpoints=(), start=None):
        end = super().insert(seq, length, checkpoints, start)
        node = end
        while node is not None and node is not self.root:
            self.hit_count[node] = self.hit_count.get(node, 0) + 1
            self.index.update(node)
            node = node.parent
        return end

    def on_split(self, upper, node):
        super().on_split(upper, node)
        self.hit_count[upper] = self.hit_count.get(node, 0)

    def on_remove(self, node):
        super().on_remove(node)
        self.hit_count.pop(node, None)

    def evict(self, kv_need, state_need):
        self.kv_need = kv_need
        return super().evict(kv_need, state_need)

    def kv_short(self) -> bool:
        """The KV pool (or the one shared pool) cannot take the pending insert yet."""
        cap = self.capacity
        return not cap.separate or self.kv_used + self.kv_need > cap.kv_limit

    def _blank(self, index: EvictionIndex) -> SGLangCache:
        return SGLangCache(self.kpt, self.sb, self.capacity, index, TraceClock(self.clock.now),
                           self.state_free, self.hit_grid)


class TwoListIndex(HeapIndex):
    """SGLang's two eviction orders (unified_tree_core.py: evict_for_alloc by component).

    Full component (KV short): leaves only, by the --radix-eviction-policy priority
    (evict_policy.py: lru = last access; lfu = (hits, last access); slru = (hits ≥ 2, last
    access); priority = (request priority, last access), every request priority 0 here);
    removing a leaf frees its KV and its state. Mamba component (state pool short): a plain
    LRU list over states by the time each was created or consumed (components/mamba.py:
    _evict_device_next_node): a leaf is removed, an internal node keeps its KV (tombstone).
    """

    def __init__(self, policy: str):
        super().__init__()
        self.policy = policy
        self._leaves: list = []
        self._states: list = []

    def _heaps(self):
        return (self._leaves, self._states)

    def _priority(self, node: Node) -> tuple:
        hits = self.cache.hit_count.get(node, 0)
        if self.policy == "lfu":
            return (hits, node.last_access)
        if self.policy == "slru":
            return (int(hits >= SLRU_PROTECTED), node.last_access)
        return (0, node.last_access)      # lru, and priority with every request at 0

    def update(self, node: Node) -> None:
        node.stamp += 1
        leaf = node.alive and not node.children
        state = node.alive and node.ckpt
        self._count(node, leaf or state, self._leaves)
        if leaf:
            heapq.heappush(self._leaves, (*self._priority(node), node.uid, node.stamp, node))
        if state:
            heapq.heappush(self._states, (node.state_access, node.uid, node.stamp, node))

    def victim(self):
        if self.cache.state_free or self.cache.kv_short():
            entry = self._top(self._leaves)
            return None if entry is None else (entry[-1], REMOVE)
        entry = self._top(self._states)
        if entry is None:
            entry = self._top(self._leaves)
            return None if entry is None else (entry[-1], REMOVE)
        node = entry[-1]
        return node, REMOVE if not node.children else DROP_STATE


# ---------------------------------------------------------------------- helpers
def _dtype_bytes(dtype: str, where: str) -> int:
    try:
        return DTYPE_BYTES[str(dtype).lower().removeprefix("torch.")]
    except KeyError:
        raise UserError(where, f"unknown dtype {dtype!r}; expected one of "
                        f"{', '.join(DTYPE_BYTES)}") from None


def _committed(seq: Seq) -> int:
    """Ids whose KV a finished request has: input + output but the last sampled token."""
    if seq.total_tokens <= seq.input_tokens:
        return len(seq.ids)
    d = len(seq.ids)
    while seq.tokens(d) > seq.total_tokens - 1:
        d -= 1
    return d


def _decode_state(input_tokens: int, output_tokens: int, track_grid: int) -> bool:
    committed = input_tokens + output_tokens - 1
    return output_tokens > 0 and committed // track_grid * track_grid > input_tokens


def _aligned_repeats(workload: Workload, grid: int) -> int:
    """Prompts equal to an earlier prompt whose length is on the state grid."""
    seen, count = set(), 0
    for r in workload.requests:
        if r.input_ids in seen and r.input_tokens % grid == 0:
            count += 1
        seen.add(r.input_ids)
    return count


def _pct(k: int, n: int) -> str:
    return f"{100 * k / n:.0f} %"


MODEL = SGLangModel()

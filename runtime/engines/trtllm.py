"""TensorRT-LLM's hybrid (Mamba + attention) prefix cache, as its flags make it
(docs/engines/trtllm.md).

The release modelled is tensorrt-llm 1.2.1 (the registry's current one). The behaviour is
read from the NVIDIA/TensorRT-LLM sources as stored for this project (a main-branch
snapshot of ``tensorrt_llm/llmapi/llm_args.py`` and ``tensorrt_llm/_torch/pyexecutor/
kv_cache/mamba_cache_manager/mamba_cache_manager_v2.py``; the doc says which parts could not
be checked against the 1.2.1 wheel). Paths below are inside that repository:

- Every flag lives in ``kv_cache_config`` of the LLM API (`llmapi/llm_args.py:
  KvCacheConfig`, `MambaStateConfig`, `BlockReuseConfig`), set through
  ``trtllm-serve MODEL --extra_llm_api_options FILE``.
- A hit reuses KV up to the deepest recurrent-state snapshot on the matched path; the prefix
  lookup leaves out the prompt's last token, which prefill recomputes
  (`MambaHybridCacheManagerV2._create_kv_cache`: ``request_total_tokens =
  len(input_tokens) + 1``), so a hit is at most L_in − 1 tokens.
- Snapshots are taken only at planned points of a prompt (``expect_snapshot_points``,
  `mamba_cache_manager/common.py:MambaHybridCacheManager.prepare_expect_snapshot_points`,
  extended by `MambaHybridCacheManagerV2.prepare_expect_snapshot_points`): every
  ``periodic_snapshot_interval`` tokens, the ``additional_snapshot_offsets_from_start`` /
  ``_from_end`` offsets that fall inside the prompt, and with ``enable_branch_snapshot`` the
  block-aligned point where the prompt leaves the cache, plus the prompt end when no other
  point applies (`_record_branch_snapshot_point`, `_apply_branch_snapshot_point`). With no
  point configured nothing is snapshotted and a hybrid model never hits.
- On a hybrid model ``block_reuse_config.policy: all_reusable`` is turned into
  ``per_request`` (`MambaHybridCacheManagerV2.__init__`: SSM reuse is valid only at
  snapshot boundaries); ``per_conversation`` disables the periodic snapshots
  (`KvCacheConfig.disable_periodic_mamba_snapshots_for_conversations`) and, for requests
  without conversation parameters (every trace here), behaves as ``per_request``.
- Memory: one V2 pool; ``pool_ratio`` fixes the byte ratio of the layer groups
  (attention, then Mamba), which the model replays as separate KV and state pools.
  ``mamba_ssm_cache_dtype`` sets the SSM state's bytes (`MambaHybridCacheManagerV2.__init__`:
  ``ssm_bytes = prod(ssm_state_shape) * ssm_state_dtype.itemsize``; the conv state keeps
  the model dtype).
"""

from __future__ import annotations

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

VERSION = "1.2.1"
ARGS = "tensorrt_llm/llmapi/llm_args.py"
COMMON = "tensorrt_llm/_torch/pyexecutor/kv_cache/mamba_cache_manager/common.py"
V2 = "tensorrt_llm/_torch/pyexecutor/kv_cache/mamba_cache_manager/mamba_cache_manager_v2.py"
DTYPE_BYTES = STATE_DTYPE_BYTES

REUSE = "enable_block_reuse"
BLOCK = "tokens_per_block"
PERIODIC = "mamba_state_config.periodic_snapshot_interval"
FROM_START = "mamba_state_config.additional_snapshot_offsets_from_start"
FROM_END = "mamba_state_config.additional_snapshot_offsets_from_end"
BRANCH = "mamba_state_config.enable_branch_snapshot"
POLICY = "block_reuse_config.policy"
POOL_RATIO = "pool_ratio"
SSM_DTYPE = "mamba_ssm_cache_dtype"

POLICIES = ("all_reusable", "per_request", "per_conversation")

FLAGS = (
    Flag(REUSE, True, (True, False), f"{ARGS}:KvCacheConfig.enable_block_reuse",
         "off: no prefix reuse at all, every prompt recomputes from token 0"),
    Flag(BLOCK, 32, (32, 16, 64, 128), f"{V2}:MambaHybridCacheManagerV2."
         "_record_branch_snapshot_point",
         "the KV block; a branch snapshot is aligned down to it"),
    Flag(PERIODIC, 0, (0, 256, 512, 1024, 2048),
         f"{COMMON}:MambaHybridCacheManager.prepare_expect_snapshot_points",
         "0: no periodic snapshots; N: a state every N prompt tokens"),
    Flag(FROM_START, (), ((), (256,), (1024,), (2048,)),
         f"{COMMON}:MambaHybridCacheManager.prepare_expect_snapshot_points",
         "a state at each offset from the prompt start that lies inside the prompt"),
    Flag(FROM_END, (), ((), (0,), (1,), (64,)),
         f"{COMMON}:MambaHybridCacheManager.prepare_expect_snapshot_points",
         "a state at each offset back from the prompt end (0 = the prompt end) inside it"),
    Flag(BRANCH, False, (False, True),
         f"{V2}:MambaHybridCacheManagerV2._apply_branch_snapshot_point",
         "a state where the prompt leaves the cache (block-aligned), and at the prompt end "
         "when no other snapshot point applies"),
    Flag(POLICY, "all_reusable", POLICIES,
         f"{ARGS}:KvCacheConfig.disable_periodic_mamba_snapshots_for_conversations",
         "all_reusable becomes per_request on a hybrid; per_conversation drops the "
         "periodic snapshots"),
    Flag(POOL_RATIO, None, (None, (0.95, 0.05), (0.9, 0.1), (0.8, 0.2), (0.5, 0.5)),
         f"{ARGS}:KvCacheConfig.pool_ratio",
         "None: one pool; (kv, mamba): the byte split between the attention and Mamba "
         "layer groups"),
    Flag(SSM_DTYPE, "auto", ("auto", "float32", "float16", "bfloat16"),
         f"{V2}:MambaHybridCacheManagerV2.__init__",
         "the SSM state's dtype: changes the bytes of every snapshot"),
)


def planned_points(prompt_tokens: int, flags: dict[str, Any]) -> set[int]:
    """The snapshot points (in tokens) that the periodic interval and the additional
    offsets plan for a prompt of `prompt_tokens` tokens; resolved `flags`
    (`MambaHybridCacheManager.prepare_expect_snapshot_points`: multiples of the interval up
    to the prompt length, start offsets ≤ it, prompt length − end offset when > 0)."""
    points = set()
    interval = effective_interval(flags)
    if interval:
        points.update(range(interval, prompt_tokens + 1, interval))
    points.update(o for o in flags[FROM_START] if o <= prompt_tokens)
    points.update(prompt_tokens - o for o in flags[FROM_END] if 0 < prompt_tokens - o)
    return points


def effective_interval(flags: dict[str, Any]) -> int:
    """The periodic interval after `disable_periodic_mamba_snapshots_for_conversations`."""
    return 0 if flags[POLICY] == "per_conversation" else flags[PERIODIC]


def branch_point(divergence: int, reused: int, prompt_tokens: int, block: int) -> int | None:
    """`_record_branch_snapshot_point`: the fork aligned down to the block, kept only if it
    is above 0, above what was reused, and below the prompt end (tokens)."""
    point = divergence // block * block
    if point == 0 or point <= reused or point >= prompt_tokens:
        return None
    return point


class TrtllmPrefixCache(PrefixCache):
    """The radix cache matched as TensorRT-LLM looks up: the prompt minus its last token."""

    def match(self, seq: Seq, n: int):
        return super().match(seq, max(n - 1, 0))


class TrtllmPolicy(Policy):
    """TensorRT-LLM 1.2.1 with `flags` (resolved) bound; `policy(flags)` makes the subclass."""

    name: ClassVar[str] = "trtllm-engine"
    flags: ClassVar[dict[str, Any]] = {}
    refresh = Refresh.PATH
    kv_only_leaves = True

    def __init__(self, cost, config, workload):
        super().__init__(cost, config, workload)
        # on a block-hash trace, the id grid at or above tokens_per_block (`trace_grid`)
        self.block = trace_grid(self.flags[BLOCK], workload.block_size)
        self.state_cost = ssm_dtype_cost(cost, self.flags[SSM_DTYPE], SSM_DTYPE)

    def capacity(self) -> Capacity:
        """One pool of ``max_gpu_total_bytes`` (config.capacity.total), or with
        ``pool_ratio`` (kv, mamba) a state pool of the Mamba group's share."""
        total = self.config.capacity.total_bytes
        ratio = self.flags[POOL_RATIO]
        if total is None or ratio is None:
            return Capacity(total)
        return Capacity(total, max(1, int(total * ratio[1])))

    def make_cache(self):
        return TrtllmPrefixCache.for_cost(self.state_cost, self.capacity(), self.make_index(),
                                          hit_grid=self.hit_grid())

    def hit_grid(self) -> int | None:
        return None                      # a hit lands on a snapshot, wherever it is

    def make_index(self):
        return StateAndLeafLRU()

    def admit(self, seq: Seq, m) -> Admission:
        if not self.flags[REUSE]:
            return Admission(0, ())
        prompt = seq.input_tokens
        points = planned_points(prompt, self.flags)
        if self.flags[BRANCH]:
            if not points:               # the prompt-end fallback
                points.add(prompt)
            if m.depth < seq.n_input - 1:    # else the whole lookup matched: no fork
                p = branch_point(seq.tokens(m.depth), seq.tokens(m.hit_depth), prompt,
                                 self.block)
                if p is not None:
                    points.add(p)
        hit = m.hit_depth
        ckpts = {depth_of(seq, t) for t in points}
        return Admission(len(seq.ids), tuple(sorted(d for d in ckpts if d > hit)))

    def describe(self) -> dict[str, Any]:
        return {"engine": f"trtllm {VERSION}", "flags": dict(self.flags),
                "effective_policy": effective_policy(self.flags),
                "periodic_snapshot_interval": effective_interval(self.flags),
                "state_bytes": self.state_cost.state_bytes(),
                "capacity": self.capacity().describe()}


def effective_policy(flags: dict[str, Any]) -> str:
    """The reuse policy a hybrid runs (`MambaHybridCacheManagerV2.__init__`)."""
    return "per_request" if flags[POLICY] == "all_reusable" else flags[POLICY]


def depth_of(seq: Seq, tokens: int) -> int:
    """The input depth (ids) covering exactly `tokens` prompt tokens, or the deepest below
    it on a block trace (a snapshot inside a block is not addressable there)."""
    if tokens >= seq.input_tokens:
        return seq.n_input
    return tokens // seq.block


class TrtllmModel:
    """TensorRT-LLM 1.2.1 (`base.EngineModel`)."""

    name = "trtllm"
    version = VERSION
    flags = FLAGS

    def resolve(self, flags: Flags) -> dict[str, Any]:
        v = resolve_flags(self.flags, flags, self.name)
        for f in (REUSE, BRANCH):
            if not isinstance(v[f], bool):
                raise UserError(f, f"{v[f]!r}; expected true or false")
        check_positive(BLOCK, v[BLOCK])
        p = v[PERIODIC]
        if isinstance(p, bool) or not isinstance(p, int) or p < 0:
            raise UserError(PERIODIC, f"{p!r}; expected a non-negative number of tokens")
        v[FROM_START] = offsets(FROM_START, v[FROM_START], minimum=1)
        v[FROM_END] = offsets(FROM_END, v[FROM_END], minimum=0)
        check_choice(POLICY, v[POLICY], POLICIES)
        v[POOL_RATIO] = pool_ratio(v[POOL_RATIO])
        check_choice(SSM_DTYPE, v[SSM_DTYPE], ("auto", *DTYPE_BYTES))
        return v

    def policy(self, flags: Flags) -> type[Policy]:
        resolved = self.resolve(flags)
        return type("TrtllmPolicy_" + VERSION.replace(".", "_"), (TrtllmPolicy,),
                    {"flags": resolved, "__doc__": TrtllmPolicy.__doc__})

    def launch(self, model: str, flags: Flags, capacity_bytes: int | None) -> str:
        """``trtllm-serve MODEL --extra_llm_api_options extra_llm_api_options.yaml``, a
        blank line, then that file's text (flags at default left out)."""
        v = self.resolve(flags)
        top: list[str] = []
        nested: dict[str, list[str]] = {}
        if capacity_bytes is not None:
            top.append(f"max_gpu_total_bytes: {int(capacity_bytes)}")
        for f in self.flags:
            value = v[f.name]
            if value == f.default and type(value) is type(f.default):
                continue
            head, _, key = f.name.rpartition(".")
            line = f"{key}: {yaml_value(value)}"
            (nested.setdefault(head, []) if head else top).append(line)
        lines = ["kv_cache_config:"] if top or nested else []
        lines += ["  " + l for l in top]
        for head, body in nested.items():
            lines.append(f"  {head}:")
            lines += ["    " + l for l in body]
        cmd = f"trtllm-serve {model} --extra_llm_api_options extra_llm_api_options.yaml"
        return cmd + "\n\n# extra_llm_api_options.yaml\n" + "\n".join(lines) + \
            ("\n" if lines else "")

    def failure_modes(self, flags: Flags, workload: Workload, cost: CostModel) -> list[str]:
        v = self.resolve(flags)
        reqs = workload.requests
        if not reqs:
            return []
        n = len(reqs)
        out = []
        if not v[REUSE]:
            out.append(f"block reuse is off (enable_block_reuse: false): 100 % of the {n} "
                       "prompts recompute from token 0")
            return out
        if not any(l.state_bytes for l in cost.layers):
            return out
        if v[POLICY] == "per_conversation" and v[PERIODIC]:
            out.append(f"block_reuse_config.policy per_conversation sets "
                       f"periodic_snapshot_interval {v[PERIODIC]} to 0: no periodic "
                       "snapshots are taken")
        planned = [planned_points(r.input_tokens, v) for r in reqs]
        none = sum(1 for r, p in zip(reqs, planned)
                   if not any(t <= r.input_tokens - 1 for t in p))
        if not v[BRANCH] and none:
            out.append(f"{pct(none, n)} of prompts ({none} of {n}) get no snapshot below "
                       "their last token from the periodic interval and offsets, so no "
                       "later identical prompt can hit them"
                       + (" (no snapshot point is configured at all: TensorRT-LLM takes "
                          "none)" if none == n and not any(planned) else ""))
        if v[FROM_START]:
            ignored = sum(1 for r in reqs if all(o > r.input_tokens for o in v[FROM_START]))
            if ignored:
                out.append(f"{pct(ignored, n)} of prompts are shorter than every "
                           f"additional_snapshot_offsets_from_start offset {list(v[FROM_START])}"
                           ": the offsets are ignored for them")
        return out


def offsets(flag: str, value: Any, minimum: int) -> tuple[int, ...]:
    """A list of ints ≥ `minimum`, as a sorted tuple without repeats."""
    if not isinstance(value, (list, tuple)):
        raise UserError(flag, f"{value!r}; expected a list of integers")
    for o in value:
        if isinstance(o, bool) or not isinstance(o, int) or o < minimum:
            raise UserError(flag, f"{o!r}; expected integers ≥ {minimum}")
    return tuple(sorted(set(value)))


def pool_ratio(value: Any) -> tuple[float, float] | None:
    """None, or two positive floats summing to 1 (`KvCacheConfig.validate_pool_ratio`;
    two because the model has one attention and one Mamba layer group)."""
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise UserError(POOL_RATIO, f"{value!r}; expected two ratios (attention, mamba)")
    if any(isinstance(r, bool) or not isinstance(r, (int, float)) or r <= 0 for r in value):
        raise UserError(POOL_RATIO, f"{list(value)}; expected positive ratios")
    if not math.isclose(sum(value), 1.0, rel_tol=0.0, abs_tol=1e-6):
        raise UserError(POOL_RATIO, f"{list(value)}; expected ratios summing to 1.0")
    return (float(value[0]), float(value[1]))


def yaml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(yaml_value(x) for x in value) + "]"
    return str(value)


def pct(part: float, whole: float) -> str:
    return f"{100.0 * part / whole:.0f} %" if whole else "0 %"


MODEL = TrtllmModel()

"""What a plan needs from an engine: which of its rules the engine's flags can express,
and what the rest cost on the workload.

A `Plan` (`runtime.plan.rules`) has admission rules (input end, output end, branch points
and their sighting, stride, minimum prefix, fresh-input admission, pinned prefixes),
eviction rules (class offsets, the FLOP-efficiency term) and a memory rule (one pool or a
split), all on an exact or engine checkpoint grid. Each engine's flags express some of them
(`SUPPORT`: a table per engine, each row naming the flag that expresses the rule or why
none does, from background/engines.md and the engine models' cited sources).

`measure_gaps` measures by replay: `planned` with the plan as fitted (the reference), then
with each rule the engine cannot express switched off (or the grid snapped to the engine's),
one at a time, and with all of them at once (the plan the engine could run). The FLOP
savings each costs is reference − that replay. A rule the plan does not use costs nothing
and is not replayed.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from typing import Any, Callable

from marconi.errors import UserError
from marconi.passes.cost_model import CostModel
from marconi.runtime.cache.policies.planned import Planned
from marconi.runtime.config import CacheConfig
from marconi.runtime.engines.base import EngineModel, Flags
from marconi.runtime.plan.rules import CLASSES, MemoryRules, Plan
from marconi.runtime.sim.executor import Executor, LocalExecutor
from marconi.runtime.sim.simulator import replay_policy
from marconi.runtime.workload import Workload


class Rule(str, enum.Enum):
    """A rule of the plan, as the expressibility table names it."""

    GRID = "checkpoint grid"            # positions exact (or the plan's grid)
    INPUT_END = "input-end checkpoints"
    OUTPUT_END = "output-end checkpoints"
    BRANCH = "branch-point checkpoints"
    STRIDE = "stride checkpoints in new content"
    MIN_PREFIX = "minimum checkpoint depth"
    FRESH = "fresh-input admission"
    PINNED = "pinned prefixes"
    OFFSETS = "class-offset eviction"
    EFFICIENCY = "FLOP-aware eviction"
    MEMORY = "memory split"

    def __str__(self) -> str:
        return self.value


class Support(str, enum.Enum):
    YES = "yes"
    NO = "no"

    def __str__(self) -> str:
        return self.value


@dataclasses.dataclass(frozen=True)
class RuleSupport:
    rule: Rule
    support: Support
    how: str                        # the flag that expresses it, or why nothing does


@dataclasses.dataclass(frozen=True)
class EngineSupport:
    """What one engine's flags can express. `grid(flags)`: the engine's checkpoint grid
    in tokens for resolved `flags` (None: read it off the engine's policy)."""

    engine: str
    rules: tuple[RuleSupport, ...]
    grid: Callable[[Flags], int | None] = lambda flags: None

    def support(self, rule: Rule) -> RuleSupport:
        return next(r for r in self.rules if r.rule is rule)


@dataclasses.dataclass(frozen=True)
class Gap:
    """One rule the engine cannot express, and what switching it off cost."""

    rule: Rule
    how: str
    used: bool                      # does the plan use it at all
    flop_savings: float             # planned with this rule off (= reference if unused)
    cost: float                     # reference − flop_savings

    def to_dict(self) -> dict[str, Any]:
        return {"rule": str(self.rule), "why": self.how, "used_by_plan": self.used,
                "flop_savings_without": self.flop_savings, "flop_savings_cost": self.cost}


@dataclasses.dataclass(frozen=True)
class GapReport:
    engine: str
    grid_tokens: int | None         # the engine's checkpoint grid (None: exact)
    expressible: tuple[RuleSupport, ...]
    gaps: tuple[Gap, ...]
    planned_flop_savings: float     # the plan as fitted
    expressible_flop_savings: float  # every gap switched off at once

    @property
    def total_cost(self) -> float:
        return self.planned_flop_savings - self.expressible_flop_savings

    def to_dict(self) -> dict[str, Any]:
        return {"engine": self.engine, "grid_tokens": self.grid_tokens,
                "expressible": [{"rule": str(r.rule), "how": r.how}
                                for r in self.expressible],
                "gaps": [g.to_dict() for g in self.gaps],
                "planned_flop_savings": self.planned_flop_savings,
                "expressible_flop_savings": self.expressible_flop_savings,
                "flop_savings_cost": self.total_cost}


def _no(rule: Rule, why: str) -> RuleSupport:
    return RuleSupport(rule, Support.NO, why)


def _yes(rule: Rule, how: str) -> RuleSupport:
    return RuleSupport(rule, Support.YES, how)


def _flag_int(flags: Flags, *names: str) -> int | None:
    for name in names:
        value = flags.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _sglang_grid(flags: Flags) -> int:
    # extra_buffer checkpoints on lcm(64, page): the FLA chunk and the page
    # (mamba_radix_cache.py / schedule_batch: mamba_checkpoint_grid; background §1.3)
    return math.lcm(64, _flag_int(flags, "--page-size") or 1)


_EVICT_LRU = "LRU only"
SUPPORT: dict[str, EngineSupport] = {
    "vllm": EngineSupport("vllm", (
        _no(Rule.GRID, "states only at block boundaries (--block-size; a hybrid model's "
            "block is inflated so one page holds a state)"),
        _yes(Rule.INPUT_END, "--mamba-cache-mode align: the last block boundary of the "
             "prefill"),
        _no(Rule.OUTPUT_END, "align mode keeps no state after decoding"),
        _yes(Rule.BRANCH, "align mode's shared-prefix admission (vllm#37898): the second "
             "sighting checkpoints"),
        _yes(Rule.STRIDE, "--prefix-cache-retention-interval: one state per R-token "
             "segment"),
        _no(Rule.MIN_PREFIX, "no flag"),
        _no(Rule.FRESH, "every prefill end is admitted"),
        _no(Rule.PINNED, "no flag"),
        _no(Rule.OFFSETS, f"one {_EVICT_LRU} queue over KV and state blocks"),
        _no(Rule.EFFICIENCY, _EVICT_LRU),
        _no(Rule.MEMORY, "one shared block pool"),
    )),                 # the grid is the page-aligned block: the policy's `hit_grid`
    "sglang": EngineSupport("sglang", (
        _no(Rule.GRID, "extra_buffer checkpoints on lcm(64, --page-size)"),
        _yes(Rule.INPUT_END, "extra_buffer: the last grid position of each extend"),
        _yes(Rule.OUTPUT_END, "cache_finished_req donates the last tracked state "
             "(--mamba-track-interval)"),
        _yes(Rule.BRANCH, "the branch point (mamba_branching_seqlen), from its second "
             "sighting"),
        _no(Rule.STRIDE, "--mamba-track-interval strides decode only"),
        _no(Rule.MIN_PREFIX, "no flag"),
        _no(Rule.FRESH, "every extend is checkpointed"),
        _no(Rule.PINNED, "no flag"),
        _no(Rule.OFFSETS, "--radix-eviction-policy: lru, lfu, slru or priority, none by "
            "reuse class"),
        _no(Rule.EFFICIENCY, "no FLOP-aware --radix-eviction-policy"),
        _yes(Rule.MEMORY, "--mamba-full-memory-ratio / --max-mamba-cache-size"),
    ), grid=_sglang_grid),
    "trtllm": EngineSupport("trtllm", (
        _no(Rule.GRID, "snapshots on the tokens_per_block grid"),
        _yes(Rule.INPUT_END, "mamba_state_config.additional_snapshot_offsets_from_end: [0]"),
        _no(Rule.OUTPUT_END, "no decode-end snapshot rule modelled"),
        _yes(Rule.BRANCH, "mamba_state_config.enable_branch_snapshot"),
        _yes(Rule.STRIDE, "mamba_state_config.periodic_snapshot_interval"),
        _no(Rule.MIN_PREFIX, "no flag"),
        _no(Rule.FRESH, "every request snapshots"),
        _yes(Rule.PINNED, "mamba_state_config.additional_snapshot_offsets_from_start"),
        _no(Rule.OFFSETS, f"block reuse is {_EVICT_LRU}"),
        _no(Rule.EFFICIENCY, _EVICT_LRU),
        _yes(Rule.MEMORY, "pool_ratio: the byte split between the attention and Mamba "
             "groups"),
    ), grid=lambda flags: _flag_int(flags, "tokens_per_block") or 32),
}


def engine_support(name: str) -> EngineSupport:
    if name not in SUPPORT:
        raise UserError("engine", f"no expressibility table for {name!r}; expected one of "
                        f"{', '.join(SUPPORT)}")
    return SUPPORT[name]


def engine_grid(model: EngineModel, support: EngineSupport, flags: Flags,
                workload: Workload, cost: CostModel, config: CacheConfig) -> int | None:
    """The engine's checkpoint grid in tokens for `flags`, a whole number of the
    workload's blocks: the table's flag, else what the engine's policy floors hits to
    (`hit_grid`, or its `chunk`), else the workload's block."""
    grid = support.grid(model.resolve(flags))
    if grid is None:
        policy = model.policy(flags)(cost, config, workload)
        grid = policy.hit_grid() or getattr(policy, "chunk", None)
    block = workload.block_size
    if grid is None:
        return block if block > 1 else None
    return math.lcm(int(grid), block)


def uses(plan: Plan, rule: Rule, grid: int | None) -> bool:
    """Whether switching `rule` off would change `plan`."""
    return _switch_off(plan, rule, grid) != plan


def measure_gaps(plan: Plan, model: EngineModel, support: EngineSupport, flags: Flags,
                 workload: Workload, cost: CostModel, config: CacheConfig,
                 executor: Executor | None = None) -> GapReport:
    """Replay `plan` as fitted, with each inexpressible rule off, and with all of them off
    (the module docstring); `config` is the replay's (its chunk_tokens is replaced by the
    plan's, or by the engine grid for the grid row)."""
    executor = executor or LocalExecutor()
    grid = engine_grid(model, support, flags, workload, cost, config)
    missing = [r for r in support.rules if r.support is Support.NO]
    used = [r for r in missing if uses(plan, r.rule, grid)]
    everything = plan
    for r in used:
        everything = _switch_off(everything, r.rule, grid)
    variants = [plan] + [_switch_off(plan, r.rule, grid)
                         for r in used] + [everything]
    scores = executor.map(lambda p: replay_plan(p, workload, cost, config), variants)
    reference, alone, together = scores[0], dict(zip((r.rule for r in used), scores[1:-1])), \
        scores[-1]
    gaps = tuple(Gap(r.rule, r.how, r.rule in alone, alone.get(r.rule, reference),
                     reference - alone.get(r.rule, reference)) for r in missing)
    return GapReport(engine=support.engine, grid_tokens=grid,
                     expressible=tuple(r for r in support.rules if r.support is Support.YES),
                     gaps=gaps, planned_flop_savings=reference,
                     expressible_flop_savings=together)


def replay_plan(plan: Plan, workload: Workload, cost: CostModel,
                config: CacheConfig) -> float:
    """FLOP savings of `planned` executing `plan` (on the plan's grid)."""
    config = dataclasses.replace(config, chunk_tokens=plan.chunk_tokens)
    return replay_policy(Planned.with_plan(plan), workload, cost, config).flop_savings


def _switch_off(plan: Plan, rule: Rule, grid: int | None) -> Plan:
    """`plan` without `rule` (for the grid: positions snapped to `grid`); `plan` itself
    when it does not use the rule."""
    adm, ev = plan.admission, plan.eviction
    if rule is Rule.GRID:
        current = plan.chunk_tokens
        if grid is None or (current is not None and current % grid == 0):
            return plan
        return dataclasses.replace(plan, chunk_tokens=grid if current is None
                                   else math.lcm(current, grid))
    if rule is Rule.INPUT_END:
        new = dataclasses.replace(adm, input_end=False)
    elif rule is Rule.OUTPUT_END:
        new = dataclasses.replace(adm, output_end=False)
    elif rule is Rule.BRANCH:
        new = dataclasses.replace(adm, branch_sighting=0)
    elif rule is Rule.STRIDE:
        new = dataclasses.replace(adm, stride_tokens=None)
    elif rule is Rule.MIN_PREFIX:
        new = dataclasses.replace(adm, min_prefix_tokens=0)
    elif rule is Rule.FRESH:
        new = dataclasses.replace(adm, admit_fresh=True)
    elif rule is Rule.PINNED:
        return dataclasses.replace(plan, pinned=())
    elif rule is Rule.OFFSETS:
        lru = tuple((c, 0.0) for c in CLASSES)
        return dataclasses.replace(plan, eviction=dataclasses.replace(ev, offsets_ms=lru))
    elif rule is Rule.EFFICIENCY:
        return dataclasses.replace(plan, eviction=dataclasses.replace(ev, efficiency_ms=0.0))
    elif rule is Rule.MEMORY:
        return dataclasses.replace(plan, memory=MemoryRules())
    else:                                                    # pragma: no cover
        raise AssertionError(rule)
    return dataclasses.replace(plan, admission=new)

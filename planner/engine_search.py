"""Search an engine's flag space by replay: the best flags for a workload at a capacity.

    search_engine(model, workload, cost, config, executor=…, progress=…)
    compare_engines(models, workload, cost, config)   # every engine vs planned and the bound

One engine model (`runtime.engines.base.EngineModel`) is replayed through the simulator
(`runtime.sim.simulator.replay_policy`) under many flag settings, each scored by FLOP
savings (ties: token hit rate). Three stages, every replay deterministic:

1. **defaults and screening**: the defaults, then every single-flag change from them
   (one value at a time, the rest at their defaults). A flag's *spread* is the range of the
   scores its values reached there.
2. **grid**: the cross product of the two flags with the widest spread (the most important
   on this workload; ties: the engine's flag order), the other flags at their defaults.
3. **coordinate search** over every other flag from the best setting so far, repeated
   until a pass moves nothing (at most `max_passes`).

The current setting starts at the defaults and moves only to a setting that scores
strictly higher, so `best` is never worse than `defaults`, and the order of the candidates
(the engine's flag order, each flag's `choices` order) breaks every tie. A setting is
replayed at most once (scores are memoised by the resolved flags), and a setting the
engine refuses (`resolve`, or its policy on this workload, raising a UserError: a
combination the engine does not accept, a block the trace's ids do not divide) is skipped
and counted; refused defaults are an error (the UserError names the flag). The replays
of one stage run in `executor` (a `ProcessExecutor` replays them side by side).
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from functools import partial
from typing import Any, Callable, NamedTuple, Sequence

from marconi.errors import UserError
from marconi.passes.cost_model import CostModel
from marconi.planner.engine_gaps import GapReport, engine_support, measure_gaps
from marconi.planner.offline import BoundReport
from marconi.planner.plan import PlanResult, derive_plan, planned_policy
from marconi.runtime.config import CacheConfig
from marconi.runtime.engines.base import EngineModel, Flags
from marconi.runtime.sim.executor import Executor, LocalExecutor
from marconi.runtime.sim.simulator import SimResult, replay_policy
from marconi.runtime.workload import Workload

Progress = Callable[[str, int, int], None]       # (stage, done, total)
Setting = tuple[tuple[str, Any], ...]            # resolved flags, in the engine's order


@dataclasses.dataclass(frozen=True)
class FlagResult:
    """One flag setting replayed: every flag's value, the launch line, the figures."""

    flags: Setting
    command: str
    result: SimResult

    def to_dict(self) -> dict[str, Any]:
        return {"flags": dict(self.flags), "command": self.command, **self.result.to_dict()}


@dataclasses.dataclass(frozen=True)
class Trial:
    """A replayed setting: the stage that asked for it and its score."""

    stage: str                      # "defaults", "screen", "grid", "coordinate"
    flags: Setting
    flop_savings: float
    token_hit_rate: float


@dataclasses.dataclass(frozen=True)
class EngineSearch:
    """What `search_engine` found for one engine."""

    engine: str
    version: str
    defaults: FlagResult
    best: FlagResult
    grid_flags: tuple[str, ...]     # the flags searched as a grid
    trials: tuple[Trial, ...]       # every replay, in the order it was asked for
    refused: int                    # settings the engine refused (not replayed)
    failure_modes_defaults: tuple[str, ...]
    failure_modes_best: tuple[str, ...]
    seconds: float

    @property
    def changed(self) -> dict[str, Any]:
        """The flags `best` sets away from the defaults."""
        d = dict(self.defaults.flags)
        return {k: v for k, v in self.best.flags if d.get(k) != v}

    def to_dict(self) -> dict[str, Any]:
        return {"engine": self.engine, "version": self.version,
                "defaults": {**self.defaults.to_dict(),
                             "failure_modes": list(self.failure_modes_defaults)},
                "best": {**self.best.to_dict(), "changed": self.changed,
                         "failure_modes": list(self.failure_modes_best)},
                "search": {"grid_flags": list(self.grid_flags), "replays": len(self.trials),
                           "refused": self.refused, "seconds": self.seconds}}


def score(result: SimResult) -> tuple[float, float]:
    """What the search maximises: FLOP savings, then token hit rate."""
    return (result.flop_savings, result.token_hit_rate)


def search_engine(model: EngineModel, workload: Workload, cost: CostModel,
                  config: CacheConfig, model_name: str | None = None,
                  executor: Executor | None = None, progress: Progress | None = None,
                  max_passes: int = 3) -> EngineSearch:
    """Defaults, screening, a grid over the two most important flags, then coordinate
    search (the module docstring); `progress(stage, done, total)` counts replays."""
    t0 = time.perf_counter()
    search = _Search(model, workload, cost, config, executor or LocalExecutor(), progress)
    defaults = search.setting({})
    search.run("defaults", [defaults])
    current = defaults

    # 1. screening: each flag alone, the rest at their defaults
    singles = {f.name: [search.setting({f.name: v}) for v in f.choices] for f in model.flags}
    search.run("screen", [s for ss in singles.values() for s in ss if s is not None])
    current = search.better(current, [s for ss in singles.values() for s in ss])
    spread = {name: _spread([search.scores.get(s) for s in ss])
              for name, ss in singles.items()}

    # 2. grid over the two widest-spread flags (stable order: the engine's, on ties)
    order = {f.name: i for i, f in enumerate(model.flags)}
    wide = sorted((f.name for f in model.flags if len(f.choices) > 1),
                  key=lambda n: (-spread[n], order[n]))[:2]
    if len(wide) == 2:
        choices = {f.name: f.choices for f in model.flags}
        grid = [search.setting(dict(zip(wide, values)))
                for values in itertools.product(*(choices[n] for n in wide))]
        search.run("grid", [s for s in grid if s is not None])
        current = search.better(current, grid)

    # 3. coordinate search over the rest, from the best so far
    rest = [f for f in model.flags if f.name not in wide and len(f.choices) > 1]
    for _ in range(max_passes):
        moved = False
        for f in rest:
            base = {k: v for k, v in current}
            line = [search.setting({**base, f.name: v}) for v in f.choices]
            search.run("coordinate", [s for s in line if s is not None])
            nxt = search.better(current, line)
            moved |= nxt != current
            current = nxt
        if not moved:
            break

    return EngineSearch(
        engine=model.name, version=model.version,
        defaults=search.flag_result(defaults, model_name),
        best=search.flag_result(current, model_name), grid_flags=tuple(wide),
        trials=tuple(search.trials), refused=len(search.refused),
        failure_modes_defaults=tuple(model.failure_modes(dict(defaults), workload, cost)),
        failure_modes_best=tuple(model.failure_modes(dict(current), workload, cost)),
        seconds=time.perf_counter() - t0)


def replay_flags(model: EngineModel, workload: Workload, cost: CostModel,
                 config: CacheConfig, flags: Flags) -> SimResult:
    """One replay of `model` with `flags` (the search's unit of work, and its slow path:
    every score the search uses is this function's)."""
    result = replay_policy(model.policy(flags), workload, cost, config)
    return dataclasses.replace(result, policy=model.name)


def exhaustive_best(model: EngineModel, workload: Workload, cost: CostModel,
                    config: CacheConfig) -> tuple[Setting, SimResult]:
    """The best setting of the whole cross product (ties: the earliest in product order,
    the defaults first): the obviously-correct reference the search is tested against on
    small flag spaces."""
    defaults = tuple(model.resolve({}).items())
    best, best_result = defaults, replay_flags(model, workload, cost, config, dict(defaults))
    names = [f.name for f in model.flags]
    for values in itertools.product(*(f.choices for f in model.flags)):
        try:
            setting = tuple(model.resolve(dict(zip(names, values))).items())
            result = replay_flags(model, workload, cost, config, dict(setting))
        except UserError:
            continue
        if score(result) > score(best_result):
            best, best_result = setting, result
    return best, best_result


# ---------------------------------------------------------------- private helpers

class _Search:
    """Memoised replays of one engine's settings, run a stage at a time."""

    def __init__(self, model, workload, cost, config, executor: Executor,
                 progress: Progress | None):
        self.model = model
        self.workload, self.cost, self.config = workload, cost, config
        self.executor = executor
        self.progress = progress
        self.results: dict[Setting, SimResult] = {}
        self.scores: dict[Setting, tuple[float, float]] = {}
        self.trials: list[Trial] = []
        self.refused: set[tuple] = set()

    def setting(self, flags: Flags) -> Setting | None:
        """`flags` over the defaults, resolved; None when the engine refuses them."""
        try:
            return tuple(self.model.resolve(flags).items())
        except UserError:
            self.refused.add(tuple(sorted(flags.items(), key=lambda kv: kv[0])))
            return None

    def run(self, stage: str, settings: Sequence[Setting]) -> None:
        """Replay the settings not replayed yet (in `executor`)."""
        todo = list(dict.fromkeys(s for s in settings if s not in self.results))
        if not todo:
            return
        name = f"{self.model.name}: {stage}"
        if self.progress is not None:
            self.progress(name, 0, len(todo))
        done = None if self.progress is None else \
            (lambda i, r, count=itertools.count(1): self.progress(name, next(count), len(todo)))
        work = partial(_replay_setting, self.model, self.workload, self.cost, self.config)
        for setting, result in zip(todo, self.executor.map(work, todo, done)):
            if isinstance(result, _Refusal):        # the engine refused it on this workload
                if stage == "defaults":
                    raise UserError(result.where, result.message)
                self.refused.add(setting)
                continue
            self.results[setting] = result
            self.scores[setting] = score(result)
            self.trials.append(Trial(stage, setting, result.flop_savings,
                                     result.token_hit_rate))

    def better(self, current: Setting, candidates: Sequence[Setting | None]) -> Setting:
        """The first candidate scoring strictly above `current` and every earlier one;
        `current` if none does (refused candidates are passed over)."""
        best = current
        for s in candidates:
            if s in self.scores and self.scores[s] > self.scores[best]:
                best = s
        return best

    def flag_result(self, setting: Setting, model_name: str | None) -> FlagResult:
        capacity = self.config.capacity.total_bytes
        command = self.model.launch(model_name or self.cost.model, dict(setting), capacity)
        return FlagResult(flags=setting, command=command, result=self.results[setting])


class _Refusal(NamedTuple):
    """A UserError as a worker process returns it (UserError itself does not pickle)."""

    where: str
    message: str


def _replay_setting(model, workload, cost, config, setting: Setting) -> SimResult | _Refusal:
    """One replay, or the refusal of a setting the engine refuses on this workload (e.g.
    a block the trace's ids do not divide), returned so that the search can skip it."""
    try:
        return replay_flags(model, workload, cost, config, dict(setting))
    except UserError as e:
        return _Refusal(e.where, e.message)


def _spread(scores: list[tuple[float, float] | None]) -> float:
    """How far a flag's values moved FLOP savings in the screening."""
    values = [s[0] for s in scores if s is not None]
    return max(values) - min(values) if values else 0.0


# ---------------------------------------------------------------- every engine vs the plan

@dataclasses.dataclass(frozen=True)
class EngineEntry:
    """One engine in `compare_engines`: its flag search and what our plan would need, or
    (`refused`) why its defaults cannot be replayed on this workload (a UserError's text,
    e.g. a block the trace's ids do not divide)."""

    engine: str
    version: str
    search: EngineSearch | None
    gaps: GapReport | None
    refused: str | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.search is None:
            return {"engine": self.engine, "version": self.version,
                    "error": {"kind": "input", "message": self.refused}}
        gaps = {} if self.gaps is None else {"gaps": self.gaps.to_dict()}
        return {**self.search.to_dict(), **gaps}


@dataclasses.dataclass(frozen=True)
class EngineComparison:
    """Each engine's defaults and best flags beside `planned` and the offline bound, all
    on one workload at one capacity."""

    engines: tuple[EngineEntry, ...]
    planned: SimResult
    plan: PlanResult
    bound: BoundReport
    seconds: float

    def best_engine(self) -> EngineEntry | None:
        """The engine whose best flags save the most FLOPs (ties: the first asked)."""
        best = None
        for e in self.engines:
            if e.search is None:
                continue
            if best is None or score(e.search.best.result) > score(best.search.best.result):
                best = e
        return best


def compare_engines(models: Sequence[EngineModel], workload: Workload, cost: CostModel,
                    config: CacheConfig, model_name: str | None = None,
                    plan: PlanResult | None = None, executor: Executor | None = None,
                    progress: Progress | None = None, gaps: bool = True) -> EngineComparison:
    """Search every engine's flags (`search_engine`), derive and replay our plan (`plan`
    when the caller has one for this workload, capacity and warm-up), and measure what
    each engine's flags cannot express of it (`engine_gaps.measure_gaps`, at the engine's
    best flags; skipped with ``gaps=False``). An engine whose defaults the workload
    refuses is reported as such (its entry's `refused`), not searched."""
    t0 = time.perf_counter()
    if plan is None:
        if progress is not None:
            progress(f"planning on {workload.name}", 0, 0)
        plan = derive_plan(workload, cost, config.capacity, warmup=config.warmup)
    if progress is not None:
        progress("planned", 0, 0)
    planned = dataclasses.replace(
        replay_policy(planned_policy(plan.plan), workload, cost,
                      dataclasses.replace(config, chunk_tokens=plan.plan.chunk_tokens)),
        policy="planned")
    entries = []
    for model in models:
        try:
            found = search_engine(model, workload, cost, config, model_name, executor,
                                  progress)
        except UserError as e:                  # its defaults cannot run on this workload
            entries.append(EngineEntry(model.name, model.version, None, None, str(e)))
            continue
        needs = None
        if gaps:
            if progress is not None:
                progress(f"{model.name}: what the plan needs", 0, 0)
            needs = measure_gaps(plan.plan, model, engine_support(model.name),
                                 dict(found.best.flags), workload, cost, config, executor)
        entries.append(EngineEntry(model.name, model.version, found, needs))
    return EngineComparison(engines=tuple(entries), planned=planned, plan=plan,
                            bound=plan.bound, seconds=time.perf_counter() - t0)

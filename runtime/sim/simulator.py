"""Simulator: replay one workload under several policies and measure each.

Metrics (the project's shared definitions; h = hit tokens, L = input tokens per request),
over the *counted* requests: all of them, or those after the first ``config.warmup`` of the
workload, which only fill the cache (`CacheConfig.warmup`; every figure below, the counts of
checkpoints, evictions and rejected inserts included, covers the counted window only):

- token hit rate   = Σ h / Σ L;
- request hit rate = fraction of requests with h > 0;
- block hit rate   = Σ hit ids / Σ input ids (blocks of a block-hash trace; tokens otherwise);
- FLOP savings     = Σ cost.saved_flops(h, L − h) / Σ cost.prefill_flops(L, 0);
- peak occupancy   = the highest bytes in use after any counted insert (or of the warm
  cache the window starts from) / capacity (the fuller pool
  when KV and states have separate pools; `infinite` ignores the capacity, so it reports
  what an unbounded cache needed relative to it, and may exceed 1);
- TTFT P50 / P95   = percentiles over requests of the `latency` model at (L − h, h).

`replay_policy` replays one policy class: once, or, for an oracle row that declares
``oracle_alphas`` (marconi-static), once per α of ``config.marconi.alpha_grid``, keeping the best.
`simulate` runs several policies, in an `Executor` (`runtime.sim.executor`): one after
another, or side by side in worker processes.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from functools import partial
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from marconi.passes.cost_model import CostModel
from marconi.runtime.cache.policies import get_policy
from marconi.runtime.config import CacheConfig
from marconi.runtime.sim.executor import Executor, LocalExecutor
from marconi.runtime.sim.latency import get_device
from marconi.runtime.sim.replay import Replay
from marconi.runtime.workload import Workload

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SimResult:
    policy: str
    token_hit_rate: float
    request_hit_rate: float
    flop_savings: float
    block_hit_rate: float           # Σ hit ids / Σ input ids (blocks of a block trace)
    peak_occupancy: float
    ttft_p50_ms: float
    ttft_p95_ms: float
    requests: int
    seconds: float
    hit_tokens: int
    input_tokens: int
    saved_flops: float
    prefill_flops: float
    peak_bytes: int
    checkpoints_admitted: int
    checkpoints_evicted: int
    evictions: int
    rejected_inserts: int
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    warmup_requests: int = 0        # requests before the counted ones (`requests`)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class SimulationReport:
    model: str
    trace: str
    capacity_bytes: int | None
    results: tuple[SimResult, ...]
    workload: dict[str, Any] = dataclasses.field(default_factory=dict)
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    warmup: dict[str, Any] = dataclasses.field(
        default_factory=lambda: warmup_window(0.0, 0))

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "trace": self.trace,
                "capacity_bytes": self.capacity_bytes,
                "warmup": self.warmup,
                "results": [r.to_dict() for r in self.results],
                "workload": self.workload, "config": self.config}


def warmup_window(fraction: float, requests: int) -> dict[str, Any]:
    """The warm-up as reports state it: the fraction asked and the requests it is."""
    return {"fraction": float(fraction), "requests": int(requests)}


def summarize(policy: str, replay, cost: CostModel, config: CacheConfig,
              params: dict[str, Any], seconds: float = 0.0) -> SimResult:
    """Metrics of a finished `Replay` over its counted requests (the module docstring)."""
    w = replay.warmup
    assert replay.done == len(replay.workload.requests) and replay.window_start is not None
    requests = replay.workload.requests[w:]
    L = np.fromiter((r.input_tokens for r in requests), dtype=np.float64, count=len(requests))
    h = np.asarray(replay.hits[w:], dtype=np.float64)
    total = cost.prefill_flops(L, 0)
    saved = total - cost.prefill_flops(L - h, h)
    ttft = get_device(config.device).ttft_ms(cost, L - h, h)
    p50, p95 = (np.percentile(ttft, [50, 95]) if len(ttft) else (0.0, 0.0))
    cache = replay.cache
    admitted, evicted, evictions, rejected = (
        now - then for now, then in zip(replay.counters(), replay.window_start))
    cap = config.capacity.total_bytes
    peak_occ = cache.peak_occupancy
    if cache.capacity.total_bytes is None:          # unbounded: relative to the budget asked
        peak_occ = cache.peak_bytes / cap if cap else 0.0
    return SimResult(
        policy=policy,
        token_hit_rate=float(h.sum() / L.sum()) if L.sum() else 0.0,
        request_hit_rate=float((h > 0).mean()) if len(h) else 0.0,
        block_hit_rate=sum(replay.hit_ids[w:]) / max(1, sum(len(r.input_ids)
                                                            for r in requests)),
        flop_savings=float(saved.sum() / total.sum()) if total.sum() else 0.0,
        peak_occupancy=float(peak_occ),
        ttft_p50_ms=float(p50), ttft_p95_ms=float(p95),
        requests=len(requests), seconds=seconds,
        hit_tokens=int(h.sum()), input_tokens=int(L.sum()),
        saved_flops=float(saved.sum()), prefill_flops=float(total.sum()),
        peak_bytes=int(cache.peak_bytes),
        checkpoints_admitted=admitted, checkpoints_evicted=evicted,
        evictions=evictions, rejected_inserts=rejected,
        params=dict(params), warmup_requests=w)


def replay_policy(cls: type, workload: Workload, cost: CostModel, config: CacheConfig,
                  progress: Callable[[int, int], None] | None = None,
                  executor: Executor | None = None) -> SimResult:
    """Replay `workload` with a fresh instance of the policy class `cls`, untimed (an
    oracle row: `_best_fixed_alpha`). `executor` runs the forks it makes (an α sweep)."""
    if cls.oracle_alphas:
        return _best_fixed_alpha(cls, workload, cost, config, progress, executor)
    policy = cls(cost, config, workload)
    replay = Replay(workload, cost, policy, executor=executor)
    replay.run(progress=progress)
    result = summarize(cls.name, replay, cost, config, policy.describe())
    replay.discard()            # freed now, also inside an outer replay (planned's tuner)
    return result


def fixed_alpha_results(cls: type, workload: Workload, cost: CostModel, config: CacheConfig,
                        progress=None, executor: Executor | None = None
                        ) -> dict[float, SimResult]:
    """{α: the whole trace replayed under ``cls(cost, config, workload, alpha=α)``} for
    every α of ``config.marconi.alpha_grid`` (and 0), sharing the history before the first
    eviction, where α does not matter (a trace without evictions: {0.0: …} only). Results
    carry no params."""
    def fixed(alpha: float):
        return cls(cost, config, workload, alpha=alpha)

    def measure(run: Replay) -> SimResult:
        return summarize(cls.name, run, cost, config, {})

    first = Replay(workload, cost, fixed(0.0), executor=executor)
    first.run(progress=progress)
    results = {0.0: measure(first)}
    f = first.first_eviction
    if f is not None:                           # without evictions α cannot matter
        others = [a for a in config.marconi.alpha_grid if a != 0.0]
        results.update(first.what_if(fixed(0.0), f, fixed, others, None, measure))
    first.discard()
    return dict(sorted(results.items()))


def _best_fixed_alpha(cls: type, workload: Workload, cost: CostModel, config: CacheConfig,
                      progress, executor) -> SimResult:
    """The oracle row of a policy with ``oracle_alphas``: the best of
    `fixed_alpha_results` by token hit rate (ties: the smaller α). It sees the future to
    choose α."""
    results = fixed_alpha_results(cls, workload, cost, config, progress, executor)
    best = max(results, key=lambda a: (results[a].token_hit_rate, -a))
    params = {**cls(cost, config, workload, alpha=best).describe(),
              "token_hit_rate_by_alpha": {str(a): round(r.token_hit_rate, 6)
                                          for a, r in results.items()}}
    return dataclasses.replace(results[best], params=params)


def run_policy(name: str, workload: Workload, cost: CostModel, config: CacheConfig,
               progress: Callable[[int, int], None] | None = None,
               bound: Mapping[str, type] | None = None,
               executor: Executor | None = None) -> SimResult:
    """Replay `workload` under the policy registered as `name` (or `bound[name]`, a policy
    class bound to data such as a saved plan or the planner), timed."""
    cls = (bound or {}).get(name) or get_policy(name)
    t0 = time.perf_counter()
    result = replay_policy(cls, workload, cost, config, progress, executor)
    seconds = time.perf_counter() - t0
    log.info("%s: token hit %.4f in %.2f s", name, result.token_hit_rate, seconds)
    return dataclasses.replace(result, seconds=seconds)


def simulate(workload: Workload, cost: CostModel, config: CacheConfig,
             policies: Sequence[str], executor: Executor | None = None,
             progress: Callable[[str, int, int], None] | None = None,
             bound: Mapping[str, type] | None = None) -> SimulationReport:
    """Run every policy in `policies` on `workload`; `progress(policy, done, total)`.

    With an `executor` of several workers and several policies, the policies run side by
    side (each running its own α sweeps in-line, and reporting no progress); otherwise one
    after another, each α sweep in `executor`. `bound` maps a policy name to a class to run
    under that name instead of the registered one (e.g. ``{"planned":
    Planned.with_plan(plan)}`` replays a saved plan)."""
    for name in policies:
        get_policy(name)                          # fail on an unknown name before any work
    executor = executor if executor is not None else LocalExecutor()
    if executor.workers > 1 and len(policies) > 1:
        results = executor.map(partial(_run_alone, workload, cost, config, bound), policies)
    else:
        results = []
        for name in policies:
            cb = None if progress is None else (lambda d, t, n=name: progress(n, d, t))
            results.append(run_policy(name, workload, cost, config, cb, bound, executor))
    n = len(workload.requests)
    return SimulationReport(model=cost.model, trace=workload.name,
                            capacity_bytes=config.capacity.total_bytes,
                            results=tuple(results), workload=workload.describe(),
                            config={"chunk_tokens": config.chunk_tokens,
                                    "block_tokens": config.vllm.block_tokens,
                                    "device": config.device,
                                    **config.capacity.describe()},
                            warmup=warmup_window(config.warmup, config.warmup_requests(n)))


def _run_alone(workload, cost, config, bound, name: str) -> SimResult:
    """One policy of a parallel `simulate`: its own forks run in-line."""
    return run_policy(name, workload, cost, config, bound=bound, executor=LocalExecutor())

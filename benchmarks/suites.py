"""Benchmark suites: which models, workloads, capacities and policies a run sweeps.

A `Suite` is plain data; `benchmarks.sweep` turns it into tasks. Capacities are given as
fractions of a per-(model, workload) reference footprint: the peak bytes of the `sglang`
policy with no capacity limit, i.e. what keeping everything its admission ever caches
takes (every distinct token's KV plus at most two states per request). The full sweep
runs from 1/128 of it (where little fits) to 1/2 of it (where `sglang` is within a few
points of its unbounded hit rate), in factors of 2, so each curve covers the range from
"nothing fits" to "little contention". Plots label the axis in GiB.

Suites are registered by name with a full and a quick form:

- ``paper``: the paper's evaluation on our workloads (Fig. 7-9 style sweeps, Fig. 12a
  layer mix, Fig. 12b d_state) for the paper's 7B hybrid and one real model;
- ``smoke``: a few seconds, for tests (determinism across process counts).
"""

from __future__ import annotations

import dataclasses

from marconi.errors import UserError

from benchmarks import workloads as wl
from benchmarks.variants import D_STATES, LAYER_MIXES
from benchmarks.workloads import WorkloadSource

BASE_MODEL = "marconi-7b-hybrid"


@dataclasses.dataclass(frozen=True)
class VariantStudy:
    """Fig. 12: variants of `Suite.base_model` on some workloads at one capacity.

    The capacity is `fraction` × the base model's reference footprint on the workload,
    the same bytes for every variant (the paper fixes the cache size in GB).
    """

    workloads: tuple[str, ...]            # keys of the suite's workloads
    fraction: float
    layer_mixes: tuple[tuple[int, int], ...] = LAYER_MIXES
    d_states: tuple[int, ...] = D_STATES


@dataclasses.dataclass(frozen=True)
class Suite:
    name: str
    quick: bool
    models: tuple[str, ...]               # example specs: examples/models/<name>.yaml
    workloads: tuple[WorkloadSource, ...]
    fractions: tuple[float, ...]          # capacities, as fractions of the reference footprint
    ttft_fraction: float                  # the capacity whose TTFT percentiles are plotted
    variants: VariantStudy | None
    policies: tuple[str, ...] | None = None   # None: every registered policy
    bound_method: str = "auto"            # marconi.planner.offline.offline_bound's method
    seed: int = 0                         # generator seed
    base_model: str = BASE_MODEL

    def __post_init__(self):
        keys = [w.key for w in self.workloads]
        if len(set(keys)) != len(keys):
            raise ValueError(f"suite {self.name}: duplicate workload keys {keys}")
        if self.ttft_fraction not in self.fractions:
            raise ValueError(f"suite {self.name}: ttft_fraction is not one of the fractions")
        if self.variants is not None:
            unknown = set(self.variants.workloads) - set(keys)
            if unknown:
                raise ValueError(f"suite {self.name}: variant workloads {sorted(unknown)} "
                                 "are not in the suite")
            if self.base_model not in self.models:
                raise ValueError(f"suite {self.name}: variants need {self.base_model}")

    def with_seed(self, seed: int) -> Suite:
        return dataclasses.replace(self, seed=seed)

    def describe(self) -> dict:
        return {"name": self.name, "quick": self.quick, "models": list(self.models),
                "workloads": [w.describe() for w in self.workloads],
                "capacity_fractions": list(self.fractions),
                "ttft_fraction": self.ttft_fraction,
                "policies": None if self.policies is None else list(self.policies),
                "bound_method": self.bound_method, "seed": self.seed,
                "base_model": self.base_model,
                "variants": None if self.variants is None else {
                    "workloads": list(self.variants.workloads),
                    "fraction": self.variants.fraction,
                    "layer_mixes": [list(m) for m in self.variants.layer_mixes],
                    "d_states": list(self.variants.d_states)}}


def _powers(lo: int, hi: int) -> tuple[float, ...]:
    return tuple(2.0 ** k for k in range(lo, hi + 1))


def paper(quick: bool) -> Suite:
    if quick:
        return Suite(
            name="paper", quick=True, models=(BASE_MODEL,),
            workloads=(wl.mooncake("conversation", limit=1500),
                       wl.mooncake("synthetic", limit=600),
                       wl.lmsys(sessions=16), wl.sharegpt(sessions=16),
                       wl.swebench(sessions=6, rounds=(8, 24))),
            fractions=(2.0 ** -6, 2.0 ** -3, 1.0), ttft_fraction=2.0 ** -3,
            variants=VariantStudy(workloads=("swebench-like",), fraction=2.0 ** -3))
    return Suite(
        name="paper", quick=False, models=(BASE_MODEL, "nemotron-h-8b"),
        workloads=(wl.mooncake("conversation"), wl.mooncake("synthetic"),
                   wl.lmsys(), wl.sharegpt(), wl.swebench(sessions=50)),
        fractions=_powers(-7, -1), ttft_fraction=2.0 ** -3,
        variants=VariantStudy(workloads=("swebench-like", "mooncake-conversation"),
                              fraction=2.0 ** -4))


def smoke(quick: bool) -> Suite:
    del quick                             # one size only
    return Suite(
        name="smoke", quick=True, models=(BASE_MODEL,),
        workloads=(wl.sharegpt(sessions=4), wl.swebench(sessions=2, rounds=(6, 10))),
        fractions=(2.0 ** -3, 1.0), ttft_fraction=1.0,
        variants=VariantStudy(workloads=("sharegpt-like",), fraction=2.0 ** -2,
                              layer_mixes=((32, 4), (0, 36)), d_states=(16, 128)))


SUITES = {"paper": paper, "smoke": smoke}


def load_workloads(suite: Suite, traces_dir, only=None) -> tuple[list, list[str]]:
    """The suite's workloads (keys in `only`, if given) as (key, Workload), loaded with the
    suite's seed, and a line per trace left out because it is not in `traces_dir`."""
    loaded, skipped = [], []
    for source in suite.workloads:
        if only and source.key not in only:
            continue
        if not source.available(traces_dir):
            skipped.append(f"{source.key}: {source.path(traces_dir)} not found")
            continue
        loaded.append((source.key, source.load(traces_dir, suite.seed)))
    return loaded, skipped


def get_suite(name: str, quick: bool = False, seed: int = 0) -> Suite:
    try:
        make = SUITES[name]
    except KeyError:
        raise UserError("--suite", f"unknown suite {name!r}; expected one of "
                        f"{', '.join(sorted(SUITES))}") from None
    return make(quick).with_seed(seed)

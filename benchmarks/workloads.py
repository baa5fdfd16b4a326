"""The workloads of the benchmark suite: the two Mooncake traces and the paper's shapes.

- Mooncake traces (block-hash, 512-token blocks) are read at run time from the shared
  folder beside the repository (``../shared/traces/``, see its README); they are never
  copied into the repository. `--traces DIR` points elsewhere.
- The LMSys-, ShareGPT- and SWE-bench-like workloads come from the seeded generators of
  `marconi.runtime.sim.generators`, with parameters chosen to match the shapes the Marconi
  paper reports for its traces (background/marconi.md §5 and §6.3, Fig. 6):

  * LMSys: sessions of at least 10 turns, requests mostly under 10K tokens;
  * ShareGPT: at least 10 rounds, requests mostly under 2K tokens;
  * SWE-bench: agent sessions of 10-50 rounds over a shared system prompt, with the
    SWE-agent history collapse (observation −5 deleted), requests from hundreds to tens
    of thousands of tokens, rounds 7.5 s apart on average (the artifact's ``art``).

  Sessions start one per second (the artifact's ``sps`` = 1).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from marconi.errors import TraceError
from marconi.runtime.sim.generators import AgentSpec, ChatSpec, Spec, generate
from marconi.runtime.workload import Workload, load_trace

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TRACES_DIR = REPO.parent / "shared" / "traces"

LMSYS = ChatSpec(sessions=100, turns=(10, 20), user_median=80.0, user_sigma=1.2,
                 output_median=250.0, output_sigma=0.8, sessions_per_s=1.0)
SHAREGPT = ChatSpec(sessions=100, turns=(10, 14), user_median=30.0, user_sigma=0.8,
                    output_median=110.0, output_sigma=0.7, sessions_per_s=1.0)
SWEBENCH = AgentSpec(sessions=100, system_tokens=1500, rounds=(10, 50),
                     observation_median=600.0, action_median=120.0, sessions_per_s=1.0,
                     round_gap_s=7.5)


@dataclasses.dataclass(frozen=True)
class WorkloadSource:
    """One workload of a suite: a trace file (`trace`) or generator shapes (`specs`).

    `limit` keeps the first requests of a trace (the quick suite's smaller slices).
    """

    key: str                              # short name used in results and file names
    label: str                            # for plots and tables
    trace: str | None = None              # file name in the traces folder
    specs: tuple[Spec, ...] = ()
    limit: int | None = None

    def __post_init__(self):
        if (self.trace is None) == (not self.specs):
            raise ValueError(f"{self.key}: give exactly one of a trace or generator specs")

    @property
    def is_trace(self) -> bool:
        return self.trace is not None

    def path(self, traces_dir: Path) -> Path:
        return Path(traces_dir) / self.trace

    def available(self, traces_dir: Path) -> bool:
        return not self.is_trace or self.path(traces_dir).exists()

    def load(self, traces_dir: Path, seed: int) -> Workload:
        """The workload; generators use `seed`, traces ignore it."""
        if self.is_trace:
            path = self.path(traces_dir)
            if not path.exists():
                raise TraceError(str(path), "no such file; expected the shared Mooncake "
                                 "traces (see ../shared/traces/README.md) or --traces DIR")
            workload = load_trace(path, limit=self.limit)
            return dataclasses.replace(workload, name=self.key)
        return generate(self.specs, seed=seed, name=self.key)

    def describe(self) -> dict:
        out = {"key": self.key, "label": self.label}
        if self.is_trace:
            out.update(trace=self.trace, limit=self.limit)
        else:
            out["generator"] = [repr(s) for s in self.specs]
        return out


def mooncake(which: str, limit: int | None = None) -> WorkloadSource:
    return WorkloadSource(f"mooncake-{which}", f"Mooncake {which}",
                          trace=f"mooncake_{which}.jsonl", limit=limit)


def lmsys(sessions: int = LMSYS.sessions) -> WorkloadSource:
    return WorkloadSource("lmsys-like", "LMSys-like chat",
                          specs=(dataclasses.replace(LMSYS, sessions=sessions),))


def sharegpt(sessions: int = SHAREGPT.sessions) -> WorkloadSource:
    return WorkloadSource("sharegpt-like", "ShareGPT-like chat",
                          specs=(dataclasses.replace(SHAREGPT, sessions=sessions),))


def swebench(sessions: int = SWEBENCH.sessions,
             rounds: tuple[int, int] = SWEBENCH.rounds) -> WorkloadSource:
    return WorkloadSource("swebench-like", "SWE-bench-like agents",
                          specs=(dataclasses.replace(SWEBENCH, sessions=sessions,
                                                     rounds=rounds),))

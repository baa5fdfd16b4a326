"""The `Policy` base class and the admission rules several policies share."""

from __future__ import annotations

from typing import Any, Callable, ClassVar, NamedTuple, Protocol, Sequence

from marconi.passes.cost_model import CostModel
from marconi.runtime.capacity import Capacity
from marconi.runtime.config import CacheConfig, parse_choice
from marconi.runtime.cache.prefix_cache import PrefixCache
from marconi.runtime.cache.tree import Match, PrefixTree, Refresh
from marconi.runtime.seq import Seq
from marconi.runtime.workload import Workload


class Admission(NamedTuple):
    """Cache ``seq.ids[:length]`` with a state at each depth in `checkpoints`."""

    length: int
    checkpoints: tuple[int, ...] = ()


class ReplayView(Protocol):
    """What `Policy.after_request` is handed: the replay driving the policy (the
    simulator's `runtime.sim.replay.Replay`, or the history of a `marconi.wrap` model).
    Defined here, implemented above, so that policies never import the simulator."""

    workload: Workload                  # the requests so far (at least)
    first_eviction: int | None          # the request during which eviction began

    def what_if(self, base: Policy, fork_at: int, make_policy: Callable[[Any], Policy],
                values: Sequence, stop: int | None,
                measure: Callable[[Any], Any]) -> dict:
        """{v: measure(run)}: the workload replayed afresh under `base` to request
        `fork_at`, then continued under ``make_policy(v)`` to `stop`, per v in `values`."""
        ...


class Policy:
    """Admission and eviction for one replay (see the package docstring for the hooks)."""

    name: ClassVar[str] = ""
    refresh: ClassVar[Refresh] = Refresh.PATH
    kv_only_leaves: ClassVar[bool] = False
    cache_class: ClassVar[type[PrefixTree]] = PrefixCache   # per-block baselines: DenseCache
    # An oracle row: the simulator replays the whole trace under ``cls(cost, config,
    # workload, alpha=a)`` for every α of ``config.marconi.alpha_grid`` and reports the best
    # (`runtime.sim.simulator.replay_policy`); the class takes an `alpha` keyword.
    oracle_alphas: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.refresh = parse_choice(Refresh, cls.refresh, f"{cls.__qualname__}.refresh")

    def __init__(self, cost: CostModel, config: CacheConfig, workload: Workload):
        self.cost = cost
        self.config = config
        self.workload = workload
        grid = config.grid_for(workload.block_size)
        # the engine grid says where states can be taken; a state-free model takes none
        self.chunk = grid if cost.state_bytes() else None

    def capacity(self) -> Capacity:
        return self.config.capacity

    def make_cache(self) -> PrefixTree:
        """The empty `cache_class` one replay runs in, ordered by `make_index()`."""
        return self.cache_class.for_cost(self.cost, self.capacity(), self.make_index(),
                                         hit_grid=self.hit_grid())

    def hit_grid(self) -> int | None:
        """Tokens a state-free model's hits are floored to (the engine's KV matching unit);
        None = any id (a token, or a block of a block trace)."""
        return None

    def make_index(self):
        raise NotImplementedError

    def admit(self, seq: Seq, match: Match) -> Admission:
        raise NotImplementedError

    def after_request(self, replay: ReplayView, i: int) -> None:
        """Called after request `i` of `replay`; most policies do nothing."""

    def describe(self) -> dict[str, Any]:
        return {}


def judicious_admission(seq: Seq, m: Match, chunk: int | None) -> Admission:
    """Marconi's admission (paper §4.1): at most two states per request.

    (b) The branch point: if inserting the input would split an existing edge (found by
    speculative insertion = the match ended inside an edge, `m.partial`), a state where the
    split happens. (a) The last decoded token: a state at the end of input + output.
    With an engine grid both positions round down to it, and nothing past the last state
    is inserted (its KV could never be resumed). The paper inserts at token positions; the
    artifact finds the branch with input+output at insert time, we use the input, as the
    paper describes (background/marconi.md §2).
    """
    ckpts = []
    if m.partial is not None:
        branch = seq.floor_grid(m.depth, chunk)
        if branch > m.hit_depth:
            ckpts.append(branch)
    end = seq.floor_grid(len(seq.ids), chunk)
    if end > (ckpts[-1] if ckpts else m.hit_depth):
        ckpts.append(end)
    return Admission(end, tuple(ckpts))

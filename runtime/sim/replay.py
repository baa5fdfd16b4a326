"""Replay: push a workload's requests through one policy's cache, in arrival order.

Per request (as the paper's simulator, background/marconi.md §5 "How arrivals are used"):
the clock moves to the arrival time; the input is matched (the hit is recorded); the
policy decides what to cache; the entry is inserted (evicting as needed, the matched path
locked meanwhile) before the next request is looked up. A request's output is inserted
with its input (for block traces as fresh ids that no later input can match).

The first ``config.warmup`` of the requests (a fraction, `CacheConfig.warmup_requests`) warm
the cache up: they are replayed like the others, but the metrics (`simulator.summarize`)
count from request `warmup` on. The replay notes the cache's counters when that window
opens, and its peak occupancy restarts there from the warm cache's.

A `Replay` can be forked (the cache cloned) to continue the same history under another
policy; `what_if` replays its workload once to a point and continues it under each of a
grid of policies, in the replay's executor: Marconi's α tuner (through the replay it is
handed) and the static-α oracle (`simulator`) use that.
"""

from __future__ import annotations

import gc
import itertools
from contextlib import contextmanager
from functools import partial
from typing import Any, Callable, Sequence

from marconi.passes.cost_model import CostModel
from marconi.runtime.cache.policies.base import Policy
from marconi.runtime.cache.tree import PrefixTree, Refresh
from marconi.runtime.seq import make_seq
from marconi.runtime.sim.executor import Executor, LocalExecutor
from marconi.runtime.workload import Workload

Progress = Callable[[int, int], None]


class Replay:
    """One policy's replay of a workload. `executor` runs the continuations it forks
    (`what_if`); default in-line."""

    def __init__(self, workload: Workload, cost: CostModel, policy,
                 cache: PrefixTree | None = None, executor: Executor | None = None):
        self.workload = workload
        self.cost = cost
        self.policy = policy
        self.executor = executor if executor is not None else LocalExecutor()
        self.cache = cache if cache is not None else policy.make_cache()
        self.warmup = policy.config.warmup_requests(len(workload.requests))
        self.window_start: tuple[int, ...] | None = None   # `counters()` when counting began
        self.hits = [0] * len(workload.requests)   # hit tokens per request
        self.hit_ids = [0] * len(workload.requests)  # hit ids (blocks) per request
        self.done = 0                              # requests replayed so far
        self.first_eviction: int | None = None     # request during which eviction began
        self.next_fresh = -1                       # next fresh (never-matching) id

    def run(self, stop: int | None = None, progress: Progress | None = None,
            every: int = 1000) -> None:
        """Replay requests ``done … stop-1``."""
        stop = len(self.workload.requests) if stop is None else stop
        with without_cycle_collector():
            if self.window_start is None and self.warmup < stop:
                if self.done < self.warmup:
                    self._run(self.warmup, progress, every)
                self._open_window()
            self._run(stop, progress, every)

    def counters(self) -> tuple[int, ...]:
        """The cache's running counts: checkpoints admitted and evicted, evictions, inserts
        rejected."""
        c = self.cache
        return c.checkpoints_admitted, c.checkpoints_evicted, c.evictions, c.rejected

    def _open_window(self) -> None:
        """Requests from here on are counted: note the counters, restart the peak."""
        self.window_start = self.counters()
        if self.warmup:
            c = self.cache
            c.peak_occupancy, c.peak_bytes = c.occupancy, c.used_bytes

    def _run(self, stop, progress, every) -> None:
        requests = self.workload.requests
        cache, policy, hits, hit_ids = self.cache, self.policy, self.hits, self.hit_ids
        clock = cache.clock
        fresh = itertools.count(self.next_fresh, -1)
        path_refresh = policy.refresh is Refresh.PATH
        admit, after = policy.admit, policy.after_request
        match, insert, consume, touch = cache.match, cache.insert, cache.consume, \
            cache.touch_path
        for i in range(self.done, stop):
            r = requests[i]
            if r.arrival_ms > clock.now:
                clock.now = r.arrival_ms
            seq = make_seq(r, fresh)
            m = match(seq, seq.n_input)
            if m.hit_depth:
                hits[i] = seq.tokens(m.hit_depth)
                hit_ids[i] = m.hit_depth
                consume(m.hit_node, not path_refresh)
            length, checkpoints = admit(seq, m)
            end = insert(seq, length, checkpoints, m)
            if path_refresh:
                touch(end if end is not None else (m.partial or m.node))
            if self.first_eviction is None and cache.evictions:
                self.first_eviction = i
            self.done = i + 1
            after(self, i)
            if progress is not None and (i + 1) % every == 0:
                progress(i + 1, len(requests))
        self.next_fresh = next(fresh)
        if progress is not None:
            progress(self.done, len(requests))

    def fork(self, policy) -> Replay:
        """A copy of this replay's state that continues under `policy`."""
        other = Replay.__new__(Replay)
        other.workload, other.cost, other.policy = self.workload, self.cost, policy
        other.executor = self.executor
        other.cache = self.cache.clone(policy.make_index())
        other.hits = list(self.hits)
        other.hit_ids = list(self.hit_ids)
        other.done = self.done
        other.first_eviction = self.first_eviction
        other.next_fresh = self.next_fresh
        other.warmup, other.window_start = self.warmup, self.window_start
        return other

    def what_if(self, base: Policy, fork_at: int, make_policy: Callable[[Any], Policy],
                values: Sequence, stop: int | None, measure: Callable[[Replay], Any]) -> dict:
        """{v: measure(run)} for every v in `values`: this replay's workload replayed afresh
        under `base` up to request `fork_at`, then that one history continued under
        ``make_policy(v)`` up to `stop` (None: the end), one fork per value, in this
        replay's executor. (`Policy.after_request` is handed this method; see
        `ReplayView`.)"""
        return what_if(self.workload, self.cost, base, fork_at, make_policy, values, stop,
                       measure, self.executor)

    def continue_each(self, make_policy: Callable[[Any], Policy], values: Sequence,
                      stop: int | None, measure: Callable[[Replay], Any]) -> dict:
        """{v: measure(this history continued under make_policy(v) to `stop`)}, in this
        replay's executor; this replay itself is left as it is."""
        results = self.executor.map(partial(_continue, self, make_policy, stop, measure),
                                    values)
        return dict(zip(values, results))

    def discard(self) -> None:
        """Free this replay's tree now, by reference counting (see `without_cycle_collector`):
        a sweep drops twenty of them, each cyclic, and would otherwise leave them to a full
        collection. The replay cannot be used afterwards."""
        self.cache.discard()


def what_if(workload: Workload, cost: CostModel, base: Policy, fork_at: int,
            make_policy: Callable[[Any], Policy], values: Sequence, stop: int | None,
            measure: Callable[[Replay], Any], executor: Executor | None = None) -> dict:
    """`Replay.what_if` for any holder of a workload (the serving history too)."""
    history = Replay(workload, cost, base, executor=executor)
    history.run(stop=fork_at)
    out = history.continue_each(make_policy, values, stop, measure)
    history.discard()
    return out


def _continue(history: Replay, make_policy, stop, measure, value):
    with without_cycle_collector():                 # the fork allocates a whole tree
        run = history.fork(make_policy(value))
        run.run(stop=stop)
        out = measure(run)
        run.discard()
    return out


_found: list[bool] = []    # the collector's state each enclosing pause found


@contextmanager
def without_cycle_collector():
    """Pause Python's cyclic garbage collector (restored after, even on error; nests).

    A replay allocates millions of short-lived tuples (eviction-heap entries); each
    allocation burst triggers collections that traverse every live heap entry and node
    (and, in a process that imported torch, ~400k objects besides: 0.2 s per full
    collection), about a quarter of a FlopAware replay's time, and find nothing: what a
    replay discards is acyclic (a removed node is unlinked from its parent; entries point
    one way), so reference counting frees it. Live trees are cyclic (parent ⇄ children):
    a replay that is done with is `discard`ed, or left to the collector once it is back on.
    """
    _found.append(gc.isenabled())
    gc.disable()
    try:
        yield
    finally:
        if _found.pop():
            gc.enable()


@contextmanager
def with_cycle_collector():
    """Inside a replay, collect cycles again for a block of other work (a policy that plans
    mid-replay builds cyclic planner structures), if the replay's caller had it on."""
    if not (_found and _found[0]) or gc.isenabled():
        yield
        return
    gc.enable()
    try:
        yield
    finally:
        gc.disable()

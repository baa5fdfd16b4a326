"""Continue one replayed history under each α of a grid (Marconi's tuner, the static sweep).

The paper replays its bootstrap window for every α in parallel on CPU cores (§4.2); with
``jobs > 1`` this does the same in forked worker processes (they inherit the history, and
send back only what `measure` returns). Inside a worker process it always runs in-line,
so pools never nest.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Sequence

from marconi.runtime.sim.replay import Replay, without_cycle_collector

_STATE: tuple | None = None          # (history, make_policy, stop, measure) for workers


def sweep(history: Replay, make_policy: Callable[[float], Any], alphas: Sequence[float],
          stop: int | None, measure: Callable[[Replay], Any], jobs: int = 1) -> dict:
    """{α: measure(history continued to `stop` under make_policy(α))} for every α."""
    if jobs <= 1 or len(alphas) < 2 or multiprocessing.parent_process() is not None:
        return {a: _continue(history, make_policy, a, stop, measure) for a in alphas}
    global _STATE
    _STATE = (history, make_policy, stop, measure)
    try:
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=min(jobs, len(alphas)), mp_context=ctx) as ex:
            return dict(zip(alphas, ex.map(_worker, alphas)))
    finally:
        _STATE = None


def _continue(history, make_policy, alpha, stop, measure):
    with without_cycle_collector():                 # the fork allocates a whole tree
        run = history.fork(make_policy(alpha))
        run.run(stop=stop)
        out = measure(run)
        run.discard()
    return out


def _worker(alpha: float):
    history, make_policy, stop, measure = _STATE
    return _continue(history, make_policy, alpha, stop, measure)

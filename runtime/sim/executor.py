"""Executors: where the independent replays of a simulation run.

A simulation has two kinds of independent work: the policies of one `simulate` call, and
the continuations of one shared history under each α of a grid (Marconi's tuner, the
static-α oracle; the paper replays its bootstrap window for every α in parallel on CPU
cores, §4.2), and the benchmark sweep's tasks. All go through ``executor.map(fn, items)``,
which returns ``[fn(item) for item in items]`` in order, wherever it ran them, and calls
``done(i, result)`` in this process as each item finishes (for progress), in the order
they finish:

- `LocalExecutor`: in this process, one after another;
- `ProcessExecutor(jobs)`: in up to `jobs` forked worker processes.

Replays are deterministic, so the results do not depend on the executor, only the time
does. Callers take an executor; a ``--jobs`` count becomes one at the edge
(`executor_for`). An executor given to a replay is used for the work that replay forks;
when several policies already run side by side, each runs its own forks in-line
(`simulator.simulate`), so worker pools never nest.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Callable, Iterable, Protocol, TypeVar

T = TypeVar("T")
R = TypeVar("R")
Done = Callable[[int, R], None]      # (index of the item, its result)


class Executor(Protocol):
    """Runs ``fn`` over items, results in the items' order."""

    workers: int        # items it can run at once (1: one after another)

    def map(self, fn: Callable[[T], R], items: Iterable[T],
            done: Done | None = None) -> list[R]: ...


class LocalExecutor:
    """Every item in this process, in order."""

    workers = 1

    def map(self, fn: Callable[[T], R], items: Iterable[T],
            done: Done | None = None) -> list[R]:
        return _in_line(fn, list(items), done)


class ProcessExecutor:
    """Items in up to `jobs` forked worker processes.

    `fn`, and everything it refers to (a whole replayed history, a workload), reaches the
    workers by fork, once per `map` and never pickled; each item and each result is
    pickled. Fewer than two items, or a call from inside a worker process, run in-line.
    """

    def __init__(self, jobs: int):
        if jobs < 1:
            raise ValueError(f"ProcessExecutor: jobs {jobs}; expected at least 1")
        self.workers = jobs

    def map(self, fn: Callable[[T], R], items: Iterable[T],
            done: Done | None = None) -> list[R]:
        items = list(items)
        if self.workers <= 1 or len(items) < 2 or multiprocessing.parent_process() is not None:
            return _in_line(fn, items, done)
        ctx = multiprocessing.get_context("fork")
        results: list = [None] * len(items)
        # the initializer's arguments are inherited by the forked workers, not pickled
        with ProcessPoolExecutor(max_workers=min(self.workers, len(items)), mp_context=ctx,
                                 initializer=_adopt, initargs=(fn,)) as pool:
            futures = {pool.submit(_apply, item): i for i, item in enumerate(items)}
            for future in as_completed(futures):
                i = futures[future]
                results[i] = future.result()
                if done is not None:
                    done(i, results[i])
        return results

    def __repr__(self) -> str:
        return f"ProcessExecutor({self.workers})"


def executor_for(jobs: int) -> Executor:
    """The executor a ``--jobs N`` flag asks for: in-line for 1, else N processes."""
    return LocalExecutor() if jobs <= 1 else ProcessExecutor(jobs)


def _in_line(fn: Callable[[T], R], items: list[T], done: Done | None) -> list[R]:
    results = []
    for i, item in enumerate(items):
        results.append(fn(item))
        if done is not None:
            done(i, results[-1])
    return results


# Set in a worker process only (by `_adopt`, when the pool forks it): the function that
# worker applies to the items it is sent. The parent process never sets it.
_worker_fn: Callable | None = None


def _adopt(fn: Callable) -> None:
    global _worker_fn
    _worker_fn = fn


def _apply(item):
    return _worker_fn(item)

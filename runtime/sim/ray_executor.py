"""`RayExecutor`: the executor protocol (`runtime.sim.executor`) on Ray tasks.

For sweeps that outgrow one machine: the items of one ``map`` become Ray tasks, on a local
Ray instance this executor starts or on a cluster it joins (``address="auto"`` or
``"ray://host:10001"``). What changes from `ProcessExecutor` is only where the work runs:

- ``fn``, with everything it refers to (a workload, a replayed history), is put into Ray's
  object store once per ``map`` (``ray.put``) and every task receives that one reference;
  only the items and the results travel per task;
- a task whose worker dies (killed, out of memory) is run again, up to `max_retries` times
  (Ray's ``max_retries`` of a task, which covers system failures only: an exception ``fn``
  raises is not retried and reaches the caller, as with the other executors);
- results are placed by the item's index, one slot per task, so a retried task fills its
  own slot once and nothing is lost or counted twice; ``done(i, result)`` is called in this
  process as tasks finish (``ray.wait``).

Replays are deterministic, so the results equal `LocalExecutor`'s for any number of workers
(tests/test_ray_executor.py compares them). Inside a Ray task an executor runs in-line, so
a replay forked in a worker (an α sweep) never submits tasks of its own: pools never nest.

Ray is an optional extra (``pip install 'marconi-plan[ray]'``), imported on first use. The
library never prints: `connect` returns the dashboard address (None when this Ray has no
dashboard, i.e. without ``ray[default]``) for the CLI to show, and logs it.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterable, TypeVar

from marconi.errors import MissingExtraError, UserError
from marconi.runtime.sim.executor import Done, _in_line

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

INSTALL_HINT = "pip install 'marconi-plan[ray]'"


class RayExecutor:
    """Items as Ray tasks: a local instance of `num_cpus` CPUs (``address=None``; default
    all of this machine's) or an existing cluster (``"auto"``, ``"ray://…"``).

    `num_cpus` also caps the tasks in flight of one ``map`` (on a cluster, where it cannot
    size the instance); without it every item is submitted at once and Ray schedules them
    on the CPUs it has. Ray starts or is joined on the first ``map`` (or `connect`); a Ray
    already initialised in this process is used as it is.
    """

    def __init__(self, address: str | None = None, num_cpus: int | None = None,
                 max_retries: int = 3):
        if num_cpus is not None and num_cpus < 1:
            raise ValueError(f"RayExecutor: num_cpus {num_cpus}; expected at least 1")
        if max_retries < 0:
            raise ValueError(f"RayExecutor: max_retries {max_retries}; expected at least 0")
        self.address = address
        self.num_cpus = num_cpus
        self.max_retries = max_retries
        self.dashboard_url: str | None = None

    @property
    def workers(self) -> int:
        """Items it can run at once: `num_cpus`, else the CPUs of the Ray it runs on (1
        inside a Ray task, where it runs in-line)."""
        if _in_task:
            return 1
        if self.num_cpus is not None:
            return self.num_cpus
        self.connect()
        return max(1, int(_ray().cluster_resources().get("CPU", 1)))

    def connect(self) -> str | None:
        """Start or join Ray (once); the dashboard's address, or None without one."""
        ray = _ray()
        if not ray.is_initialized():
            local = self.address is None
            try:
                context = ray.init(address=self.address,
                                   num_cpus=self.num_cpus if local else None,
                                   logging_level=logging.WARNING, log_to_driver=False)
            except ConnectionError as e:
                raise UserError("--ray", f"cannot join Ray at {self.address!r} ({e}); "
                                "expected 'auto' on a node of a running cluster or "
                                "ray://HOST:PORT of its client server") from e
            self.dashboard_url = _url(getattr(context, "dashboard_url", None))
            log.info("Ray %s%s", "started locally" if local else f"joined at {self.address}",
                     f"; dashboard at {self.dashboard_url}" if self.dashboard_url else "")
        return self.dashboard_url

    def map(self, fn: Callable[[T], R], items: Iterable[T],
            done: Done | None = None) -> list[R]:
        items = list(items)
        if _in_task or len(items) < 2:
            return _in_line(fn, items, done)
        self.connect()
        ray = _ray()
        task = ray.remote(num_cpus=1, max_retries=self.max_retries)(_apply)
        fn_ref = ray.put(fn)                          # once per map, shared by every task
        cap = self.num_cpus or len(items)
        results: list = [None] * len(items)
        index: dict = {}                              # in-flight ref → its item's index
        waiting = iter(enumerate(items))
        for i, item in waiting:
            index[task.remote(fn_ref, item)] = i
            if len(index) >= cap:
                break
        while index:
            ready, _ = ray.wait(list(index), num_returns=1)
            i = index.pop(ready[0])
            results[i] = ray.get(ready[0])            # an exception of fn is raised here
            if done is not None:
                done(i, results[i])
            for j, item in waiting:                   # keep `cap` in flight
                index[task.remote(fn_ref, item)] = j
                break
        return results

    def __repr__(self) -> str:
        where = self.address or "local"
        return f"RayExecutor({where!r}, num_cpus={self.num_cpus})"


def _ray():
    """The ray module, or a MissingExtraError naming the extra that installs it."""
    try:
        import ray
    except ImportError as e:
        raise MissingExtraError("--ray", f"running on Ray needs ray, which is not installed; "
                                f"install it with: {INSTALL_HINT}") from e
    return ray


def _url(url: str | None) -> str | None:
    if not url:
        return None
    return url if "://" in url else f"http://{url}"


# True in a Ray worker process once it runs one of our tasks: executors there run in-line.
_in_task = False


def _apply(fn: Callable, item):
    """The body of every task (Ray resolves `fn`'s object reference before the call)."""
    global _in_task
    _in_task = True
    return fn(item)

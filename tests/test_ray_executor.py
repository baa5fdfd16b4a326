"""`RayExecutor` (runtime/sim/ray_executor.py): the same results as `LocalExecutor`, each
item's result exactly once even when a worker is killed, and the one-line hint without ray.

The Ray tests share one local instance of 2 CPUs (module-scoped: a start costs seconds)
and skip where the ``ray`` extra is not installed; the missing-ray tests run everywhere,
hiding ray by ``sys.modules["ray"] = None`` (import fails, `find_spec` answers None).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import sys
from pathlib import Path

import pytest

from marconi.cli import main
from marconi.errors import MissingExtraError
from marconi.runtime.capacity import Capacity
from marconi.runtime.config import CacheConfig, MarconiParams
from marconi.runtime.sim.executor import LocalExecutor
from marconi.runtime.sim.generators import AgentSpec, ChatSpec, SharedPromptSpec, generate
from marconi.runtime.sim.ray_executor import RayExecutor
from marconi.runtime.sim.simulator import simulate
from helpers import paper_7b_cost

REPO = Path(__file__).resolve().parents[1]
MODEL = str(REPO / "examples/models/marconi-7b-hybrid.yaml")

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="ray is not installed (pip install 'marconi-plan[ray]')")


@pytest.fixture(scope="module")
def ray_cpus2():
    """One local Ray instance of 2 CPUs for the module."""
    import ray
    ray.init(num_cpus=2, logging_level="ERROR", log_to_driver=False)
    yield RayExecutor(num_cpus=2)
    ray.shutdown()


def tiny_workload():
    return generate((ChatSpec(sessions=4, turns=(2, 5)),
                     AgentSpec(sessions=2, rounds=(3, 6)),
                     SharedPromptSpec(prompts=2, requests_total=20)), seed=3, name="tiny")


def untimed(result):
    params = {k: v for k, v in result.params.items() if k != "tuning_seconds"}
    return dataclasses.replace(result, seconds=0.0, params=params)


def is_timing(key: str) -> bool:
    """A measured time (seconds, or planned-hedged's ghost_us_per_request), which no two
    runs share; the modelled TTFT (…_ms) is a result and kept."""
    return "seconds" in key or "_us" in key


def strip_timing(obj):
    if isinstance(obj, dict):
        return {k: strip_timing(v) for k, v in obj.items() if not is_timing(k)}
    if isinstance(obj, list):
        return [strip_timing(v) for v in obj]
    return obj


# ---------------------------------------------------------------- same results as local

@needs_ray
def test_map_returns_every_result_in_order(ray_cpus2):
    shared = list(range(10_000))                     # reaches the tasks through ray.put
    seen = []
    results = ray_cpus2.map(lambda x: (x * x, len(shared)), range(7),
                            done=lambda i, r: seen.append((i, r)))
    assert results == [(x * x, 10_000) for x in range(7)]
    assert sorted(seen) == list(enumerate(results))  # done once per item, in this process
    assert ray_cpus2.map(lambda x: x, []) == []


@needs_ray
@pytest.mark.parametrize("policies,grid", [
    pytest.param(["sglang", "marconi", "vllm-all"], (0.0, 1.0), id="3-policies-side-by-side"),
    pytest.param(["marconi"], (0.0, 0.5, 1.0), id="alpha-sweep-of-one-history"),
])
def test_simulate_on_ray_equals_local(ray_cpus2, policies, grid):
    w, cost = tiny_workload(), paper_7b_cost()
    config = CacheConfig(Capacity.shared(2 * 10**9), marconi=MarconiParams(alpha_grid=grid))
    local = simulate(w, cost, config, policies, executor=LocalExecutor())
    on_ray = simulate(w, cost, config, policies, executor=ray_cpus2)
    assert [untimed(r) for r in on_ray.results] == [untimed(r) for r in local.results]


@needs_ray
def test_benchmark_tasks_on_ray_equal_local(ray_cpus2):
    from benchmarks.sweep import BOUND, CAPACITY, POLICY, REFERENCE, Inputs, Task, run_tasks
    inputs = Inputs(costs={"7b": paper_7b_cost()}, workloads={"tiny": tiny_workload()},
                    variants=(), skipped=())
    [ref] = run_tasks([Task(CAPACITY, "7b", "tiny", REFERENCE)], inputs, jobs=1)
    cap = ref["footprint_bytes"] // 2
    tasks = [Task(CAPACITY, "7b", "tiny", POLICY, 0.5, p, cap)
             for p in ("sglang", "vllm-all", "marconi", "marconi-static", "planned")]
    tasks += [Task(CAPACITY, "7b", "tiny", REFERENCE), Task(CAPACITY, "7b", "tiny", BOUND, 0.5,
                                                            "", cap)]
    local = run_tasks(tasks, inputs, jobs=1)
    on_ray = run_tasks(tasks, inputs, jobs=1, executor=ray_cpus2)
    assert len(local) == 7
    assert strip_timing(on_ray) == strip_timing(local)


# ---------------------------------------------------------------- failures

@needs_ray
def test_a_killed_worker_is_retried_and_every_result_comes_once(ray_cpus2, tmp_path):
    marker = tmp_path / "killed-once"

    def square_dying_once(x):
        if x == 3 and not marker.exists():
            marker.touch()
            os._exit(1)                              # the worker process dies mid-map
        return x * x
    seen = []
    results = ray_cpus2.map(square_dying_once, range(6), done=lambda i, r: seen.append(i))
    assert marker.exists()                           # the first attempt did die
    assert results == [x * x for x in range(6)]
    assert sorted(seen) == list(range(6))            # done once per item, none twice


@needs_ray
def test_an_exception_of_fn_is_not_retried_and_reaches_the_caller(ray_cpus2, tmp_path):
    attempts = tmp_path / "attempts"

    def fail_on_two(x):
        if x == 2:
            with attempts.open("a") as f:
                f.write("x")
            raise ValueError("item 2")
        return x
    with pytest.raises(ValueError, match="item 2"):
        ray_cpus2.map(fail_on_two, range(4))
    assert attempts.read_text() == "x"


@needs_ray
def test_inside_a_task_it_runs_in_line(ray_cpus2):
    inner = RayExecutor(num_cpus=2)
    assert ray_cpus2.map(lambda x: (inner.workers, inner.map(lambda y: y + x, [1, 2])),
                         [10, 20]) == [(1, [11, 12]), (1, [21, 22])]


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_cpus 0"):
        RayExecutor(num_cpus=0)
    with pytest.raises(ValueError, match="max_retries -1"):
        RayExecutor(max_retries=-1)


# ---------------------------------------------------------------- without the extra

def test_without_ray_the_executor_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'marconi-plan\[ray\]'"):
        RayExecutor(num_cpus=2).map(lambda x: x, range(3))
    assert RayExecutor().map(lambda x: x + 1, [1]) == [2]   # one item runs in-line


@pytest.mark.parametrize("command", [
    ["simulate", MODEL, "--capacity", "1GB", "--ray"],
    ["simulate", MODEL, "--capacity", "1GB", "--ray", "auto"],
    [MODEL, "--ray", "ray://head:10001"],
    ["engines", MODEL, "--trace", "t.jsonl", "--capacity", "1GB", "--ray"],
], ids=["simulate-local", "simulate-auto", "main-job-cluster", "engines"])
def test_without_ray_the_cli_prints_one_line_and_exits_2(command, monkeypatch, capsys,
                                                         tmp_path):
    import marconi.passes

    def work(*a, **k):
        raise AssertionError("the work started before the extras were checked")
    monkeypatch.setattr(marconi.passes, "build_cost_model", work)
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.chdir(tmp_path)
    assert main(command) == 2
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [
        "marconi-plan: --ray: running on Ray needs ray, which is not installed; install it "
        "with: pip install 'marconi-plan[ray]'"]
    assert captured.out == "" and list(tmp_path.iterdir()) == []


def test_benchmarks_run_without_ray_exits_2(monkeypatch, capsys, tmp_path):
    from benchmarks import run
    monkeypatch.setitem(sys.modules, "ray", None)
    assert run.main(["--suite", "smoke", "--ray", "--out", str(tmp_path / "o")]) == 2
    assert "pip install 'marconi-plan[ray]'" in capsys.readouterr().err

"""runtime.yaml: round trip, validation messages, atomic writes."""

from __future__ import annotations

import dataclasses
import os

import pytest
import yaml

from marconi.errors import PlanError
from marconi.runtime.plan.rules import (AdmissionRules, EvictionRules, MemoryRules, PinnedPrefix,
                                   Plan)
from marconi.runtime.plan.plan_file import load_plan, plan_to_dict, write_plan
from helpers import causal_toy_cost


def _plan(cost) -> Plan:
    return Plan(model=cost.model, cost_fingerprint=cost.fingerprint(), block_tokens=512,
                chunk_tokens=None, capacity_bytes=40 * 2**30,
                admission=AdmissionRules(branch_sighting=2, stride_tokens=4096,
                                         min_prefix_tokens=512, admit_fresh=False),
                eviction=EvictionRules().with_offset("continuation", 12_000.0)
                .with_offset("passed", -1e15),
                memory=MemoryRules("split", 0.25),
                pinned=(PinnedPrefix.of((1, 2, 3)),),
                provenance=(("workload", "w"), ("requests", 10)),
                marconi_alpha=1.5)


def test_round_trip(tmp_path):
    cost = causal_toy_cost()
    plan = _plan(cost)
    write_plan(plan, tmp_path / "runtime.yaml")
    loaded = load_plan(tmp_path / "runtime.yaml", cost)
    assert loaded == plan
    assert loaded.pinned[0].matches((1, 2, 3, 4)) and not loaded.pinned[0].matches((1, 2, 4))
    assert loaded.marconi_alpha == 1.5


def test_a_file_without_the_hedge_section_loads_without_an_alpha(tmp_path):
    """Files written before the fitted α (#14) have no ``hedge:``; they load as unfitted."""
    cost = causal_toy_cost()
    plan = dataclasses.replace(_plan(cost), marconi_alpha=None)
    assert "hedge" not in plan_to_dict(plan) and "hedge" in plan_to_dict(_plan(cost))
    write_plan(plan, tmp_path / "runtime.yaml")
    assert load_plan(tmp_path / "runtime.yaml", cost) == plan


def _write(tmp_path, doc) -> str:
    path = tmp_path / "runtime.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def _edit(doc, dotted, value):
    *parents, key = dotted.split(".")
    d = doc
    for p in parents:
        d = d[p]
    if value is KeyError:
        del d[key]
    else:
        d[key] = value


BAD_FIELDS = [
    ("schema_version", 99, "schema_version: 99; expected 1"),
    ("admission.branch_sighting", -1, "admission.branch_sighting: -1 is below 0"),
    ("admission.fresh_threshold", 1.5, "admission.fresh_threshold: 1.5 is outside [0.0, 1.0]"),
    ("admission.input_end", "yes", "admission.input_end: expected true or false"),
    ("admission.colour", 1, "admission.colour: unknown field; expected one of"),
    ("memory.pools", "three", "memory.pools: 'three'; expected shared or split"),
    ("memory.state_fraction", 0, "memory.state_fraction: 0.0; expected a fraction in (0, 1)"),
    ("eviction.policy", "lfu", "eviction.policy: unknown 'lfu'; expected class-offset-lru"),
    ("capacity_bytes", KeyError, "capacity_bytes: missing required field"),
    ("workload.block_tokens", "big", "workload.block_tokens: expected an integer"),
    ("hedge.marconi_alpha", -0.5, "hedge.marconi_alpha: -0.5 is below 0.0; expected ≥ 0.0"),
    ("hedge.marconi_alpha", "lots", "hedge.marconi_alpha: expected a (finite) number, got 'lots'"),
    ("hedge.marconi_alpha", float("nan"), "hedge.marconi_alpha: expected a (finite) number"),
    ("hedge.experts", 3, "hedge.experts: unknown field; expected one of marconi_alpha"),
]


@pytest.mark.parametrize("field,value,message", BAD_FIELDS,
                         ids=[f"{f}={v!r}" for f, v, _ in BAD_FIELDS])
def test_validation_names_file_and_field(tmp_path, field, value, message):
    cost = causal_toy_cost()
    doc = plan_to_dict(_plan(cost))
    _edit(doc, field, value)
    path = _write(tmp_path, doc)
    with pytest.raises(PlanError) as e:
        load_plan(path, cost)
    assert str(e.value).startswith(f"{path}: ") and message in str(e.value), str(e.value)


def test_other_model_is_refused_with_both_fingerprints(tmp_path):
    cost, other = causal_toy_cost(), causal_toy_cost(state=301)
    write_plan(_plan(cost), tmp_path / "runtime.yaml")
    with pytest.raises(PlanError) as e:
        load_plan(tmp_path / "runtime.yaml", other)
    msg = str(e.value)
    assert cost.fingerprint() in msg and other.fingerprint() in msg
    assert "model.cost_fingerprint" in msg and "re-run marconi-plan" in msg


def test_broken_yaml_names_the_line(tmp_path):
    path = tmp_path / "runtime.yaml"
    path.write_text("schema_version: 1\nmodel: {name: x\nworkload: 3\n")
    with pytest.raises(PlanError, match=rf"^{path}:\d+: YAML syntax error"):
        load_plan(path)


def test_missing_file(tmp_path):
    with pytest.raises(PlanError, match="no such file"):
        load_plan(tmp_path / "none.yaml")


def test_write_is_atomic(tmp_path, monkeypatch):
    """A failure while writing leaves the old file untouched and no temporary behind."""
    cost = causal_toy_cost()
    target = tmp_path / "runtime.yaml"
    write_plan(_plan(cost), target)
    before = target.read_text()

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    changed = dataclasses.replace(_plan(cost), capacity_bytes=1)
    with pytest.raises(OSError):
        write_plan(changed, target)
    assert target.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runtime.yaml"]

"""runtime.yaml: a Plan on disk, with a schema version and the model's fingerprint.

Loading parses the file once into a `Plan` (frozen dataclasses) and checks everything:
YAML syntax (file and line), unknown or missing fields, types and ranges, the schema
version, and, given the CostModel in use, that the plan was made for it. Every failure is
a `PlanError` reading ``runtime.yaml: <field>: <what is wrong>; expected <what>``.
Writing is atomic: a temporary file in the same folder, renamed over the target.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import yaml

from marconi.errors import PlanError
from marconi.passes.cost_model import CostModel
from marconi.errors import UserError
from marconi.runtime.plan.next_use import NextUsePredictor
from marconi.runtime.plan.reuse_odds import ReuseOdds
from marconi.runtime.plan.engine_flags import (SECTION as ENGINES, EngineFlags,
                                               engines_from_dict, engines_to_dict,
                                               load_engines)   # re-exported: the reader
from marconi.runtime.plan.rules import (CLASSES, SCHEMA_VERSION, AdmissionRules, EvictionRules,
                                   MemoryRules, PinnedPrefix, Plan)

HEDGE = "hedge"      # optional section: {marconi_alpha: α} (`Plan.marconi_alpha`)
REUSE_ODDS = "reuse_odds"    # optional section: `Plan.reuse_odds` (`ReuseOdds.to_dict`)


def used_by(path: str, model: str = "MODEL", workload: str = "--trace T",
            capacity: str = "C") -> tuple[str, ...]:
    """What reads the runtime.yaml at `path`: named in its header and in the main job's
    report, so that a reader of either knows what to do with the file."""
    return (f"marconi-plan simulate {model} {workload + ' ' if workload else ''}"
            f"--capacity {capacity} --plan {path}",
            f'marconi.wrap(model, plan="{path}")')


def _header(path: Path) -> str:
    readers = used_by(path.name)
    return ("# runtime.yaml: prefix-caching rules compiled by marconi-plan for one model.\n"
            f"# Read by: {readers[0]}\n"
            + "".join(f"#          {r}\n" for r in readers[1:])
            + "# The `planned` policy applies it; docs/planner.md describes every field.\n")


def plan_to_dict(plan: Plan, engines: Sequence[EngineFlags] = ()) -> dict[str, Any]:
    """`plan` as runtime.yaml's data; with `engines`, their best flags as its ``engines:``
    section (`engine_flags`)."""
    doc = _plan_dict(plan)
    if engines:
        doc[ENGINES] = engines_to_dict(engines)
    return doc


def _plan_dict(plan: Plan) -> dict[str, Any]:
    extra = {} if plan.next_use is None else {"next_use": plan.next_use.to_dict()}
    if plan.marconi_alpha is not None:
        extra[HEDGE] = {"marconi_alpha": float(plan.marconi_alpha)}
    if plan.reuse_odds is not None:
        extra[REUSE_ODDS] = plan.reuse_odds.to_dict()
    return {
        "schema_version": plan.schema_version,
        "model": {"name": plan.model, "cost_fingerprint": plan.cost_fingerprint},
        "workload": {"block_tokens": plan.block_tokens, "chunk_tokens": plan.chunk_tokens},
        "capacity_bytes": plan.capacity_bytes,
        "admission": dataclasses.asdict(plan.admission),
        "eviction": {"policy": "class-offset-lru",
                     "offsets_ms": {str(c): float(v) for c, v in plan.eviction.offsets_ms},
                     "efficiency_ms": float(plan.eviction.efficiency_ms),
                     "efficiency_ref": float(plan.eviction.efficiency_ref)},
        "memory": dataclasses.asdict(plan.memory),
        "pinned_prefixes": [{"ids": p.ids, "digest": p.digest} for p in plan.pinned],
        "provenance": {k: _plain(v) for k, v in plan.provenance},
        **extra,
    }


def write_plan(plan: Plan, path: str | Path, engines: Sequence[EngineFlags] = ()) -> None:
    """Write `plan` (with each engine's best flags, if given) to `path` atomically (never
    a half-written file); `load_engines` reads the engines back."""
    path = Path(path)
    text = _header(path) + yaml.safe_dump(plan_to_dict(plan, engines), sort_keys=False,
                                    default_flow_style=None, width=100)
    folder = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as e:
        raise PlanError(str(path), f"cannot write: {e.strerror}") from e
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)                  # mkstemp makes 0600; a plan is not a secret
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_plan(path: str | Path, cost: CostModel | None = None) -> Plan:
    """Parse and validate runtime.yaml; with `cost`, check it was made for that model."""
    where = str(path)
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise PlanError(where, "no such file; expected a runtime.yaml written by "
                        "marconi-plan") from None
    except OSError as e:
        raise PlanError(where, f"cannot read: {e.strerror}") from e
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f"{where}:{mark.line + 1}" if mark is not None else where
        raise PlanError(at, f"YAML syntax error: {getattr(e, 'problem', e)}; expected "
                        "valid YAML") from None
    plan = plan_from_dict(doc, where)
    if cost is not None:
        check_model(plan, cost, where)
    return plan


def check_model(plan: Plan, cost: CostModel, where: str = "runtime.yaml") -> None:
    fp = cost.fingerprint()
    if plan.cost_fingerprint != fp:
        raise PlanError(where, f"model.cost_fingerprint: {plan.cost_fingerprint} was made for "
                        f"{plan.model!r}, the model in use is {cost.model!r} with fingerprint "
                        f"{fp} (sizes, FLOPs or dtypes differ); expected a plan made for "
                        "this model: re-run marconi-plan")


def plan_from_dict(doc: Any, where: str) -> Plan:
    r = _Reader(where)
    if isinstance(doc, dict) and ENGINES in doc:     # optional: older files have none
        engines_from_dict(doc[ENGINES], where)       # a garbled section fails here too
        doc = {k: v for k, v in doc.items() if k != ENGINES}
    top = r.mapping(doc, "", {"schema_version", "model", "workload", "capacity_bytes",
                              "admission", "eviction", "memory", "pinned_prefixes",
                              "provenance", "next_use", HEDGE, REUSE_ODDS},
                    partial=True)
    missing = sorted({"schema_version", "model", "workload", "capacity_bytes", "admission",
                      "eviction", "memory", "pinned_prefixes", "provenance"} - set(top))
    if missing:
        raise PlanError(where, f"{missing[0]}: missing required field")
    next_use = None
    if top.get("next_use") is not None:          # optional: files before #14 have none
        try:
            next_use = NextUsePredictor.from_dict(top["next_use"], "next_use")
        except UserError as e:
            raise PlanError(where, str(e)) from e
    reuse_odds = None
    if top.get(REUSE_ODDS) is not None:          # optional: files before it have none
        try:
            reuse_odds = ReuseOdds.from_dict(top[REUSE_ODDS], REUSE_ODDS)
        except UserError as e:
            raise PlanError(where, str(e)) from e
    marconi_alpha = None
    if top.get(HEDGE) is not None:               # optional: files before #14 have none
        hedge = r.mapping(top[HEDGE], HEDGE, {"marconi_alpha"})
        marconi_alpha = r.number(hedge, "marconi_alpha", HEDGE, lo=0.0)
    version = r.integer(top, "schema_version", minimum=1)
    if version != SCHEMA_VERSION:
        raise PlanError(where, f"schema_version: {version}; expected {SCHEMA_VERSION} "
                        "(re-run marconi-plan with this version)")
    model = r.mapping(top["model"], "model", {"name", "cost_fingerprint"})
    wl = r.mapping(top["workload"], "workload", {"block_tokens", "chunk_tokens"})
    adm = r.mapping(top["admission"], "admission",
                    {f.name for f in dataclasses.fields(AdmissionRules)})
    ev = r.mapping(top["eviction"], "eviction",
                   {"policy", "offsets_ms", "efficiency_ms", "efficiency_ref"})
    if ev["policy"] != "class-offset-lru":
        raise PlanError(where, f"eviction.policy: unknown {ev['policy']!r}; expected "
                        "class-offset-lru")
    offsets = r.mapping(ev["offsets_ms"], "eviction.offsets_ms", set(CLASSES), partial=True)
    mem = r.mapping(top["memory"], "memory", {"pools", "state_fraction"})
    if mem["pools"] not in ("shared", "split"):
        raise PlanError(where, f"memory.pools: {mem['pools']!r}; expected shared or split")
    fraction = r.number(mem, "state_fraction", "memory", optional=True)
    if mem["pools"] == "split" and not (fraction is not None and 0 < fraction < 1):
        raise PlanError(where, f"memory.state_fraction: {fraction!r}; expected a fraction in "
                        "(0, 1) for split pools")
    if not isinstance(top["pinned_prefixes"], list):
        raise PlanError(where, "pinned_prefixes: expected a list of {ids, digest}")
    pins = []
    for i, p in enumerate(top["pinned_prefixes"]):
        field = f"pinned_prefixes[{i}]"
        p = r.mapping(p, field, {"ids", "digest"})
        pins.append(PinnedPrefix(r.integer(p, "ids", field, minimum=1),
                                 r.string(p, "digest", field)))
    prov = top["provenance"]
    if not isinstance(prov, dict):
        raise PlanError(where, "provenance: expected a mapping")
    stride = r.integer(adm, "stride_tokens", "admission", minimum=1, optional=True)
    return Plan(
        model=r.string(model, "name", "model"),
        cost_fingerprint=r.string(model, "cost_fingerprint", "model"),
        block_tokens=r.integer(wl, "block_tokens", "workload", minimum=1),
        chunk_tokens=r.integer(wl, "chunk_tokens", "workload", minimum=1, optional=True),
        capacity_bytes=r.integer(top, "capacity_bytes", minimum=1),
        admission=AdmissionRules(
            input_end=r.boolean(adm, "input_end", "admission"),
            output_end=r.boolean(adm, "output_end", "admission"),
            branch_sighting=r.integer(adm, "branch_sighting", "admission", minimum=0),
            stride_tokens=stride,
            min_prefix_tokens=r.integer(adm, "min_prefix_tokens", "admission", minimum=0),
            fresh_threshold=r.number(adm, "fresh_threshold", "admission", lo=0.0, hi=1.0),
            admit_fresh=r.boolean(adm, "admit_fresh", "admission")),
        eviction=EvictionRules(
            offsets_ms=tuple((c, float(r.number(offsets, c, "eviction.offsets_ms")
                                       if c in offsets else 0.0)) for c in CLASSES),
            efficiency_ms=r.number(ev, "efficiency_ms", "eviction"),
            efficiency_ref=r.number(ev, "efficiency_ref", "eviction", lo=1e-300)),
        memory=MemoryRules(pools=mem["pools"], state_fraction=fraction),
        pinned=tuple(pins),
        provenance=tuple(prov.items()),
        schema_version=version,
        next_use=next_use,
        marconi_alpha=marconi_alpha,
        reuse_odds=reuse_odds)


# ---------------------------------------------------------------- private helpers

class _Reader:
    """Typed field access that names the file, the field and what was expected."""

    def __init__(self, where: str):
        self.where = where

    def _fail(self, field: str, message: str):
        raise PlanError(self.where, f"{field}: {message}")

    def mapping(self, value, field: str, keys: set[str], partial: bool = False) -> dict:
        name = field or "document"
        if not isinstance(value, dict):
            self._fail(name, f"expected a mapping, got {type(value).__name__}")
        unknown = sorted(set(value) - keys)
        if unknown:
            self._fail(f"{field + '.' if field else ''}{unknown[0]}",
                       f"unknown field; expected one of {', '.join(sorted(keys))}")
        missing = sorted(keys - set(value))
        if missing and not partial:
            self._fail(f"{field + '.' if field else ''}{missing[0]}", "missing required field")
        return value

    def integer(self, d: dict, key: str, parent: str = "", minimum: int | None = None,
                optional: bool = False) -> int | None:
        field = f"{parent + '.' if parent else ''}{key}"
        v = d.get(key)
        if v is None and optional:
            return None
        if isinstance(v, bool) or not isinstance(v, int):
            self._fail(field, f"expected an integer, got {v!r}")
        if minimum is not None and v < minimum:
            self._fail(field, f"{v} is below {minimum}; expected ≥ {minimum}")
        return v

    def number(self, d: dict, key: str, parent: str = "", lo: float | None = None,
               hi: float | None = None, optional: bool = False) -> float | None:
        field = f"{parent + '.' if parent else ''}{key}"
        v = d.get(key)
        if v is None and optional:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            self._fail(field, f"expected a (finite) number, got {v!r}")
        if lo is not None and hi is None and v < lo:
            self._fail(field, f"{v} is below {lo}; expected ≥ {lo}")
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            self._fail(field, f"{v} is outside [{lo}, {hi}]; expected a value in that range")
        return float(v)

    def boolean(self, d: dict, key: str, parent: str = "") -> bool:
        v = d.get(key)
        if not isinstance(v, bool):
            self._fail(f"{parent}.{key}", f"expected true or false, got {v!r}")
        return v

    def string(self, d: dict, key: str, parent: str = "") -> str:
        v = d.get(key)
        if not isinstance(v, str) or not v:
            self._fail(f"{parent}.{key}", f"expected a non-empty string, got {v!r}")
        return v


def _plain(v: Any) -> Any:
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)

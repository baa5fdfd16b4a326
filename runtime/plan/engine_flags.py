"""runtime.yaml's ``engines:`` section: each engine's best flags for the plan's workload.

Written by the main job with ``--engines`` (`marconi-plan engines` searched them by
replay, `planner/engine_search.py`); optional, so a file from before the section loads.
`plan_file` writes and checks it; `load_engines` reads it back. A garbled section is a
`PlanError` naming the field::

    engines:
      sglang:
        version: 0.5.23
        flags: {--mamba-full-memory-ratio: 0.6, --page-size: 1, ...}
        command: python -m sglang.launch_server --model-path … --mamba-full-memory-ratio 0.6
        flop_savings: 0.638
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

import yaml

from marconi.errors import PlanError

SECTION = "engines"
FIELDS = ("version", "flags", "command", "flop_savings")


@dataclasses.dataclass(frozen=True)
class EngineFlags:
    """One engine's best flags, as measured on the workload the plan was fitted on."""

    engine: str
    version: str
    flags: tuple[tuple[str, Any], ...]      # flag → value (None: unset), the engine's order
    command: str                            # the launch line
    flop_savings: float                     # by replay on that workload

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "flags": dict(self.flags), "command": self.command,
                "flop_savings": float(self.flop_savings)}


def engines_to_dict(engines: Sequence[EngineFlags]) -> dict[str, Any]:
    return {e.engine: e.to_dict() for e in engines}


def engines_from_dict(section: Any, where: str) -> tuple[EngineFlags, ...]:
    """The section parsed and checked; None (no section) is ()."""
    if section is None:
        return ()
    if not isinstance(section, dict):
        _fail(where, SECTION, "expected a mapping of engine name → {version, flags, "
              f"command, flop_savings}}, got {type(section).__name__}")
    out = []
    for name, entry in section.items():
        field = f"{SECTION}.{name}"
        if not isinstance(name, str) or not name:
            _fail(where, SECTION, f"{name!r}; expected engine names")
        if not isinstance(entry, dict):
            _fail(where, field, f"expected a mapping of {', '.join(FIELDS)}, got "
                  f"{type(entry).__name__}")
        unknown = sorted(set(entry) - set(FIELDS))
        if unknown:
            _fail(where, f"{field}.{unknown[0]}", f"unknown field; expected one of "
                  f"{', '.join(FIELDS)}")
        missing = [k for k in FIELDS if k not in entry]
        if missing:
            _fail(where, f"{field}.{missing[0]}", "missing required field")
        flags = entry["flags"]
        if not isinstance(flags, dict) or not all(isinstance(k, str) for k in flags):
            _fail(where, f"{field}.flags", f"expected a mapping of flag → value, got "
                  f"{flags!r}")
        for k, v in flags.items():
            if not (v is None or isinstance(v, (str, int, float, bool))):
                _fail(where, f"{field}.flags.{k}", f"{v!r}; expected a number, a string, "
                      "true/false or null")
        for key in ("version", "command"):
            if not isinstance(entry[key], str) or not entry[key]:
                _fail(where, f"{field}.{key}", f"expected a non-empty string, got "
                      f"{entry[key]!r}")
        saved = entry["flop_savings"]
        if isinstance(saved, bool) or not isinstance(saved, (int, float)) or \
                not 0.0 <= saved <= 1.0:
            _fail(where, f"{field}.flop_savings", f"{saved!r}; expected a number in [0, 1]")
        out.append(EngineFlags(name, entry["version"], tuple(flags.items()),
                               entry["command"], float(saved)))
    return tuple(out)


def load_engines(path: str | Path) -> tuple[EngineFlags, ...]:
    """The ``engines:`` section of the runtime.yaml at `path` (() when it has none)."""
    where = str(path)
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except OSError as e:
        raise PlanError(where, f"cannot read: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise PlanError(where, f"YAML syntax error: {getattr(e, 'problem', e)}; expected "
                        "valid YAML") from None
    return engines_from_dict(doc.get(SECTION) if isinstance(doc, dict) else None, where)


def _fail(where: str, field: str, message: str):
    raise PlanError(where, f"{field}: {message}")

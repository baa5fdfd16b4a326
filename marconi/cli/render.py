"""Rendering of result data as text tables or JSON (the CLI's only output path)."""

from __future__ import annotations

import json
import math
import sys
from typing import Any, Sequence

from marconi.runtime.trace_ids import BlockSizeRule


def emit_json(doc: Any) -> None:
    """Print one strict JSON document on stdout: a non-finite number (the break-even of a
    model without KV is infinite) is written as null, since JSON has no Infinity or NaN.
    The document is serialised whole before the first byte is written, so a failure
    leaves stdout empty rather than holding half a document."""
    text = json.dumps(_finite(doc), indent=2, sort_keys=False, allow_nan=False)
    sys.stdout.write(text + "\n")


def error_document(kind: str, exit_code: int, error: BaseException, message: str) -> dict:
    """What `--format json` prints on stdout when a run fails (stderr has the line).

    `kind`: usage (a command line argparse refused), input (a `UserError`), solver,
    internal or interrupted; `message` is the stderr line without the program name."""
    doc = {"kind": kind, "type": type(error).__name__, "message": message,
           "exit_code": exit_code}
    where = getattr(error, "where", None)
    if isinstance(where, str) and where:
        doc["where"] = where
    return {"error": doc}


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str = "") -> str:
    """A plain aligned text table; numbers right-aligned."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(headers)]
    numeric = [all(_is_number(row[i]) for row in rows) if rows else False
               for i in range(len(headers))]

    def line(values):
        return "  ".join(v.rjust(w) if num else v.ljust(w)
                         for v, w, num in zip(values, widths, numeric)).rstrip()

    out = [title] if title else []
    out += [line(headers), line(["-" * w for w in widths])]
    out += [line(r) for r in cells]
    return "\n".join(out)


def flag_changes(changed: dict) -> str:
    """Flags set away from their defaults, as `--flag value` text ("" for none)."""
    return " ".join(f"{k} {_flag_value(v)}" for k, v in changed.items()) or "(defaults)"


def _flag_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return "unset" if v is None else str(v)


def hedge_note(params: dict) -> str:
    """What a hedged result (`planned`, `planned-hedged`) did: its own rules' FLOP savings
    alone, who led and how often, and the switches; "" for any other result."""
    hedge = params.get("hedge", params if "leader_share" in params else None)
    if not hedge:
        return ""
    alone = hedge.get("expert_flop_savings", {})
    led = ", ".join(f"{k} {100 * v:.0f} %" for k, v in
                    sorted(hedge["leader_share"].items(), key=lambda kv: -kv[1]))
    first = hedge["experts"][0]
    rules = f"rules alone {alone[first]:.4f}; " if "hedge" in params and first in alone \
        else ""
    n = hedge["switches"]
    return f"{rules}led by {led}; {n} switch{'es' if n != 1 else ''}"


def ttft_profile(device: str) -> dict:
    """The latency profile TTFT figures are for, as the JSON report names it."""
    from marconi.runtime.sim.latency import get_device
    profile = get_device(device)
    return {"name": profile.name, "source": profile.source}


def ttft_note(device: str) -> str:
    """The line of a text report that names the TTFT figures' latency profile."""
    profile = ttft_profile(device)
    return f"TTFT from latency profile {profile['name']} ({profile['source']})"


def skipped_note(workload) -> str:
    """What a report says of a trace after its request count: `trace_notes` of a Workload."""
    return trace_notes(workload.describe())


def trace_notes(described: dict) -> str:
    """The trace facts of a `Workload.describe()` dict, each part only when it happened:
    ", N bad lines skipped" (--skip-bad-lines), lines with an unhashed tail, lines with ids
    past their input, lines reordered by timestamp, and the id rule when ids were not read
    as blocks (--tokens-per-id)."""
    notes = [f"{n:,} {what.format(s='s' if n != 1 else '')}" for n, what in (
        (described.get("skipped_lines", 0), "bad line{s} skipped"),
        (described.get("unhashed_tail_lines", 0), "line{s} with an unhashed tail (never hit)"),
        (described.get("truncated_lines", 0), "line{s} with ids past the input (dropped)"),
        (described.get("reordered_lines", 0), "line{s} reordered by timestamp")) if n]
    rule = _ID_RULES.get(described.get("block_size_rule"))
    if rule:
        notes.append(rule.format(b=described["block_size"]))
    return "".join(f", {n}" for n in notes)


_ID_RULES = {BlockSizeRule.TOKENS_PER_ID.value: "{b} tokens per id",
             BlockSizeRule.SPREAD.value: "ids spread over their line, cut into {b}-token blocks"}


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _cell(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "—"                      # not defined (e.g. the bound's hit rate)
        if math.isinf(v):
            return str(v)
        if v != 0 and (abs(v) >= 1e6 or abs(v) < 1e-3):
            return f"{v:.3e}"
        return f"{v:,.3f}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def _finite(o: Any) -> Any:
    """`o` as plain JSON data: objects by their `to_dict()` (or enum `value`), tuples as
    lists, non-finite floats as None."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, (str, int, bool)) or o is None:
        return o
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    if hasattr(o, "to_dict"):
        return _finite(o.to_dict())
    if hasattr(o, "value"):
        return _finite(o.value)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")

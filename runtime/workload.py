"""Workloads: the requests a cache sees, from a trace file or a generator.

Three trace formats, one JSON object per line, detected from the first valid line's fields
(`load_trace`; docs/simulator.md "Trace files" has the rules in full):

- Mooncake block-hash lines (``../shared/traces/``), `timestamp` in ms::

      {"timestamp": 0, "input_length": 6758, "output_length": 500, "hash_ids": [0, 1, …]}

- Qwen-Bailian lines (alibaba-edu/qwen-bailian-usagetraces-anon, README "Data Specification
  of the Traces"): the Mooncake fields plus `chat_id`, `parent_chat_id` (−1 for a root),
  `turn` and `type`; `timestamp` in seconds; one salted SipHash id per 16-token block::

      {"chat_id": 159, "parent_chat_id": 55, "timestamp": 61.114, "input_length": 521,
       "output_length": 132, "type": "text", "turn": 2, "hash_ids": [1089, 1090, …]}

- Token lines (Marconi's schema), `ts` in seconds::

      {"session_id": 3, "turn_id": 1, "ts": 12.5, "input_tokens": [...], "output_tokens": [...]}

How hash ids become the cache's ids (blocks of a given, inferred or format size with floor
or ceil counts; N tokens per id; spread) is `marconi.runtime.trace_ids`. Output tokens of a
hash-id trace are unknown ids: they can never be hit by a later input.

Ids are opaque: the cache matches prefixes of `input_ids` by path in a trie. A prefix of
`k` ids covers `request.prefix_tokens(k)` tokens.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, NamedTuple

from marconi.errors import TraceError
from marconi.runtime.trace_ids import (SPREAD, BlockSizeRule, LineShape, choose_rule,
                                       infer_block_size)

__all__ = ["Request", "Workload", "load_trace", "infer_block_size", "BlockSizeRule", "SPREAD"]


@dataclasses.dataclass(frozen=True)
class Request:
    index: int
    arrival_ms: float
    input_ids: tuple[int, ...]        # one id per block (block traces) or per token
    input_tokens: int                 # true token count of the input
    output_tokens: int
    output_ids: tuple[int, ...] | None = None  # known output ids; None = unknown (never hit)
    block_size: int = 1               # tokens per id
    session: str | None = None

    def prefix_tokens(self, n_ids: int) -> int:
        """Tokens covered by the first `n_ids` input ids (the last block may be partial)."""
        return min(n_ids * self.block_size, self.input_tokens)


@dataclasses.dataclass(frozen=True)
class Workload:
    name: str
    requests: tuple[Request, ...]
    block_size: int = 1               # tokens per id; 1 for token-level workloads
    kind: str = "token"               # "block" (hash-id trace), "token" (token trace), "generated"
    source: str = ""                  # file path or generator description
    skipped_lines: int = 0
    block_size_rule: BlockSizeRule | None = None   # None: TOKEN at block 1, else GIVEN
    trace_format: str = ""            # "mooncake", "qwen-bailian", "token"; "" if generated
    unhashed_tail_lines: int = 0      # lines whose ids cover less than their input
    truncated_lines: int = 0          # lines with ids wholly past their input (dropped)
    reordered_lines: int = 0          # lines earlier in time than a line above them

    def __post_init__(self):
        if self.block_size_rule is None:
            rule = BlockSizeRule.TOKEN if self.block_size == 1 else BlockSizeRule.GIVEN
            object.__setattr__(self, "block_size_rule", rule)

    @property
    def block_size_inferred(self) -> bool:
        return self.block_size_rule is BlockSizeRule.INFERRED

    @property
    def total_input_tokens(self) -> int:
        return sum(r.input_tokens for r in self.requests)

    def split(self, fraction: float = 0.5) -> tuple[Workload, Workload]:
        """First and second part of the trace in arrival order (tune on one, score on the other)."""
        cut = int(len(self.requests) * fraction)
        head = dataclasses.replace(self, name=f"{self.name}[:{cut}]", requests=self.requests[:cut])
        tail = dataclasses.replace(self, name=f"{self.name}[{cut}:]", requests=self.requests[cut:])
        return head, tail

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "format": self.trace_format,
                "source": self.source, "requests": len(self.requests),
                "block_size": self.block_size, "block_size_rule": self.block_size_rule.value,
                "block_size_inferred": self.block_size_inferred,
                "input_tokens": self.total_input_tokens, "skipped_lines": self.skipped_lines,
                "unhashed_tail_lines": self.unhashed_tail_lines,
                "truncated_lines": self.truncated_lines,
                "reordered_lines": self.reordered_lines}


def load_trace(path: str | Path, block_size: int | None = None,
               skip_bad_lines: bool = False, limit: int | None = None,
               tokens_per_id: int | str | None = None) -> Workload:
    """Load a Mooncake, Qwen-Bailian or token trace (format from the first valid line).

    Every line is checked before a workload is returned: a bad line raises `TraceError`
    naming ``file:line``; with `skip_bad_lines` it is counted in `Workload.skipped_lines`
    instead. `limit` keeps the first `limit` valid lines of the file.

    Requests are replayed in timestamp order: lines are sorted stably (equal times keep file
    order) and `Workload.reordered_lines` counts those that came earlier than a line above
    them; NaN or infinite timestamps are bad lines.

    Hash ids (`marconi.runtime.trace_ids`): `tokens_per_id` = N reads each id as N tokens
    whatever the count, ``"spread"`` as a chunk of unknown size (`block_size` is then the
    grid, default 16); otherwise ids are blocks of `block_size` tokens (default: 16 for
    Qwen-Bailian, else inferred), ``floor`` or ``ceil(input_length / block)`` per line.
    """
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise TraceError(str(p), "no such file; expected a JSONL trace") from None
    except (OSError, UnicodeDecodeError) as e:
        raise TraceError(str(p), f"cannot read: {e}") from e

    lines: list[_Line] = []
    fmt: _Format | None = None
    skipped = 0
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            parsed = _parse_line(line, fmt)
        except TraceError as e:
            if not skip_bad_lines:
                raise TraceError(f"{p}:{lineno}", e.message) from None
            skipped += 1
            continue
        fmt = fmt or parsed.fmt
        lines.append(parsed._replace(lineno=lineno))
        if limit is not None and len(lines) >= limit:
            break
    if not lines:
        raise TraceError(str(p), "no valid request lines; expected one JSON object per line")

    lines, reordered = _in_time_order(lines)
    common = dict(name=p.stem, source=str(p), trace_format=fmt.name, reordered_lines=reordered)
    if fmt.ids_key == "input_tokens":
        requests = tuple(
            Request(index=i, arrival_ms=x.arrival_ms, input_ids=x.ids,
                    input_tokens=len(x.ids), output_tokens=len(x.output_ids),
                    output_ids=x.output_ids, session=x.session)
            for i, x in enumerate(lines))
        return Workload(requests=requests, block_size=1, kind="token", skipped_lines=skipped,
                        block_size_rule=BlockSizeRule.TOKEN, **common)

    shapes = [LineShape(f"{p}:{x.lineno}", x.input_length, len(x.ids)) for x in lines]
    rule, how = choose_rule(shapes, str(p), block_size, tokens_per_id, fmt.block,
                            (x.ids for x in lines))
    sessions = _bailian_sessions(lines) if fmt.name == "qwen-bailian" else {}
    requests, tails, truncated = [], 0, 0
    for x in lines:
        try:
            got = rule.line(x.ids, x.input_length)
        except TraceError as e:
            if not skip_bad_lines:
                raise TraceError(f"{p}:{x.lineno}", e.message) from None
            skipped += 1
            continue
        tails += got.tail
        truncated += got.truncated
        requests.append(Request(index=len(requests), arrival_ms=x.arrival_ms,
                                input_ids=got.ids, input_tokens=x.input_length,
                                output_tokens=x.output_length, block_size=rule.block,
                                session=sessions.get(x.session, x.session)))
    if not requests:
        raise TraceError(str(p), "no valid request lines; expected one JSON object per line")
    return Workload(requests=tuple(requests), block_size=rule.block, kind="block",
                    skipped_lines=skipped, block_size_rule=how, unhashed_tail_lines=tails,
                    truncated_lines=truncated, **common)


# ---------------------------------------------------------------- private helpers

class _Format(NamedTuple):
    """One line format: how it is recognised, its fields and its units."""

    name: str
    marker: frozenset[str]            # present in every line of this format (detection)
    fields: dict[str, Any]            # required field → accepted type(s)
    ts_key: str
    ms_per_unit: float                # timestamp unit in milliseconds
    ids_key: str
    block: int | None = None          # tokens per id fixed by the format


_INT64 = 1 << 63
_BLOCK_FIELDS = {"timestamp": (int, float), "input_length": int, "output_length": int,
                 "hash_ids": list}
# Detection order: the most specific marker first.
_FORMATS = (
    # alibaba-edu/qwen-bailian-usagetraces-anon README: timestamps in seconds, "Salted
    # SipHash blocks (16 tokens per block)"; the same fields in ai-dynamo/aiperf
    # docs/tutorials/bailian-trace.md. Whether a line hashes its partial last block is not
    # stated, so both counts are accepted (floor or ceil of input_length / 16).
    _Format("qwen-bailian", frozenset({"hash_ids", "chat_id", "parent_chat_id", "turn"}),
            {**_BLOCK_FIELDS, "chat_id": int, "parent_chat_id": int, "turn": int},
            "timestamp", 1000.0, "hash_ids", block=16),
    _Format("mooncake", frozenset({"hash_ids"}), _BLOCK_FIELDS, "timestamp", 1.0, "hash_ids"),
    _Format("token", frozenset({"input_tokens"}),
            {"session_id": (int, str), "ts": (int, float), "input_tokens": list,
             "output_tokens": list}, "ts", 1000.0, "input_tokens"),
)


class _Line(NamedTuple):
    fmt: _Format
    arrival_ms: float
    ids: tuple[int, ...]              # hash ids, or input token ids
    input_length: int
    output_length: int
    output_ids: tuple[int, ...] | None
    session: Any                      # token: session_id; qwen-bailian: chat_id
    parent: int | None = None         # qwen-bailian: parent_chat_id
    lineno: int = 0


def _parse_line(line: str, fmt: _Format | None) -> _Line:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise TraceError("", f"invalid JSON: {e.msg} at column {e.colno}") from None
    if not isinstance(obj, dict):
        raise TraceError("", f"expected a JSON object, got {type(obj).__name__}")
    line_fmt = next((f for f in _FORMATS if f.marker <= obj.keys()), None)
    if line_fmt is None:
        raise TraceError("", "neither a block-hash line (timestamp, input_length, "
                         "output_length, hash_ids; qwen-bailian adds chat_id, "
                         "parent_chat_id, turn) nor a token line (session_id, turn_id, ts, "
                         "input_tokens, output_tokens)")
    if fmt is not None and line_fmt is not fmt:
        raise TraceError("", f"a {line_fmt.name} line in a {fmt.name} trace; expected the "
                         f"fields {', '.join(fmt.fields)}")
    for key, typ in line_fmt.fields.items():
        if key not in obj:
            raise TraceError("", f"{key}: missing")
        value = obj[key]
        if isinstance(value, bool) or not isinstance(value, typ):
            raise TraceError("", f"{key}: expected {_type_name(typ)}, got {value!r:.40}")
    arrival_ms = _arrival_ms(obj[line_fmt.ts_key], line_fmt)
    if line_fmt.ids_key == "input_tokens":
        ids, out = _int_ids(obj, "input_tokens"), _int_ids(obj, "output_tokens")
        if not ids:
            raise TraceError("", "input_tokens: empty")
        return _Line(line_fmt, arrival_ms, ids, len(ids), len(out), out, str(obj["session_id"]))
    if obj["input_length"] <= 0 or obj["output_length"] < 0:
        raise TraceError("", "input_length must be positive and output_length not negative")
    if "type" in obj and not isinstance(obj["type"], str):
        raise TraceError("", f"type: expected a string, got {obj['type']!r:.40}")
    ids = _int_ids(obj, "hash_ids")
    if ids and (min(ids) < -_INT64 or max(ids) >= 2 * _INT64):
        raise TraceError("", "hash_ids: an id outside 64 bits; expected signed or unsigned "
                         "64-bit integers")
    if ids and max(ids) >= _INT64:          # unsigned 64-bit hashes: their int64 view
        ids = tuple(i - 2 * _INT64 if i >= _INT64 else i for i in ids)
    chat = obj.get("chat_id")
    return _Line(line_fmt, arrival_ms, ids, obj["input_length"],
                 obj["output_length"], None, chat, obj.get("parent_chat_id"))


def _arrival_ms(ts: int | float, fmt: _Format) -> float:
    """The timestamp in ms; NaN, ±inf (JSON's NaN and Infinity, or 1e999) are refused."""
    try:
        ms = float(ts) * fmt.ms_per_unit
    except OverflowError:
        ms = math.inf
    if not math.isfinite(ms):
        raise TraceError("", f"{fmt.ts_key}: {ts!r:.40}; expected a finite time in "
                         f"{'ms' if fmt.ms_per_unit == 1 else 'seconds'}")
    return ms


def _int_ids(obj: dict, key: str) -> tuple[int, ...]:
    ids = obj[key]
    if any(isinstance(x, bool) or not isinstance(x, int) for x in ids):
        raise TraceError("", f"{key}: expected a list of integer ids")
    return tuple(ids)


def _in_time_order(lines: list[_Line]) -> tuple[list[_Line], int]:
    """Lines sorted stably by arrival, and how many came before a later time in the file."""
    reordered, latest = 0, -math.inf
    for x in lines:
        if x.arrival_ms < latest:
            reordered += 1
        latest = max(latest, x.arrival_ms)
    if not reordered:
        return lines, 0
    return sorted(lines, key=lambda x: x.arrival_ms), reordered


def _bailian_sessions(lines: list[_Line]) -> dict[int, str]:
    """chat_id → its session: the root reached through parent_chat_id (−1 ends a chain; a
    parent outside the trace is the root, so its children still share a session)."""
    parent = {x.session: x.parent for x in lines}
    root: dict[int, str] = {}
    for chat in parent:
        chain, seen, c = [], set(), chat
        while c not in root and parent.get(c, -1) != -1 and c not in seen:
            chain.append(c)
            seen.add(c)
            c = parent[c]
        r = root.get(c, str(c))
        for x in chain + [c]:
            root.setdefault(x, r)
    return root


def _type_name(typ) -> str:
    names = {int: "an integer", float: "a number", list: "a list", str: "a string"}
    if isinstance(typ, tuple):
        return " or ".join(names[t] for t in typ)
    return names[typ]

"""Workloads: the requests a cache sees, from a trace file or a generator.

Two trace formats, one JSON object per line:

- Block-hash traces (Mooncake, ``../shared/traces/``)::

      {"timestamp": 0, "input_length": 6758, "output_length": 500, "hash_ids": [0, 1, …]}

  One chained id per ``block_size``-token block of the prompt (the last block may be
  partial). Output tokens are unknown ids: they can never be hit by a later input.
- Token traces (Marconi's schema)::

      {"session_id": 3, "turn_id": 1, "ts": 12.5, "input_tokens": [...], "output_tokens": [...]}

Ids are opaque: the cache matches prefixes of `input_ids` by path in a trie. A prefix of
`k` ids covers `request.prefix_tokens(k)` tokens.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from marconi.errors import TraceError


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
    block_size_inferred: bool = False

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
        return {"name": self.name, "kind": self.kind, "source": self.source,
                "requests": len(self.requests), "block_size": self.block_size,
                "block_size_inferred": self.block_size_inferred,
                "input_tokens": self.total_input_tokens, "skipped_lines": self.skipped_lines}


def load_trace(path: str | Path, block_size: int | None = None,
               skip_bad_lines: bool = False, limit: int | None = None) -> Workload:
    """Load a block-hash or token trace (format detected from the first valid line).

    Bad lines raise `TraceError` naming ``file:line``; with `skip_bad_lines` they are
    counted in `Workload.skipped_lines` instead. `block_size` is inferred from
    ``input_length`` and ``len(hash_ids)`` when not given.
    """
    p = Path(path)
    try:
        lines = p.read_text().splitlines()
    except FileNotFoundError:
        raise TraceError(str(p), "no such file; expected a JSONL trace") from None
    except (OSError, UnicodeDecodeError) as e:
        raise TraceError(str(p), f"cannot read: {e}") from e

    records: list[tuple[int, dict[str, Any]]] = []
    fmt: str | None = None
    skipped = 0
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = _parse_line(line, fmt)
        except TraceError as e:
            if not skip_bad_lines:
                raise TraceError(f"{p}:{lineno}", e.message) from None
            skipped += 1
            continue
        fmt = fmt or obj["_format"]
        records.append((lineno, obj))
        if limit is not None and len(records) >= limit:
            break
    if not records:
        raise TraceError(str(p), "no valid request lines; expected one JSON object per line")

    if fmt == "block":
        inferred = block_size is None
        bs = block_size if block_size is not None else infer_block_size(
            [(o["input_length"], len(o["hash_ids"])) for _, o in records], str(p))
        requests = []
        for i, (lineno, o) in enumerate(records):
            n = len(o["hash_ids"])
            if n != math.ceil(o["input_length"] / bs):
                err = TraceError(f"{p}:{lineno}", f"hash_ids has {n} ids but input_length "
                                 f"{o['input_length']} needs {math.ceil(o['input_length'] / bs)} "
                                 f"blocks of {bs} tokens")
                if not skip_bad_lines:
                    raise err
                skipped += 1
                continue
            requests.append(Request(index=len(requests), arrival_ms=float(o["timestamp"]),
                                    input_ids=tuple(o["hash_ids"]),
                                    input_tokens=o["input_length"],
                                    output_tokens=o["output_length"], block_size=bs))
        return Workload(name=p.stem, requests=tuple(requests), block_size=bs, kind="block",
                        source=str(p), skipped_lines=skipped, block_size_inferred=inferred)

    requests = []
    ordered = sorted(records, key=lambda r: (r[1]["ts"], r[0]))
    for lineno, o in ordered:
        requests.append(Request(index=len(requests), arrival_ms=float(o["ts"]) * 1000.0,
                                input_ids=tuple(o["input_tokens"]),
                                input_tokens=len(o["input_tokens"]),
                                output_tokens=len(o["output_tokens"]),
                                output_ids=tuple(o["output_tokens"]),
                                session=str(o["session_id"])))
    return Workload(name=p.stem, requests=tuple(requests), block_size=1, kind="token",
                    source=str(p), skipped_lines=skipped)


def infer_block_size(pairs: list[tuple[int, int]], where: str) -> int:
    """Block size consistent with every (input_length, n_ids): (n-1)·bs < length ≤ n·bs.

    Prefers a power of two inside the feasible range, else its lower end.
    """
    lo, hi = 1, 1 << 30
    for length, n in pairs:
        if n == 0:
            continue
        lo = max(lo, math.ceil(length / n))
        if n > 1:
            hi = min(hi, math.ceil(length / (n - 1)) - 1)
    if lo > hi:
        raise TraceError(where, "cannot infer a block size consistent with every line's "
                         "input_length and hash_ids; pass --block-size")
    power = 1 << max(0, (lo - 1).bit_length())
    return power if power <= hi else lo


# ---------------------------------------------------------------- private helpers

_BLOCK_FIELDS = {"timestamp": (int, float), "input_length": int, "output_length": int,
                 "hash_ids": list}
_TOKEN_FIELDS = {"session_id": (int, str), "ts": (int, float), "input_tokens": list,
                 "output_tokens": list}


def _parse_line(line: str, fmt: str | None) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise TraceError("", f"invalid JSON: {e.msg} at column {e.colno}") from None
    if not isinstance(obj, dict):
        raise TraceError("", f"expected a JSON object, got {type(obj).__name__}")
    line_fmt = "block" if "hash_ids" in obj else "token" if "input_tokens" in obj else None
    if line_fmt is None:
        raise TraceError("", "neither a block-hash line (hash_ids, input_length, "
                         "output_length, timestamp) nor a token line (session_id, turn_id, "
                         "ts, input_tokens, output_tokens)")
    if fmt is not None and line_fmt != fmt:
        raise TraceError("", f"a {line_fmt} line in a {fmt} trace")
    fields = _BLOCK_FIELDS if line_fmt == "block" else _TOKEN_FIELDS
    for key, typ in fields.items():
        if key not in obj:
            raise TraceError("", f"{key}: missing")
        value = obj[key]
        if isinstance(value, bool) or not isinstance(value, typ):
            raise TraceError("", f"{key}: expected {_type_name(typ)}, got {value!r:.40}")
    ids_key = "hash_ids" if line_fmt == "block" else "input_tokens"
    for key in (ids_key, "output_tokens") if line_fmt == "token" else (ids_key,):
        if any(isinstance(x, bool) or not isinstance(x, int) for x in obj[key]):
            raise TraceError("", f"{key}: expected a list of integer ids")
    if line_fmt == "block":
        if obj["input_length"] <= 0 or obj["output_length"] < 0:
            raise TraceError("", "input_length must be positive and output_length not negative")
        if not obj["hash_ids"]:
            raise TraceError("", "hash_ids: empty; expected one id per block")
    elif not obj["input_tokens"]:
        raise TraceError("", "input_tokens: empty")
    obj["_format"] = line_fmt
    return obj


def _type_name(typ) -> str:
    names = {int: "an integer", float: "a number", list: "a list", str: "a string"}
    if isinstance(typ, tuple):
        return " or ".join(names[t] for t in typ)
    return names[typ]

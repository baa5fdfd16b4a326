"""Id rules: how a trace line's hash ids become the ids the cache compares.

The cache works on one grid per workload (`Seq`, `PrefixCache`): a request of L input tokens
has ``ceil(L / block)`` ids, each covering ``block`` tokens, the last possibly fewer, and two
requests share a prefix exactly as far as their id lists agree. A trace's ids do not always
say that, so one rule per trace, chosen once (`choose_rule`), turns every line into such a
list (`LineIds`):

- **Blocks of a known size** (`BlockSizeRule.GIVEN`, `INFERRED`, `FORMAT`): each id is a
  ``block``-token block. A line carries either ``ceil(L / block)`` ids (Mooncake: the last,
  partial block is hashed too) or ``floor(L / block)`` (engines hash only full blocks:
  vLLM's prefix-cache block hashes cover full blocks, and converters built on them
  follow). Any other count is a bad line. `infer_block_size` finds a size every line fits.
- **Fixed tokens per id** (`TOKENS_PER_ID`, ``--tokens-per-id N``): each id is N tokens,
  whatever the count. ``input_length`` is what the request computes: ids past it are dropped
  (the line is *truncated*), tokens past the ids are an unhashed tail.
- **Spread** (`SPREAD`, ``--tokens-per-id spread``): ids stand for chunks of unknown and
  varying size (content hashes of messages, documents, …). See `Spread`.

An **unhashed tail** (floor lines, short lines) is computed and cached like any input but can
never be hit: its grid ids are unique to its request, drawn from non-negative integers no
trace id uses (the replay's fresh output ids are negative), so nothing else ever matches them.
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
from typing import Iterator, Sequence

from marconi.errors import TraceError

SPREAD = "spread"          # the `tokens_per_id` value that selects the spread rule
SPREAD_GRID = 16           # default grid (tokens per cache id) of a spread trace


class BlockSizeRule(enum.Enum):
    """Where a workload's tokens per id come from (reported as `block_size_rule`)."""

    GIVEN = "given"                    # block_size passed; every line floor or ceil
    INFERRED = "inferred"              # the size every line's floor or ceil count fits
    FORMAT = "format"                  # fixed by the trace format (qwen-bailian: 16)
    TOKENS_PER_ID = "tokens-per-id"    # each id N tokens whatever the count
    SPREAD = "spread"                  # chunks of unknown size, re-cut on a grid
    TOKEN = "token"                    # one id per token (token traces, generators)


@dataclasses.dataclass(frozen=True)
class LineIds:
    """One line's ids on the workload's grid: ``ceil(input_length / block)`` of them."""

    ids: tuple[int, ...]
    tail: bool = False         # some input tokens were covered by no trace id
    truncated: bool = False    # some trace ids lay wholly past input_length (dropped)


@dataclasses.dataclass(frozen=True)
class LineShape:
    """What a rule needs to know of a line before reading it (`choose_rule`)."""

    where: str                 # "file:line", for errors
    input_length: int
    n_ids: int


# ---------------------------------------------------------------- public API

def choose_rule(lines: Sequence[LineShape], where: str, block_size: int | None,
                tokens_per_id: int | str | None, format_block: int | None,
                all_ids) -> tuple[FixedBlocks | Spread, BlockSizeRule]:
    """The rule for one trace. Precedence: `tokens_per_id` (``"spread"`` or N), then a
    given `block_size`, then the format's own block, then inference over `lines`.

    `all_ids` is an iterable of every line's trace ids (read only if a tail needs ids).
    With ``"spread"``, `block_size` is the grid (default `SPREAD_GRID`).
    """
    if block_size is not None and (not isinstance(block_size, int) or block_size < 1):
        raise ValueError(f"block_size: {block_size!r}; expected an integer ≥ 1")
    if tokens_per_id == SPREAD:
        return Spread(block_size or SPREAD_GRID), BlockSizeRule.SPREAD
    if tokens_per_id is not None:
        if not isinstance(tokens_per_id, int) or tokens_per_id < 1:
            raise ValueError(f"tokens_per_id: {tokens_per_id!r}; expected an integer ≥ 1 "
                             f"or {SPREAD!r}")
        if block_size is not None and block_size != tokens_per_id:
            raise ValueError(f"tokens_per_id {tokens_per_id} and block_size {block_size}: "
                             "N-token ids are N-token blocks; give one of them")
        return FixedBlocks(tokens_per_id, False, all_ids), BlockSizeRule.TOKENS_PER_ID
    if block_size is not None:
        return FixedBlocks(block_size, True, all_ids), BlockSizeRule.GIVEN
    if format_block is not None:
        return FixedBlocks(format_block, True, all_ids), BlockSizeRule.FORMAT
    return FixedBlocks(infer_block_size(lines, where), True, all_ids), BlockSizeRule.INFERRED


def infer_block_size(lines: Sequence[LineShape | tuple[int, int]], where: str = "") -> int:
    """A block size that gives every line its id count, as ceil or as floor of L / size.

    Line (L, n) fits size b by ceil when (n−1)·b < L ≤ n·b, by floor when n·b ≤ L < (n+1)·b;
    together one interval of b. Preference, first that exists: a power of two that fits every
    line by ceil (Mooncake's documented rule), one that fits every line by floor (vLLM's),
    one that fits a mix; then the smallest size of each of those three ranges.
    """
    shapes = [s if isinstance(s, LineShape) else LineShape(where, *s) for s in lines]
    ranges = {"ceil": [1, _INF], "floor": [1, _INF], "mix": [1, _INF]}
    for s in shapes:
        c = _ceil_range(s.input_length, s.n_ids)
        f = _floor_range(s.input_length, s.n_ids)
        m = _union(c, f)
        for key, r in (("ceil", c), ("floor", f), ("mix", m)):
            ranges[key] = _meet(ranges[key], r)
        if ranges["mix"] is None:
            fits = "no block size" if m is None else f"blocks of {_span(m)} tokens"
            raise TraceError(s.where or where, (
                f"hash_ids: {s.n_ids} ids for input_length {s.input_length} fit {fits}"
                + ("" if m is None else ", but the lines before it need another size")
                + "; expected floor or ceil(input_length / block) ids with one block for "
                "the whole trace. Pass --block-size N if ids are blocks of a known size, "
                "--tokens-per-id N if each id is N tokens whatever the count, or "
                "--tokens-per-id spread if ids stand for chunks of unknown or varying size"))
    for key in ("ceil", "floor", "mix"):
        r = ranges[key]
        if r is not None:
            power = 1 << max(0, (r[0] - 1).bit_length())
            if power <= r[1]:
                return power
    return next(r[0] for r in ranges.values() if r is not None)


class FixedBlocks:
    """Ids of `block` tokens each; `strict`: the count must be floor or ceil of L / block."""

    def __init__(self, block: int, strict: bool, all_ids):
        self.block = block
        self.strict = strict
        self._all_ids = all_ids
        self._tails: Iterator[int] | None = None

    def line(self, hash_ids: Sequence[int], input_length: int) -> LineIds:
        b, n = self.block, len(hash_ids)
        need = -(-input_length // b)
        if self.strict and n not in (need, input_length // b):
            raise TraceError("", f"hash_ids: {n} ids, but input_length {input_length} is "
                             f"{input_length // b} full blocks of {b} tokens ({need} with "
                             "the partial last one); expected one of those counts")
        if n >= need:
            return LineIds(tuple(hash_ids[:need]), truncated=n > need)
        if self._tails is None:
            self._tails = unused_ids(self._all_ids)
        tails = self._tails
        return LineIds(tuple(hash_ids) + tuple(next(tails) for _ in range(need - n)),
                       tail=True)


class Spread:
    """Ids of chunks of unknown, varying size, re-cut on a `grid`-token block grid.

    A chunk's size belongs to its id, not to the line: one cached path must cover one token
    count for every request that shares it (its KV bytes, and the tokens a hit on it saves).
    So a size is fixed once, by the first line in arrival order that holds the id: that line
    spreads the tokens its already-sized ids leave over evenly across its unsized ones
    (integer shares differing by at most one, at least 1 token each). Later lines reuse the
    sizes: a chunk that runs past a line's input_length is cut there, chunks that start past
    it are dropped (the line is truncated), and tokens past the last chunk are an unhashed
    tail.

    Hits: grid block j of a line (its tokens up to ``e = min(j·grid, L)``) gets the id of
    (the chunk path up to the chunk holding token e−1, e). Two requests share the block
    exactly when they share every chunk up to that one, so a hit covers the shared chunks'
    tokens rounded down to the grid (a block that straddles the first differing chunk is not
    hit), and the same shared chunks save the same tokens in every request. Because a path
    fixes where its chunk starts, the full grid blocks ending inside a chunk get one range of
    ids, allocated when the path is first seen.
    """

    def __init__(self, grid: int):
        self.block = grid
        self.sizes: dict[int, int] = {}       # trace id → tokens
        # (parent path, trace id) → (path, first cache id of its full grid blocks, j0, j1):
        # grid blocks j0..j1 end inside the chunk
        self._paths: dict[tuple[int, int], tuple[int, int, int, int]] = {}
        self._partial: dict[tuple[int, int], int] = {}   # (path, L) → id of a last block
        self._next = 0                                     # next cache id (tails included)

    def line(self, hash_ids: Sequence[int], input_length: int) -> LineIds:
        sizes, g, L = self.sizes, self.block, input_length
        self._size_new(hash_ids, L)
        ids: list[int] = []
        path = start = 0
        truncated = False
        for h in hash_ids:
            if start >= L:
                truncated = True
                break
            entry = self._paths.get((path, h))
            end = start + sizes[h]
            if entry is None:
                j0, j1 = start // g + 1, end // g
                entry = (len(self._paths) + 1, self._next, j0, j1)
                self._next += max(0, j1 - j0 + 1)
                self._paths[(path, h)] = entry
            path, base, j0, j1 = entry
            top = min(j1, L // g)
            if top >= j0:
                ids.extend(range(base, base + top - j0 + 1))
            if L % g and start < L <= end:            # the partial last block ends here
                key = (path, L)
                if key not in self._partial:
                    self._partial[key] = self._take(1).start
                ids.append(self._partial[key])
            start = end
        n_blocks = -(-L // g)
        tail = len(ids) < n_blocks
        ids.extend(self._take(n_blocks - len(ids)))
        return LineIds(tuple(ids), tail=tail, truncated=truncated)

    def _size_new(self, hash_ids: Sequence[int], L: int) -> None:
        sizes = self.sizes
        unsized = [h for h in hash_ids if h not in sizes]
        if not unsized:
            return
        left = L - sum(sizes[h] for h in hash_ids if h in sizes)
        q, r = divmod(max(left, 0), len(unsized))
        for k, h in enumerate(unsized):
            sizes.setdefault(h, max(1, q + (k < r)))

    def _take(self, n: int) -> range:
        ids = range(self._next, self._next + n)
        self._next += n
        return ids


def unused_ids(all_ids) -> Iterator[int]:
    """Non-negative integers in increasing order that no id in `all_ids` (an iterable of
    id lists) is: unique tail ids that no trace id and no fresh output id can equal."""
    used = {i for ids in all_ids for i in ids}
    for k in itertools.count():
        if k not in used:
            yield k


# ---------------------------------------------------------------- private helpers

_INF = 1 << 62


def _ceil_range(L: int, n: int) -> list[int] | None:
    """Block sizes b with ceil(L / b) == n."""
    if n == 0:
        return None
    r = [-(-L // n), (-(-L // (n - 1)) - 1) if n > 1 else _INF]
    return r if r[0] <= r[1] else None


def _floor_range(L: int, n: int) -> list[int] | None:
    """Block sizes b with floor(L / b) == n."""
    r = [L // (n + 1) + 1, L // n if n else _INF]
    return r if r[0] <= r[1] else None


def _union(a, b):
    """The two ranges of one line touch (ceil's low end ≤ floor's high end + 1)."""
    if a is None or b is None:
        return a or b
    return [min(a[0], b[0]), max(a[1], b[1])]


def _meet(a, b):
    if a is None or b is None:
        return None
    r = [max(a[0], b[0]), min(a[1], b[1])]
    return r if r[0] <= r[1] else None


def _span(r) -> str:
    return f"{r[0]} or more" if r[1] >= _INF else str(r[0]) if r[0] == r[1] else \
        f"{r[0]}..{r[1]}"

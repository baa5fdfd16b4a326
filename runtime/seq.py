"""Seq: one request's ids (input, then output) with their token positions.

The cache works in id positions ("depths"); hits, KV bytes and FLOPs are in tokens. A `Seq`
maps one to the other for one request:

- token workloads (``block == 1``): one id per token, depth == tokens;
- block-hash traces (``block == B``): the input is ``ceil(L_in / B)`` chained ids, the last
  one possibly partial. The output's ids are unknown, so they are *fresh* ids (negative
  numbers from a counter) that no later input can ever match. Their boundaries continue the
  block grid: the first output id completes the partial input block, the next ones are full
  blocks, the last one is partial. With ``q = L_in // B`` and ``L = L_in + L_out``, output id
  ``j`` (1-based) ends at token ``min((q + j)·B, L)``.

Example (B = 512, L_in = 1000, L_out = 100): input ids end at tokens 512, 1000; output ids
end at 1024, 1100.
"""

from __future__ import annotations

from typing import Iterator

from marconi.runtime.workload import Request


class Seq:
    __slots__ = ("ids", "n_input", "input_tokens", "total_tokens", "block", "_q")

    def __init__(self, ids: tuple[int, ...], n_input: int, input_tokens: int,
                 total_tokens: int, block: int):
        self.ids = ids                      # input ids, then output ids
        self.n_input = n_input              # how many of `ids` are the input
        self.input_tokens = input_tokens
        self.total_tokens = total_tokens    # input + output tokens
        self.block = block                  # tokens per id (1 for token workloads)
        self._q = input_tokens // block     # full blocks in the input

    def __len__(self) -> int:
        return len(self.ids)

    def tokens(self, depth: int) -> int:
        """Tokens covered by the first `depth` ids."""
        b = self.block
        if b == 1:
            return depth
        if depth <= self.n_input:
            return min(depth * b, self.input_tokens)
        return min((self._q + depth - self.n_input) * b, self.total_tokens)

    def floor_grid(self, depth: int, chunk_tokens: int | None) -> int:
        """The deepest position ≤ `depth` whose token count is a multiple of `chunk_tokens`.

        `None` means no grid (every position allowed). For block traces `chunk_tokens` must
        be a multiple of the block size (checked by `CacheConfig`).
        """
        if not chunk_tokens:
            return depth
        t = self.tokens(depth)
        t -= t % chunk_tokens
        b = self.block
        if b == 1:
            return t
        if t <= self._q * b:                # inside the full blocks of the input
            return t // b
        return self.n_input + t // b - self._q   # inside the output's block grid

    def short_ids(self) -> Iterator[tuple[int, int]]:
        """(id, tokens) for every id of fewer than `block` tokens (partial blocks)."""
        b = self.block
        if b == 1:
            return
        start = max(self.n_input - 1, 0)
        prev = self.tokens(start)
        for d in range(start + 1, len(self.ids) + 1):
            t = self.tokens(d)
            if t - prev != b:
                yield self.ids[d - 1], t - prev
            prev = t


def make_seq(request: Request, fresh: Iterator[int]) -> Seq:
    """The Seq of `request`: its input ids then its output ids (fresh if unknown)."""
    b = request.block_size
    total = request.input_tokens + request.output_tokens
    if request.output_ids is not None:
        out = request.output_ids
    elif b == 1:
        out = tuple(next(fresh) for _ in range(request.output_tokens))
    else:
        n_out = -(-total // b) - request.input_tokens // b if request.output_tokens else 0
        out = tuple(next(fresh) for _ in range(n_out))
    ids = request.input_ids + out if out else request.input_ids
    return Seq(ids, len(request.input_ids), request.input_tokens, total, b)


def common_prefix(key: tuple, ids: tuple, d: int, n: int) -> int:
    """Length of the common prefix of an edge `key` and ``ids[d:n]``, given that their first
    ids agree (so ≥ 1): one slice compare, else a binary search on slice compares. (The
    radix cache's and the seen-prefix index's edge compare.)"""
    hi = min(len(key), n - d)
    lo = 1
    if key[:hi] == ids[d:d + hi]:
        return hi
    while hi - lo > 1:                         # invariant: prefix lo agrees, prefix hi not
        mid = (lo + hi) // 2
        if key[lo:mid] == ids[d + lo:d + mid]:
            lo = mid
        else:
            hi = mid
    return lo

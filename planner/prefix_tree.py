"""The prefix tree of a whole workload, built offline: a compressed trie over id sequences.

Every request contributes its *sequence*: the input ids followed by the output ids when the
trace knows them (token traces). Block traces have unknown output ids, so their sequences are
the inputs alone: an output can never be hit by a later input (design.md, "Workloads").

Nodes of the compressed trie are the *key positions* of the workload:

- branch points (two sequences diverge there),
- input ends and sequence ends (output ends),
- the root (depth 0).

Between two consecutive keys every sequence that enters the edge also leaves it at the far
end, so the set of requests passing any interior position equals that of the edge's lower
key (`docs/planner.md`, "Why keys suffice for the bound").

The tree is stored in flat arrays (node index = key index, 0 = root) and built iteratively;
edge labels are slices of the stored sequences (numpy arrays) so that comparing an edge with
a new sequence is one vectorised operation, not a Python loop over tokens.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from marconi.runtime.workload import Workload

ROOT = 0


@dataclasses.dataclass(frozen=True)
class PrefixTree:
    """Keys of a workload's prefix tree and which requests pass through each.

    Arrays are indexed by key (0 = root, depth 0):

    - ``parent[k]``: the key above k (``-1`` for the root),
    - ``depth[k]``: ids from the root to k,
    - ``branch[k]``, ``input_end[k]``, ``output_end[k]``: why k is a key,
    - ``touch_ptr``/``touch_req``: the requests whose sequence passes k, in arrival order,
      are ``touch_req[touch_ptr[k]:touch_ptr[k+1]]`` (the root is passed by every request),
    - ``input_path(r)``: the keys on request r's input path below the root, top-down.
    """

    parent: np.ndarray          # [K] int64
    depth: np.ndarray           # [K] int64, ids
    branch: np.ndarray          # [K] bool
    input_end: np.ndarray       # [K] bool
    output_end: np.ndarray      # [K] bool
    touch_ptr: np.ndarray       # [K+1] int64
    touch_req: np.ndarray       # [Σ touches] int64, sorted within each key
    path_ptr: np.ndarray        # [R+1] int64
    path_key: np.ndarray        # [Σ input-path keys] int64, top-down per request

    @property
    def n_keys(self) -> int:
        return len(self.parent)

    @property
    def n_requests(self) -> int:
        return len(self.path_ptr) - 1

    def touches(self, key: int) -> np.ndarray:
        return self.touch_req[self.touch_ptr[key]:self.touch_ptr[key + 1]]

    def input_path(self, request: int) -> np.ndarray:
        return self.path_key[self.path_ptr[request]:self.path_ptr[request + 1]]

    def children(self) -> list[list[int]]:
        out: list[list[int]] = [[] for _ in range(self.n_keys)]
        for k in range(1, self.n_keys):
            out[int(self.parent[k])].append(k)
        return out


def request_sequence(request) -> np.ndarray:
    """Ids a request leaves in a cache it passes: input, then output when known."""
    ids = request.input_ids if request.output_ids is None else \
        request.input_ids + request.output_ids
    return np.asarray(ids, dtype=np.int64)


def build_prefix_tree(workload: Workload) -> PrefixTree:
    """Compressed trie of all request sequences, with input ends forced to be keys."""
    builder = _Builder()
    seqs = [request_sequence(r) for r in workload.requests]
    for r, (req, seq) in enumerate(zip(workload.requests, seqs)):
        n_in = len(req.input_ids)
        builder.insert(seq, r, stop=n_in, mark="input")
        if len(seq) > n_in:
            builder.insert(seq, r, stop=len(seq), mark="output")
    return builder.finish(seqs, [len(r.input_ids) for r in workload.requests])


# ---------------------------------------------------------------- private helpers

class _Builder:
    """Mutable compressed trie; `finish()` freezes it into a PrefixTree."""

    def __init__(self):
        self.parent = [-1]
        self.depth = [0]
        self.edge_seq = [None]       # the array holding this node's edge label
        self.edge_start = [0]        # offset of the label in that array
        self.children: list[dict[int, int]] = [{}]
        self.input_end = [False]
        self.output_end = [False]

    def _new(self, parent: int, depth: int, seq: np.ndarray, start: int) -> int:
        self.parent.append(parent)
        self.depth.append(depth)
        self.edge_seq.append(seq)
        self.edge_start.append(start)
        self.children.append({})
        self.input_end.append(False)
        self.output_end.append(False)
        return len(self.parent) - 1

    def _split(self, child: int, at: int) -> int:
        """Cut `child`'s edge `at` ids below its parent; return the new middle node."""
        par = self.parent[child]
        seq, start = self.edge_seq[child], self.edge_start[child]
        mid = self._new(par, self.depth[par] + at, seq, start)
        self.children[par][int(seq[start])] = mid
        self.children[mid][int(seq[start + at])] = child
        self.parent[child] = mid
        self.edge_start[child] = start + at
        return mid

    def insert(self, seq: np.ndarray, r: int, stop: int, mark: str) -> None:
        node, pos = ROOT, 0
        while pos < stop:
            child = self.children[node].get(int(seq[pos]))
            if child is None:
                node = self._new(node, stop, seq, pos)
                self.children[self.parent[node]][int(seq[pos])] = node
                pos = stop
                break
            length = self.depth[child] - self.depth[node]
            n = min(length, stop - pos)
            label = self.edge_seq[child][self.edge_start[child]:self.edge_start[child] + n]
            diff = np.flatnonzero(label != seq[pos:pos + n])
            m = int(diff[0]) if len(diff) else n
            if m == length:
                node, pos = child, pos + m
                continue
            node = self._split(child, m)
            pos += m
            if pos < stop:
                leaf = self._new(node, stop, seq, pos)
                self.children[node][int(seq[pos])] = leaf
                node, pos = leaf, stop
        if mark == "input":
            self.input_end[node] = True
        else:
            self.output_end[node] = True

    def _walk(self, seq: np.ndarray, stop: int) -> list[int]:
        """Keys on the path of `seq[:stop]` below the root (the path exists: it was inserted)."""
        node, pos, out = ROOT, 0, []
        while pos < stop:
            node = self.children[node][int(seq[pos])]
            pos = self.depth[node]
            out.append(node)
        return out

    def finish(self, seqs: list[np.ndarray], input_lengths: list[int]) -> PrefixTree:
        n = len(self.parent)
        touch_lists: list[list[int]] = [[] for _ in range(n)]
        path_ptr, path_key = [0], []
        for r, (seq, n_in) in enumerate(zip(seqs, input_lengths)):
            full = self._walk(seq, len(seq))
            touch_lists[ROOT].append(r)
            for k in full:
                touch_lists[k].append(r)
            inp = full[:next(i for i, k in enumerate(full) if self.depth[k] == n_in) + 1] \
                if n_in else []
            path_key.extend(inp)
            path_ptr.append(len(path_key))
        counts = np.fromiter((len(t) for t in touch_lists), dtype=np.int64, count=n)
        touch_ptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(counts, out=touch_ptr[1:])
        touch_req = np.fromiter((r for t in touch_lists for r in t), dtype=np.int64,
                                count=int(touch_ptr[-1]))
        n_children = np.zeros(n, dtype=np.int64)
        parent = np.asarray(self.parent, dtype=np.int64)
        np.add.at(n_children, parent[1:], 1)
        return PrefixTree(
            parent=parent, depth=np.asarray(self.depth, dtype=np.int64),
            branch=n_children >= 2,
            input_end=np.asarray(self.input_end, dtype=bool),
            output_end=np.asarray(self.output_end, dtype=bool),
            touch_ptr=touch_ptr, touch_req=touch_req,
            path_ptr=np.asarray(path_ptr, dtype=np.int64),
            path_key=np.asarray(path_key, dtype=np.int64))

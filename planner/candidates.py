"""Checkpoint candidates and the offline problem: what each request could resume from.

A *candidate* is a key of the workload's prefix tree (`prefix_tree.py`): a branch point, an
input end or an output end. An *option* (r, k) says "request r resumes from a checkpoint at
key k": k lies on r's input path and some earlier request's sequence passed k (only a
request that passed k can have emitted a checkpoint there). The options of one request are
its input-path keys from the root down to the deepest one seen before, top-down, so the
option above option j of a request is option j-1 of the same request.

For each option the problem stores

- ``prev``: the last earlier request passing k. A checkpoint at k used by r must have been
  held in every slot ``prev+1 … r`` (it can only be emitted while a request passes k), and so
  must the KV of the whole path above k;
- ``saved_flops``: ``cost.saved_flops(h, L_r - h)`` with ``h`` the tokens covered by k for r
  (common brief: the FLOP-savings definition), or 0 for a warm-up request: with a warm-up
  fraction (`CacheConfig.warmup`), the first requests still pass keys and emit what later
  requests resume from, but their own hits are not counted, and neither is their prefill in
  ``total_prefill_flops``.

Slots: slot t is the arrival of request t; content emitted by request t is usable from
slot t+1 on. Memory must fit at every slot.

Only keys are candidates, not every position. For the *bound* that is safe (proof in
docs/planner.md): an interior position p of an edge (a, b] is passed by exactly the
requests passing b, its KV grows linearly in its depth and its saving is convex in its
depth whenever `check_convex_savings` holds, so a hit at p is dominated, in the LP, by the
mix of hits at a and b with the same depth on average.

A state-free model (no recurrent layers) has ``state_bytes`` 0: an option then costs only the
KV of its path. Keys and, through the argument above, every position between them cover all
that an earlier sequence passed (the deepest such position, where r's input leaves them all,
is a branch point, an input end or an output end: a key), which is exactly what a
state-free model can resume from: any cached KV prefix. Nothing else changes for it.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from marconi.errors import PlanError
from marconi.passes.cost_model import CostModel
from marconi.planner.prefix_tree import ROOT, PrefixTree, build_prefix_tree
from marconi.runtime.capacity import Capacity
from marconi.runtime.config import warmup_requests
from marconi.runtime.workload import Workload

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class OfflineProblem:
    """One offline instance: workload × cost model × capacity, as flat arrays.

    Keys (indexed like ``tree``): ``seg_kv_bytes[k]`` is a lower bound on the KV bytes of
    the tokens between k's parent key and k (exact for consistent traces).
    Options (grouped by request: ``opt_ptr[r]:opt_ptr[r+1]``, top-down): ``opt_key``,
    ``opt_prev`` (slot of the previous request passing the key), ``opt_tokens`` (tokens a
    hit covers), ``opt_saved_flops``.
    """

    name: str
    tree: PrefixTree
    capacity_bytes: int
    state_bytes: int
    seg_kv_bytes: np.ndarray        # [K] float64
    key_tokens: np.ndarray          # [K] int64, fewest tokens any request gives the key
    opt_ptr: np.ndarray             # [R+1] int64
    opt_req: np.ndarray             # [O] int64
    opt_key: np.ndarray             # [O] int64
    opt_prev: np.ndarray            # [O] int64
    opt_tokens: np.ndarray          # [O] int64
    opt_saved_flops: np.ndarray     # [O] float64
    input_tokens: np.ndarray        # [R] int64
    total_prefill_flops: float      # Σ prefill FLOPs of the counted requests
    warmup_requests: int = 0        # the first requests, whose hits are not counted

    @property
    def n_requests(self) -> int:
        return len(self.opt_ptr) - 1

    @property
    def n_options(self) -> int:
        return len(self.opt_key)

    def options(self, r: int) -> range:
        return range(int(self.opt_ptr[r]), int(self.opt_ptr[r + 1]))

    def opt_depth(self) -> np.ndarray:
        """[O] position of each option within its request's path (0 = top)."""
        return np.arange(self.n_options) - np.repeat(self.opt_ptr[:-1], np.diff(self.opt_ptr))

    def savings_fraction(self, saved_flops: float) -> float:
        return saved_flops / self.total_prefill_flops if self.total_prefill_flops else 0.0


def build_problem(workload: Workload, cost: CostModel, capacity: Capacity,
                  tree: PrefixTree | None = None, warmup: float = 0.0) -> OfflineProblem:
    """Candidates and options of `workload` for `cost` at `capacity` (one shared pool); the first
    `warmup` fraction of the requests only warm the cache up (their hits count 0)."""
    if not workload.requests:
        raise PlanError(workload.name, "requests: empty workload; expected at least one request")
    tree = tree if tree is not None else build_prefix_tree(workload)
    reqs = workload.requests
    R = len(reqs)
    input_tokens = np.fromiter((r.input_tokens for r in reqs), dtype=np.int64, count=R)
    block = np.fromiter((r.block_size for r in reqs), dtype=np.int64, count=R)
    n_in = np.fromiter((len(r.input_ids) for r in reqs), dtype=np.int64, count=R)

    lo, hi = _key_token_range(tree, input_tokens, block, n_in)
    kv_lo = _kv_bytes(cost, lo)
    kv_hi = _kv_bytes(cost, hi)
    seg = np.zeros(tree.n_keys)
    seg[1:] = np.maximum(0.0, kv_lo[1:] - kv_hi[tree.parent[1:]])

    # options: input-path keys with an earlier touch, top-down (a prefix of the path)
    opt_req, opt_key, opt_prev = [], [], []
    ptr = [0]
    for r in range(R):
        for k in tree.input_path(r):
            t = tree.touches(int(k))
            i = int(np.searchsorted(t, r))        # r itself passes k: t[i] == r
            if i == 0:
                break                             # nothing earlier passed k (nor below)
            opt_req.append(r)
            opt_key.append(int(k))
            opt_prev.append(int(t[i - 1]))
        ptr.append(len(opt_key))
    opt_req = np.asarray(opt_req, dtype=np.int64)
    opt_key = np.asarray(opt_key, dtype=np.int64)
    depth_ids = tree.depth[opt_key]
    opt_tokens = np.minimum(depth_ids * block[opt_req], input_tokens[opt_req])
    L = input_tokens[opt_req].astype(np.float64)
    h = opt_tokens.astype(np.float64)
    saved = cost.flops(L, 0.0) - cost.flops(L - h, h) if len(h) else np.zeros(0)
    W = warmup_requests(warmup, R)
    saved = np.where(opt_req < W, 0.0, saved)
    total = float(np.sum(cost.flops(input_tokens[W:].astype(np.float64), 0.0)))
    return OfflineProblem(
        name=workload.name, tree=tree, capacity_bytes=capacity.one_pool_bytes(),
        state_bytes=int(cost.state_bytes()), seg_kv_bytes=seg, key_tokens=lo,
        opt_ptr=np.asarray(ptr, dtype=np.int64), opt_req=opt_req, opt_key=opt_key,
        opt_prev=np.asarray(opt_prev, dtype=np.int64), opt_tokens=opt_tokens,
        opt_saved_flops=np.asarray(saved, dtype=np.float64), input_tokens=input_tokens,
        total_prefill_flops=total, warmup_requests=W)


def check_convex_savings(cost: CostModel) -> bool:
    """True when a hit's saving is convex in its depth h for a fixed input length L.

    saved(h) = F(L, 0) − F(L−h, h); its second derivative in h is
    −2·(c_nn − c_np + c_pp), so convexity holds iff c_np ≥ c_nn + c_pp. Causal attention
    (n²/2 + n·p score entries) and linear layers satisfy it. The key-only bound relies on it.
    """
    f = cost.flops
    return f.c_np >= f.c_nn + f.c_pp - 1e-9 * max(1.0, abs(f.c_np))


# ---------------------------------------------------------------- private helpers

def _kv_bytes(cost: CostModel, tokens: np.ndarray) -> np.ndarray:
    """cost.kv_bytes for an array of token counts (exact, vectorised over distinct values)."""
    values, inverse = np.unique(tokens, return_inverse=True)
    table = np.fromiter((cost.kv_bytes(int(v)) for v in values), dtype=np.float64,
                        count=len(values))
    return table[inverse]


def _key_token_range(tree: PrefixTree, input_tokens: np.ndarray, block: np.ndarray,
                     n_in: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fewest and most tokens any request passing a key gives it.

    Ids are tokens (block 1) or blocks; only a request's last input block may be partial,
    and ids past a request's input are output tokens. In a consistent trace lo == hi.
    """
    K = tree.n_keys
    touch_key = np.repeat(np.arange(K), np.diff(tree.touch_ptr))
    req = tree.touch_req
    d = tree.depth[touch_key]
    tokens = np.where(d <= n_in[req], np.minimum(d * block[req], input_tokens[req]),
                      input_tokens[req] + (d - n_in[req]))
    lo = np.full(K, np.iinfo(np.int64).max, dtype=np.int64)
    hi = np.zeros(K, dtype=np.int64)
    np.minimum.at(lo, touch_key, tokens)
    np.maximum.at(hi, touch_key, tokens)
    lo[ROOT] = hi[ROOT] = 0
    if np.any(lo != hi):
        log.info("%d keys are reached with different token counts (partial blocks); "
                 "KV is charged at the lower count", int(np.sum(lo != hi)))
    return lo, hi

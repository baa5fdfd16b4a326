"""`marconi.wrap(model, …)`: prefix caching on a real PyTorch hybrid model.

    cached = marconi.wrap(model, capacity="2GiB")             # or plan="runtime.yaml"
    out = cached.generate(input_ids, attention_mask=mask, max_new_tokens=32)
    # out: what model.generate(...) returns for the same greedy call ([B, W + new] ids)
    cached.stats()                                            # hits, tokens reused, bytes held

`generate` takes transformers' arguments and answers as transformers does
(runtime/serve/generation.py); it serves the rows of a batch one after another, unpadded.

Per request (`CachedModel._serve`):

1. **Match** the input in the `TensorPrefixCache` (the simulator's `PrefixCache` with pool
   slots): the hit is the deepest checkpoint on the input's path. The match covers the
   first L − 1 input ids, because the wrapper must return the logits of the last input
   position and a checkpoint *at* L cannot give them (engines cap the same way,
   background/engines.md §7.5); a checkpoint at L still serves every longer request.
2. **Restore** (copy-on-write): the KV of the hit path and the checkpoint's states are
   copied from the pools into a fresh working cache of the model's own class.
3. **Run** only the remaining tokens, split at the positions the policy will checkpoint
   (asked before the run from the input alone), snapshotting the states there. A family
   whose multi-token forward ignores a restored state (`continues_prefill` False, HF
   Jamba) runs one token at a time after a hit, and recomputes from token 0 to reach a
   checkpoint on a miss. What the splits cost is counted in `WrapStats`.
4. **Generate** greedily on the same working cache, until the new-token budget or a stop
   id (`generate`'s EOS ids).
5. **Admit**: the policy chooses what to cache of input + fed output (every generated
   token but the last has been fed); the cache inserts it (evicting as needed) and the new
   nodes get pool slots filled from the working cache.

Outputs equal the unwrapped model's (tests/test_wrap_exact.py).
"""

from __future__ import annotations

import dataclasses
import logging
import operator
import os
from typing import Sequence

import torch
from torch import Tensor

from marconi.errors import UserError
from marconi.passes.cost_model import CostModel
from marconi.runtime.capacity import Capacity
from marconi.runtime.cache.policies import get_policy
from marconi.runtime.cache.policies.planned import Planned, Replanner
from marconi.runtime.config import CacheConfig
from marconi.runtime.plan.plan_file import check_model, load_plan
from marconi.runtime.plan.rules import Plan
from marconi.runtime.serve.generation import assemble, parse_generation_args, unpad
from marconi.runtime.serve.model_adapters import ModelAdapter, adapter_for
from marconi.runtime.serve.pools import KVPool, StatePool
from marconi.runtime.cache.prefix_cache import PrefixCache
from marconi.runtime.cache.tree import Refresh, TraceClock
from marconi.runtime.seq import Seq
from marconi.runtime.sim.replay import what_if
from marconi.runtime.serve.tensor_cache import TensorPrefixCache
from marconi.runtime.workload import Request, Workload
from marconi.units import parse_capacity

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class PrefillOutput:
    logits: Tensor          # [L − start, V] float32: logits of input positions start … L−1
    start: int              # input tokens restored from the cache (not recomputed)
    input_tokens: int


@dataclasses.dataclass(frozen=True)
class RequestOutput:
    """One sequence served through the cache (`CachedModel.serve`)."""

    tokens: tuple[int, ...]     # generated ids (ending at the first stop id, if one came)
    logits: Tensor              # [len(tokens), V] float32: the logits each was chosen from
    prefill: PrefillOutput


@dataclasses.dataclass(frozen=True)
class WrapStats:
    """What the cache did so far. Tokens are counted per request; bytes are held now."""

    requests: int
    hit_requests: int                # requests that restored a checkpoint
    input_tokens: int
    reused_tokens: int               # input tokens restored instead of recomputed
    token_hit_rate: float            # reused / input
    prefill_tokens: int              # input tokens run through the model
    decode_tokens: int               # generated tokens fed back
    flop_savings: float              # Σ cost.saved_flops(h, L − h) / Σ cost.prefill_flops(L)
    forward_calls: int               # model forwards, prefill and decode
    split_forwards: int              # extra prefill forwards caused by checkpoint splits
    single_token_steps: int          # prefill tokens fed one by one (continues_prefill False)
    recomputed_tokens: int           # tokens prefilled again to reach a checkpoint
    split_extra_flops: float         # cost-model FLOPs the splits and recomputes added
    checkpoints_admitted: int
    checkpoints_evicted: int
    checkpoints_skipped: int         # asked by the policy at a position with no state at hand
    evictions: int
    rejected_inserts: int
    cached_tokens: int               # KV tokens held
    checkpoints_held: int
    kv_bytes_held: int
    state_bytes_held: int
    bytes_held: int
    capacity_bytes: int
    peak_occupancy: float
    kv_pool_tokens: int              # pool sizes
    state_pool_slots: int
    policy: str

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class _Counters:
    __slots__ = ("requests", "hit_requests", "input_tokens", "reused_tokens", "prefill_tokens",
                 "decode_tokens", "saved_flops", "prefill_flops", "forward_calls",
                 "split_forwards", "single_token_steps", "recomputed_tokens",
                 "split_extra_flops", "checkpoints_skipped")

    def __init__(self):
        for name in self.__slots__:
            setattr(self, name, 0)


class CachedModel:
    """A model behind a prefix cache. Build it with `marconi.wrap`."""

    def __init__(self, adapter: ModelAdapter, cost: CostModel, policy_cls, config: CacheConfig,
                 poison_freed: bool = False):
        self.adapter = adapter
        self.cost = cost
        layout = adapter.layout()
        _check_sizes(cost, layout)
        # The requests served so far, as a workload the policy can read: online policies
        # tune (Marconi's α) or plan (`planned`) by replaying past requests, never later ones.
        self.history = _History(Workload(name="marconi.wrap", requests=[], block_size=1,
                                         kind="token", source="marconi.wrap"), cost)
        self.policy = policy_cls(cost, config, self.history.workload)
        self.capacity = self.policy.capacity()
        if self.capacity.total_bytes is None:
            raise UserError("policy", f"{self.policy.name!r} has no capacity limit; expected "
                            "a policy that fits a bounded capacity")
        if self.policy.cache_class is not PrefixCache:
            raise UserError("policy", f"{self.policy.name!r} keeps a state every block "
                            f"inside edges (a {self.policy.cache_class.__name__}), which the "
                            "wrapper does not store; expected a policy without dense "
                            "checkpoints")
        kpt, sb = layout.kv_bytes_per_token, layout.state_bytes
        kv_tokens = int(self.capacity.kv_limit // kpt) if kpt else 0
        state_slots = int(self.capacity.state_limit // sb) if sb else 0
        device = adapter.device
        self.kv_pool = KVPool(layout.kv, kv_tokens, device, poison=poison_freed)
        self.state_pool = StatePool(layout.states, state_slots, device, poison=poison_freed)
        self.clock = TraceClock()
        self.cache = TensorPrefixCache(self.kv_pool, self.state_pool, self.capacity,
                                       self.policy.make_index(), self.clock)
        self._n = _Counters()
        log.info("wrap %s: policy %s, %d B; KV pool %d tokens x %d B, state pool %d x %d B",
                 cost.model, self.policy.name, self.capacity.total_bytes, kv_tokens, kpt,
                 state_slots, sb)

    # ------------------------------------------------------------------ public API
    def prefill(self, input_ids) -> PrefillOutput:
        """Prefill one sequence (ids [L], [1, L] or a list), reusing and feeding the cache."""
        return self._serve(_as_ids(input_ids, self.adapter.vocab_size), 0)[0].prefill

    def serve(self, input_ids, max_new_tokens: int = 16) -> RequestOutput:
        """Greedy generation of `max_new_tokens` after one sequence (ids [L], [1, L] or a
        list), with what the cache did: the prefix restored and the logits computed."""
        if max_new_tokens < 1:
            raise UserError("max_new_tokens", f"{max_new_tokens}; expected ≥ 1")
        return self._serve(_as_ids(input_ids, self.adapter.vocab_size), max_new_tokens)[0]

    def generate(self, input_ids, attention_mask=None, max_new_tokens: int | None = None,
                 **kwargs):
        """transformers' `model.generate(input_ids, attention_mask, max_new_tokens, …)` for
        greedy search, through the cache (the contract: runtime/serve/generation.py).

        input_ids [B, W] left-padded as transformers pads decoder-only models;
        attention_mask [B, W] (1: a real token, 0: padding) or None (inferred from
        pad_token_id, as transformers infers it). Returns int64 [B, W + T]: the input, then
        T ≤ budget new tokens per row (rows that stopped at an EOS id padded with
        pad_token_id); with return_dict_in_generate=True a `GenerateOutput` (sequences,
        scores / logits T × [B, V] when asked). Rows are served one after another, each
        unpadded, so a later row may hit what an earlier one cached.
        """
        if max_new_tokens is not None:
            kwargs["max_new_tokens"] = max_new_tokens
        args = parse_generation_args(self.adapter.generation_settings(), kwargs)
        ids, rows = unpad(input_ids, attention_mask, args)
        budget = args.new_tokens(ids.shape[1], self.adapter.max_positions)
        rows = [_as_ids(r, self.adapter.vocab_size) for r in rows]   # all checked, then run
        tokens, logits, starts, works = [], [], [], []
        for row in rows:
            out, work = self._serve(row, budget, args.eos_token_ids)
            tokens.append(out.tokens)
            starts.append(out.prefill.start)
            logits.append(out.logits if args.keeps_scores else None)
            works.append(work if args.keeps_scores and len(out.tokens) < budget else None)
        steps = max(len(t) for t in tokens)
        for b, work in enumerate(works):             # scores of the steps after a row's EOS
            if work is not None and len(tokens[b]) < steps:
                logits[b] = self._carry_on(tokens[b], logits[b], steps, args.pad_token_id, work)
        return assemble(ids, tokens, logits, starts, args)

    def prefill_batch(self, batch: Sequence) -> list[PrefillOutput]:
        """`prefill` of each sequence in order; later ones may hit what earlier ones cached."""
        return [self.prefill(ids) for ids in batch]

    def stats(self) -> WrapStats:
        n, c = self._n, self.cache
        return WrapStats(
            requests=n.requests, hit_requests=n.hit_requests, input_tokens=n.input_tokens,
            reused_tokens=n.reused_tokens,
            token_hit_rate=n.reused_tokens / n.input_tokens if n.input_tokens else 0.0,
            prefill_tokens=n.prefill_tokens, decode_tokens=n.decode_tokens,
            flop_savings=n.saved_flops / n.prefill_flops if n.prefill_flops else 0.0,
            forward_calls=n.forward_calls, split_forwards=n.split_forwards,
            single_token_steps=n.single_token_steps, recomputed_tokens=n.recomputed_tokens,
            split_extra_flops=float(n.split_extra_flops),
            checkpoints_admitted=c.checkpoints_admitted,
            checkpoints_evicted=c.checkpoints_evicted,
            checkpoints_skipped=n.checkpoints_skipped, evictions=c.evictions,
            rejected_inserts=c.rejected, cached_tokens=self.kv_pool.slots.used,
            checkpoints_held=self.state_pool.slots.used, kv_bytes_held=c.kv_used,
            state_bytes_held=c.state_used, bytes_held=c.used_bytes,
            capacity_bytes=self.capacity.total_bytes, peak_occupancy=c.peak_occupancy,
            kv_pool_tokens=self.kv_pool.tokens, state_pool_slots=self.state_pool.n_slots,
            policy=self.policy.name)

    # ------------------------------------------------------------------ one request
    @torch.no_grad()
    def _serve(self, ids: list[int], max_new: int, stop: tuple[int, ...] = ()):
        """Serve one request; returns its `RequestOutput` and the working cache after the
        tokens fed (input + every generated token but the last)."""
        L = len(ids)
        if L == 0:
            raise UserError("input_ids", "empty; expected at least one token")
        n, cache, policy = self._n, self.cache, self.policy
        self.clock.now += 1.0                    # logical time: one tick per request
        seq_in = Seq(tuple(ids), L, L, L, 1)
        m = cache.match(seq_in, L - 1)
        h = m.hit_depth
        if h:
            work = self._restore(m.hit_node)
            cache.consume(m.hit_node, policy.refresh is not Refresh.PATH)
            n.hit_requests += 1
        else:
            work = self.adapter.new_cache()
        marks = sorted({c for c in policy.admit(seq_in, m).checkpoints if h < c <= L})
        logits, work, snaps = self._prefill(ids, h, marks, work)
        tokens, step_logits, work = self._decode(logits[-1], max_new, work, stop)
        fed = ids + tokens[:-1]
        snaps[len(fed)] = self.adapter.states(work)
        i = len(self.history.workload.requests)
        self.history.workload.requests.append(Request(
            index=i, arrival_ms=self.clock.now, input_ids=tuple(ids), input_tokens=L,
            output_tokens=len(fed) - L, output_ids=tuple(tokens[:-1])))
        self._admit(Seq(tuple(fed), L, L, len(fed), 1), m, work, snaps)
        if self.history.first_eviction is None and cache.evictions:
            self.history.first_eviction = i
        policy.after_request(self.history, i)

        n.requests += 1
        n.input_tokens += L
        n.reused_tokens += h
        n.prefill_tokens += L - h
        n.saved_flops += self.cost.saved_flops(h, L - h)
        n.prefill_flops += self.cost.prefill_flops(L, 0)
        return RequestOutput(tuple(tokens), step_logits, PrefillOutput(logits, h, L)), work

    def _restore(self, node):
        """A working cache holding copies of the KV and states that `node`'s path caches."""
        kv = self.kv_pool.read(self.cache.path_kv_slots(node))
        states = self.state_pool.load(self.cache.state_slot[node])
        return self.adapter.restore(kv, states, node.tokens)

    def _prefill(self, ids: list[int], h: int, marks: list[int], work):
        """Run input tokens h … L−1 after `work`; snapshot states at each mark.

        Returns logits [L − h, V], the working cache after L tokens, {mark: states}.
        """
        a, n, cost = self.adapter, self._n, self.cost
        L = len(ids)
        row = torch.tensor([ids], dtype=torch.long, device=a.device)
        snaps: dict[int, list[Tensor]] = {}
        inner = [p for p in marks if p < L]
        if a.continues_prefill or (h == 0 and not inner):
            bounds = [h, *inner, L]
            parts = []
            for lo, hi in zip(bounds, bounds[1:]):
                out, work = a.forward(row[:, lo:hi], work)
                parts.append(out[0])
                n.split_extra_flops += cost.prefill_flops(hi - lo, lo)
                if hi in marks:
                    snaps[hi] = _clone(a.states(work))
            n.forward_calls += len(parts)
            n.split_forwards += len(parts) - 1
            n.split_extra_flops -= cost.prefill_flops(L - h, h)
            return torch.cat(parts), work, snaps
        if h == 0:                               # reach each mark from token 0, then all
            for p in inner:
                _, tmp = a.forward(row[:, :p], a.new_cache())
                snaps[p] = _clone(a.states(tmp))
                n.recomputed_tokens += p
                n.split_extra_flops += cost.prefill_flops(p, 0)
            out, work = a.forward(row, work)
            if L in marks:
                snaps[L] = _clone(a.states(work))
            n.forward_calls += len(inner) + 1
            n.split_forwards += len(inner)
            return out[0], work, snaps
        parts = []                               # after a hit: one token at a time
        for t in range(h, L):
            out, work = a.forward(row[:, t:t + 1], work)
            parts.append(out[0])
            n.split_extra_flops += cost.prefill_flops(1, t)
            if t + 1 in marks:
                snaps[t + 1] = _clone(a.states(work))
        n.forward_calls += L - h
        n.single_token_steps += L - h
        n.split_forwards += L - h - 1
        n.split_extra_flops -= cost.prefill_flops(L - h, h)
        return torch.cat(parts), work, snaps

    def _decode(self, last: Tensor, max_new: int, work, stop: tuple[int, ...]):
        """Greedy: token i is argmax of the previous logits, until `max_new` tokens or a
        stop id; all but the last are fed."""
        tokens: list[int] = []
        logits: list[Tensor] = []
        for _ in range(max_new):
            tok = int(last.argmax())
            tokens.append(tok)
            logits.append(last)
            if tok in stop or len(tokens) == max_new:
                break
            last, work = self._feed(tok, work)
            self._n.decode_tokens += 1
        stacked = torch.stack(logits) if logits else last.new_zeros(0, last.shape[-1])
        return tokens, stacked, work

    def _feed(self, tok: int, work) -> tuple[Tensor, object]:
        """One decode step: the logits [V] after feeding `tok`, and the working cache."""
        a = self.adapter
        out, work = a.forward(torch.tensor([[tok]], device=a.device), work)
        self._n.forward_calls += 1
        return out[0, -1], work

    @torch.no_grad()
    def _carry_on(self, tokens: tuple[int, ...], logits: Tensor, steps: int, pad: int,
                  work) -> Tensor:
        """Logits [steps, V] of a row that stopped at an EOS id after len(tokens) steps:
        transformers keeps decoding it until the batch stops, fed its EOS and then pad ids,
        and reports those steps' scores too. Nothing of this reaches the cache (the
        forwards count in `forward_calls` only)."""
        rows = [logits]
        for tok in (tokens[-1], *[pad] * (steps - len(tokens) - 1)):
            last, work = self._feed(tok, work)
            rows.append(last[None])
        return torch.cat(rows)

    def _admit(self, seq: Seq, m, work, snaps: dict[int, list[Tensor]]) -> None:
        """Let the policy choose what of `seq` to cache, insert it, fill the new slots."""
        cache, policy = self.cache, self.policy
        admission = policy.admit(seq, m)
        ckpts = [c for c in admission.checkpoints if c in snaps]
        self._n.checkpoints_skipped += len(admission.checkpoints) - len(ckpts)
        end = cache.insert(seq, admission.length, ckpts, m)
        if end is not None:
            kv = self.adapter.kv(work)
            cache.attach(end, lambda lo, hi: [t[lo:hi] for t in kv], snaps)
        if policy.refresh is Refresh.PATH:
            cache.touch_path(end if end is not None else (m.partial or m.node))


class _History:
    """What `Policy.after_request(replay, i)` is handed (`policies.base.ReplayView`): the
    requests so far, the request during which the first eviction happened, and replays
    of those requests (Marconi's α tuner), in-line."""

    def __init__(self, workload: Workload, cost: CostModel):
        self.workload = workload
        self.cost = cost
        self.first_eviction: int | None = None

    def what_if(self, base, fork_at, make_policy, values, stop, measure) -> dict:
        return what_if(self.workload, self.cost, base, fork_at, make_policy, values, stop,
                       measure)


def _clone(tensors: list[Tensor]) -> list[Tensor]:
    return [t.clone() for t in tensors]


def _as_ids(input_ids, vocab_size: int) -> list[int]:
    """Token ids of one sequence ([L], [1, L] or a list), each checked to be < vocab_size.

    Checked before the request touches the cache, so a bad id is a UserError, not an
    IndexError from the embedding halfway through a request."""
    if isinstance(input_ids, Tensor):
        if input_ids.dim() == 2:
            if input_ids.shape[0] != 1:
                raise UserError("input_ids", f"shape {tuple(input_ids.shape)}; expected one "
                                "sequence ([L] or [1, L]); use prefill_batch or generate for "
                                "several")
            input_ids = input_ids[0]
        input_ids = input_ids.tolist()
    try:
        ids = [operator.index(x) for x in input_ids]
    except TypeError:
        raise UserError("input_ids", f"{input_ids!r:.80}; expected one sequence of integer "
                        "token ids ([L], [1, L] or a list); use prefill_batch for several") \
            from None
    bad = next((x for x in ids if not 0 <= x < vocab_size), None)
    if bad is not None:
        raise UserError("input_ids", f"id {bad} is outside the vocabulary; expected ids in "
                        f"[0, {vocab_size})")
    return ids


def _check_sizes(cost: CostModel, layout) -> None:
    """The CostModel's bytes must be what the pools hold, or accounting would lie (a cost
    model of another model is bad input: `UserError`)."""
    if cost.kv_bytes_per_token != layout.kv_bytes_per_token or \
            cost.state_bytes() != layout.state_bytes:
        raise UserError(
            "cost", f"the CostModel of {cost.model} says {cost.kv_bytes_per_token} KV bytes "
            f"per token and {cost.state_bytes()} state bytes, but the model's cache holds "
            f"{layout.kv_bytes_per_token} and {layout.state_bytes}; the pools would not "
            "match the cache's accounting (expected the cost model of this model)")


DEFAULT_CAPACITY = "1GiB"
DEFAULT_POLICY = "planned"       # without a plan: `planned` from the default rules


def wrap(model, plan=None, capacity=None, policy: str | None = None,
         poison_freed: bool = False, cost: CostModel | None = None,
         replanner: Replanner | None = None) -> CachedModel:
    """Put `model` behind a prefix cache.

    model:    our reference `HybridLM` or a supported Hugging Face hybrid model
    plan:     a runtime.yaml path or a `Plan`: the `planned` policy runs its rules, at its
              capacity and memory split. A plan made for another model (another cost
              fingerprint: sizes, FLOPs or dtypes) is refused with a PlanError.
    capacity: bytes or a string ("2GiB"); overrides the plan's. Default: the plan's, else
              1 GiB.
    policy:   a registered policy name, instead of a plan. Default: `planned` from the
              default rules (input ends, branch points on a second sighting, LRU), which
              plans itself online from the requests it served when a `replanner` is
              given (docs/wrap.md).
    poison_freed: fill freed pool slots with NaN (debugging, tests)
    cost:     this model's CostModel if already built (`passes.build_cost_model`, "model"
              layout); built here otherwise. Its byte sizes are checked against the cache.
    replanner: how `planned` without a plan plans online (`Planned.with_planner`); the
              public `marconi.wrap` passes the planner's. None: it keeps the default rules.
    """
    adapter = adapter_for(model)
    cost = cost if cost is not None else adapter.cost_model()
    chunk = None
    if plan is not None:
        if policy is not None:
            raise UserError("policy", f"{policy!r} given with a plan; expected one of the two")
        plan = _load_plan(plan, cost)
        policy_cls = Planned.with_plan(plan)
        chunk = plan.chunk_tokens
        if capacity is None:
            capacity = plan.capacity_bytes
    else:
        policy_cls = get_policy(policy or DEFAULT_POLICY, "policy")
        if replanner is not None and issubclass(policy_cls, Planned):
            policy_cls = policy_cls.with_planner(replanner)
    cap = Capacity.shared(parse_capacity(capacity if capacity is not None else DEFAULT_CAPACITY,
                                         "capacity"))
    return CachedModel(adapter, cost, policy_cls, CacheConfig(capacity=cap, chunk_tokens=chunk),
                       poison_freed)


def _load_plan(plan, cost: CostModel):
    """A Plan from a runtime.yaml path or a Plan, checked against `cost`'s fingerprint."""
    if isinstance(plan, Plan):
        check_model(plan, cost, "plan")
        return plan
    if isinstance(plan, (str, os.PathLike)):
        return load_plan(plan, cost)
    raise UserError("plan", f"{type(plan).__name__}; expected a runtime.yaml path or a Plan")

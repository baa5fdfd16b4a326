"""`planned`: the policy that executes a Plan (marconi.runtime.plan.rules) in the PrefixCache."""

from __future__ import annotations

import heapq
from typing import ClassVar, Protocol

from marconi.passes.cost_model import CostModel
from marconi.runtime.plan.seen import SeenPrefixes
from marconi.runtime.plan.reuse_odds import ReuseOdds
from marconi.runtime.plan.rules import Plan, ReuseClass, default_plan
from marconi.runtime.capacity import Capacity
from marconi.runtime.cache.policies import register
from marconi.runtime.cache.policies.base import Admission, Policy
from marconi.runtime.cache.eviction import HeapIndex
from marconi.runtime.cache.next_use_index import NextUseIndex, PassHistory, \
    PredictedNextUse
from marconi.runtime.cache.policies.marconi import flop_efficiency
from marconi.runtime.cache.tree import DROP_STATE, REMOVE, Node, Refresh
from marconi.runtime.workload import Workload

# when one depth qualifies for several classes, the first listed wins
_RANK = {ReuseClass.PINNED: 0, ReuseClass.BRANCH: 1, ReuseClass.CONTINUATION: 2,
         ReuseClass.FRESH: 3, ReuseClass.OUTPUT: 4, ReuseClass.STRIDE: 5}


class Replanner(Protocol):
    """How `planned` plans online (the planner's `marconi.planner.plan.replan_online`,
    bound with ``Planned.with_planner``; the runtime never imports the planner)."""

    def __call__(self, workload: Workload, cost: CostModel, capacity: Capacity,
                 chunk_tokens: int | None) -> Plan:
        """Rules for `workload` (the requests so far) for the running cache's bounded
        `capacity` (its pools, if two, cannot be re-split: the rules are for their total)."""
        ...


@register("planned")
class Planned(Policy):
    """Admission and eviction compiled by `marconi-plan` (docs/planner.md).

    Admission (`AdmissionRules`), per request, with the prefixes seen so far kept in a ghost
    index (`runtime.plan.seen.SeenPrefixes`: ids only, not charged to the cache): a state at the
    input's end (block traces: its last full block) and, when outputs are known and the rule
    is on, after the last decoded token, unless the input is fresh (mostly unseen) and fresh
    requests are not admitted; where the input leaves the seen prefixes once they were seen
    by ``branch_sighting`` earlier sequences; every ``stride_tokens`` inside new content; at
    each pinned prefix it starts with. Positions floor to the engine grid; none shallower
    than ``min_prefix_tokens`` or at/above the hit. Only KV up to the deepest new state is
    inserted (KV past it could never be resumed). For a state-free model (no recurrent
    layers) the same rules decide how much KV a request leaves: the cache keeps no states,
    and any of that KV can be hit. So even unbounded it hits less than `infinite` where the
    rules leave KV out (e.g. outputs while ``output_end`` is off): an admission choice.

    Eviction (`EvictionRules`): over nodes with a state and at most one child, and
    state-less leaves, evict the smallest ``last_access + offset[class]`` plus, if tuned, a
    term in Marconi's FLOP efficiency (ties: older node); a leaf is removed, a single-child
    node drops its state. A state that a later request extended past (one child, not a
    branch or pin) is class ``passed``. Recency: the matched and inserted path is refreshed.

    Without a bound plan (``Planned.with_plan``), it starts from `default_plan` (with
    output-end states where outputs have ids, as in token traces: the next turn of a chat
    extends the previous output) and, if a re-planner is bound (``Planned.with_planner``,
    as the CLI, the planner, `marconi.wrap` and the benchmarks do), plans online from the
    requests served so far: first as soon as the cache has evicted and at least
    `min_online_window` requests were served, then again every `replan_every` requests,
    each time from the last `replan_window` requests (a sliding window, so a workload that
    drifts is followed). No future request is ever seen. Without a re-planner (the class
    as registered) it keeps the default rules.

    A bound plan that carries a next-use predictor (`Plan.next_use`) evicts by predicted
    next use instead (`runtime.cache.next_use_index.NextUseIndex`), same candidates.
    """

    refresh = Refresh.PATH
    plan: ClassVar[Plan | None] = None
    replanner: ClassVar[Replanner | None] = None
    min_online_window: ClassVar[int] = 200
    replan_every: ClassVar[int] = 2000           # requests between online plans
    replan_window: ClassVar[int] = 2000          # the most recent requests each is fitted on

    def __init__(self, cost, config, workload):
        super().__init__(cost, config, workload)
        cap = config.capacity.total_bytes or 0
        self.rules = self.plan or default_plan(cost.model, cost.fingerprint(),
                                               workload.block_size, self.chunk, cap,
                                               output_end=_outputs_have_ids(workload))
        self.replanned: list[int] = []             # request counts at every online plan
        self.seen = SeenPrefixes()
        self.index: ClassOffsetLRU | None = None
        self.cls: dict[int, ReuseClass] = {}   # node uid → reuse class
        self.pending: dict[int, ReuseClass] = {}   # depth → class of this request's states
        self.next_request = 0
        self.efficiency = flop_efficiency(cost)
        # every node's passes, for the reuse odds (kept here, not in an index: an index is
        # made again on a hedge's switch); kept only where odds are or may come (a later
        # online plan may bring them; a bound plan's never change)
        self.history = PassHistory()
        self.keeps_passes = self.plan is None or self.plan.reuse_odds is not None

    @classmethod
    def with_plan(cls, plan: Plan) -> type[Planned]:
        """This policy bound to `plan` (not registered; its results are named 'planned')."""
        return type("PlannedWithPlan", (cls,), {"plan": plan})

    @classmethod
    def with_planner(cls, replan: Replanner) -> type[Planned]:
        """This policy planning online with `replan` (not registered; its results are
        named 'planned')."""
        return type("PlannedWithPlanner", (cls,), {"replanner": staticmethod(replan)})

    # ------------------------------------------------------------------ hooks
    def capacity(self) -> Capacity:
        mem, cap = self.rules.memory, self.config.capacity
        if mem.pools == "split" and cap.total_bytes is not None:
            return Capacity.split(cap.total_bytes, mem.state_fraction)
        return cap

    def make_index(self):
        # a plan carrying a next-use predictor evicts by predicted next use (issue #14)
        predictor = self.rules.next_use
        self.index = ClassOffsetLRU(self) if predictor is None else \
            NextUseIndex(PredictedNextUse(predictor))
        return self.index

    def admit(self, seq, m):
        rules, grid = self.rules.admission, self.chunk
        n = seq.n_input
        sight = self.seen.lookup(seq.ids, n)
        seen_share = seq.tokens(sight.depth) / seq.input_tokens if seq.input_tokens else 0.0
        fresh = seen_share < rules.fresh_threshold
        ck: dict[int, ReuseClass] = {}

        def add(depth: int, cls: ReuseClass) -> None:
            d = seq.floor_grid(depth, grid)
            if d <= m.hit_depth or seq.tokens(d) < rules.min_prefix_tokens:
                return
            if d not in ck or _RANK[cls] < _RANK[ck[d]]:
                ck[d] = cls

        for p in self.rules.pinned:
            if p.ids <= n and p.matches(seq.ids):
                add(p.ids, ReuseClass.PINNED)
        if rules.branch_sighting and sight.passes >= rules.branch_sighting and \
                0 < sight.depth < n:
            add(sight.depth, ReuseClass.BRANCH)
        if rules.input_end and (rules.admit_fresh or not fresh):
            end = n if seq.block == 1 else seq.floor_grid(n, seq.block)
            add(end, ReuseClass.FRESH if fresh else ReuseClass.CONTINUATION)
        if rules.output_end and len(seq.ids) > n and (rules.admit_fresh or not fresh) and \
                self._outputs_known():
            add(len(seq.ids), ReuseClass.FRESH if fresh else ReuseClass.OUTPUT)
        if rules.stride_tokens:
            step = rules.stride_tokens
            t = (seq.tokens(sight.depth) // step + 1) * step
            while t < seq.input_tokens:
                add(_depth_at(seq, t), ReuseClass.STRIDE)
                t += step
        self.pending = ck
        if not ck:
            # nothing new to keep; a hit still refreshes its path (PATH recency touches the
            # node the insert ends at). Before this, a request that only hit refreshed
            # nothing (docs/planner.md §12).
            hit = m.hit_depth if m.hit_node.depth == m.hit_depth else 0     # a miss: 0
            return Admission(hit, ())
        return Admission(max(ck), tuple(sorted(ck)))

    def after_request(self, replay, i):
        req = replay.workload.requests[i]
        self.seen.add(req.input_ids + req.output_ids if req.output_ids is not None
                      else req.input_ids)
        self.pending = {}
        self.next_request = i + 1
        if self.plan is None and self.replanner is not None and \
                replay.first_eviction is not None:
            n = i + 1
            due = n - self.replanned[-1] >= self.replan_every if self.replanned else \
                n >= self.min_online_window
            if due:
                self._plan_online(replay, n)

    def follow(self, other: Planned) -> None:
        """Mirror `other`, the same plan's instance in a ghost (`policies.hedged`): its
        rules (planned online there), its sightings and its request count, shared, not
        copied; this instance never plans itself (its `after_request` is not called)."""
        self.seen, self.next_request, self.pending = other.seen, other.next_request, {}
        self.replanned = other.replanned
        if other.rules is not self.rules:
            self._adopt(other.rules)

    @property
    def planned_online(self) -> int | None:
        """The request count at the first online plan (None: not planned online)."""
        return self.replanned[0] if self.replanned else None

    def describe(self):
        out = {"rules": self.rules.rules_dict()}
        if self.plan is None:
            out["planned_online_at_request"] = self.planned_online
            out["replanned_at_requests"] = list(self.replanned)
        return out

    # ------------------------------------------------------------------ classes
    def node_class(self, node) -> ReuseClass:
        cls = self.cls.get(node.uid)
        if cls is None:
            cls = self.pending.get(node.depth, ReuseClass.FRESH)
            self.cls[node.uid] = cls
        if len(node.children) == 1 and node.ckpt and \
                cls not in (ReuseClass.BRANCH, ReuseClass.PINNED):
            return ReuseClass.PASSED
        return cls

    def offset(self, node) -> float:
        ev = self.rules.eviction
        out = ev.offset(self.node_class(node))
        if ev.efficiency_ms and node.ckpt:
            out += ev.efficiency_ms * self.efficiency(node) / ev.efficiency_ref
        return out

    # ------------------------------------------------------------------ private
    def _outputs_known(self) -> bool:
        """Does the request being admitted have known output ids (else they never hit)?"""
        reqs = self.workload.requests
        return self.next_request < len(reqs) and reqs[self.next_request].output_ids is not None

    def _plan_online(self, replay, n: int) -> None:
        cap = self.config.capacity
        if cap.total_bytes is None:
            return
        lo = max(0, n - self.replan_window)
        window = Workload(name=f"{self.workload.name}[{lo}:{n}]",
                          requests=self.workload.requests[lo:n],
                          block_size=self.workload.block_size, kind=self.workload.kind)
        self._adopt(self.replanner(window, self.cost, cap, self.config.chunk_tokens))
        self.replanned.append(n)

    def _adopt(self, rules: Plan) -> None:
        """Run `rules` from now on: the class-offset index re-files its candidates under
        the new offsets (a predictor's index needs a plan bound up front)."""
        self.rules = rules
        if isinstance(self.index, ClassOffsetLRU):
            self.index.rekey()


class ClassOffsetLRU(HeapIndex):
    """Eviction index for `Planned`: one min-heap on ``last_access + offset[class]`` over
    nodes with a state and at most one child, and leaves; ties go to the older node. A
    leaf victim is `REMOVE`d, a single-child one loses its state (`DROP_STATE`). The heap
    plumbing (stamps, compaction, locked tops) is `HeapIndex`'s.

    With the rules' reuse odds (`Plan.reuse_odds`, K = its ``candidates``) the order is
    refined: of the K first unlocked candidates of that order, the victim is the one
    least likely to be used within the K's LRU age (now − their oldest last access) given
    how long it has waited since its last pass (`ReuseOdds.odds` of the policy's
    `PassHistory`, noted at every update); ties keep the order (K = 1: the order itself).
    ``reference=True`` takes the K first from a scan of every filed
    candidate instead of the heap (the slow definition, for tests).
    """

    def __init__(self, policy: Planned, reference: bool = False):
        super().__init__()
        self.policy = policy
        self.reference = reference
        self._heap: list = []
        self._filed: dict[int, tuple] = {}     # reference: uid → its live entry

    def _heaps(self):
        return (self._heap,)

    def update(self, node) -> None:
        node.stamp += 1
        cand = node.alive and ((node.ckpt and len(node.children) <= 1) or not node.children)
        self._count(node, cand, self._heap)
        if self.policy.keeps_passes:
            if node.alive:
                self.policy.history.note(node, self.cache.clock.now)
            else:
                self.policy.history.forget(node)
        if cand:
            key = node.last_access + self.policy.offset(node)
            entry = (key, node.uid, node.stamp, node)
            heapq.heappush(self._heap, entry)
            if self.reference:
                self._filed[node.uid] = entry
        elif self.reference:
            self._filed.pop(node.uid, None)

    def victim(self):
        odds = self._odds()
        if odds is None:
            entry = self._top(self._heap)
            if entry is None:
                return None
            node = entry[-1]
        else:
            first = self._first_reference(odds.candidates) if self.reference else \
                self._first(odds.candidates)
            if not first:
                return None
            node = self._least_likely(first, odds)
        return node, (REMOVE if not node.children else DROP_STATE)

    def rekey(self) -> None:
        """Re-file every candidate after the offsets changed."""
        nodes = [e[-1] for e in self._heap if e[-2] == e[-1].stamp]
        self._heap.clear()
        for node in nodes:
            self._count(node, False, self._heap)
            self.update(node)

    def _odds(self) -> ReuseOdds | None:
        return self.policy.rules.reuse_odds

    def _first(self, k: int) -> list[tuple]:
        """The k first live unlocked entries of the heap (left in it)."""
        heap, out = self._heap, []
        while len(out) < k:
            if self._top(heap) is None:
                break
            out.append(heapq.heappop(heap))
        for entry in out:
            heapq.heappush(heap, entry)
        return out

    def _first_reference(self, k: int) -> list[tuple]:
        live = [e for e in self._filed.values() if e[-1].alive and not e[-1].lock_ref]
        return sorted(live, key=lambda e: e[:2])[:k]

    def _least_likely(self, first: list[tuple], odds: ReuseOdds) -> Node:
        now = self.cache.clock.now
        within = now - min(e[-1].last_access for e in first)
        hist = self.policy.history

        def key(e):
            node = e[-1]
            h = hist.get(node)
            return odds.odds(hist.bins(node, h), now - h[2], within), e[0], e[1]

        return min(first, key=key)[-1]


def _outputs_have_ids(workload: Workload) -> bool:
    """Do the workload's outputs have ids (token traces, generated chats), so that a state
    after the last decoded token can be hit by the next turn?"""
    return any(r.output_ids is not None for r in workload.requests)


def _depth_at(seq, tokens: int) -> int:
    """Deepest depth of `seq` covering at most `tokens` tokens of its input."""
    if seq.block == 1:
        return tokens
    return min(tokens // seq.block, seq.n_input)

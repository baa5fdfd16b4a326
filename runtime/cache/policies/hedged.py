"""`planned-hedged`: never (much) below the best expert, by following ghost caches.

Issue #14 item 3 (docs/planner.md, "Never below the best baseline"). The policy keeps one
ghost per expert (`runtime.cache.ghost.Ghost`: the expert's own cache over the same
requests, ids and byte counts only) and replays every request into each of them. The real
cache follows a leader chosen by `ghost.WindowLeader`: the expert whose ghost saved the
most FLOPs over the last `window` requests, changed only when a challenger is ahead by more
than `margin` of those requests' prefill FLOPs.

Following the leader means, for the real cache (whose FLOP savings are the ones reported):

- admission: the leader's rule, applied to the real cache's match (its own real-side
  instance of the expert; Marconi's runs at the α its ghost tuned);
- eviction: the leader's index; on a switch the nodes the real cache holds are filed again
  into a fresh index of the new leader (`ghost.SwitchIndex.switch`). The contents stay the
  previous leader's (a ghost has no tensors to copy), but with `warm` the switch first
  takes the new leader's view of them (`ghost.take_recency`): a node its ghost holds too
  gets the ghost's recency, and every other node is made older than all of those, so the
  new leader's recency ranks first what it would not have kept (measured: no gain);
- KV past the last state (`vllm-align` keeps it): dropped on a switch to a leader that
  keeps none (`Hedged._drop_kv_tails`), whose index would not free it;
- recency: the leader's. The real cache refreshes as HIT (only the consumed node); under a
  PATH leader `admit` touches, before the insert, the path to the deepest cached node
  within the admitted length (past the input too, where an earlier request cached the
  same output), which is what PATH's touch after the insert does (nodes the insert
  creates or splits are new), except on a rejected insert, where a partly matched edge is
  not refreshed, and on an empty admission after a hit, where PATH touches nothing while
  the HIT replay has refreshed the consumed node (`Planned` admits the hit's depth
  instead, so it never asks for an empty admission after a hit).

The decision uses only requests already served (the leader for request i+1 is chosen after
request i), so the policy is online. Experts must keep the radix `PrefixCache` (vLLM's
per-block `vllm-all` keeps a `DenseCache` and cannot be followed). On a state-free model
(no recurrent layers) the real cache hits any cached token (the base `hit_grid`); under a
`vllm-align` leader only its admission (whole blocks) follows vLLM.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from typing import ClassVar

from marconi.runtime.cache.ghost import Ghost, SwitchIndex, WindowLeader, take_recency
from marconi.runtime.cache.policies import get_policy, register
from marconi.runtime.cache.policies.base import Policy
from marconi.runtime.cache.policies.marconi import Marconi
from marconi.runtime.cache.policies.planned import Planned
from marconi.runtime.cache.prefix_cache import PrefixCache
from marconi.runtime.cache.tree import REMOVE, Refresh
from marconi.runtime.seq import make_seq
from marconi.errors import UserError


BASELINES = ("sglang", "vllm-align", "marconi")    # the baselines a plan is hedged by
# the standard errors a baseline's window lead must reach to take the lead from a plan
# (`WindowLeader`'s z; docs/planner.md §12: a switch costs the real cache, and on chat
# most one-window leads are a few lucky hits)
SIGNIFICANCE = 2.0


def marconi_at(alpha: float) -> type:
    """Marconi at the fixed α = `alpha` (never tuned), named ``marconi@<alpha>``."""
    alpha = float(alpha)

    def __init__(self, cost, config, workload):
        Marconi.__init__(self, cost, config, workload, alpha=alpha, tune=False)

    return type(f"MarconiAt{alpha}", (Marconi,), {"__init__": __init__,
                                                 "name": f"marconi@{alpha:g}"})


def _expert(name: str) -> type:
    """A registered policy, or ``marconi@A``: Marconi at the fixed α = A (never tuned)."""
    if not name.startswith("marconi@"):
        return get_policy(name, "experts")
    try:
        alpha = float(name.split("@", 1)[1])
    except ValueError:
        raise UserError("experts", f"{name!r}: expected marconi@ALPHA, ALPHA a number") \
            from None
    if not (math.isfinite(alpha) and alpha >= 0):
        raise UserError("experts", f"{name!r}: expected a finite α ≥ 0")
    return marconi_at(alpha)


@register("planned-hedged")
class Hedged(Policy):
    """Follow the expert whose ghost saved the most FLOPs recently (module docstring)."""

    refresh = Refresh.HIT
    kv_only_leaves = True
    # names or classes; the first leads until the window says otherwise (`_first_leader`)
    experts: ClassVar[tuple] = BASELINES
    window: ClassVar[int] = 256
    margin: ClassVar[float] = 0.005         # of the window's prefill FLOPs (0.5 points)
    # the expert that leads first and whose memory layout the real cache takes (`around`);
    # None: `_first_leader` chooses, and the real cache has the configured capacity
    prior: ClassVar[int | None] = None
    # requests served before the first switch; None: one full window
    evidence: ClassVar[int | None] = 0
    # a challenger must also lead since the leader took the lead (`WindowLeader`); off:
    # measured in docs/planner.md §12, it removes most switches and follows drift late
    sustained: ClassVar[bool] = False
    # a challenger's window lead must be this many standard errors (0: no test;
    # `WindowLeader`)
    z: ClassVar[float] = 0.0
    # a switch gives the real cache the new leader's recency (`ghost.take_recency`)
    warm: ClassVar[bool] = False

    def __init__(self, cost, config, workload):
        super().__init__(cost, config, workload)
        classes = []
        for e in self.experts:
            cls = _expert(e) if isinstance(e, str) else e
            if cls.cache_class is not PrefixCache or cls.oracle_alphas:
                raise UserError("experts", f"{cls.name or cls.__name__!r} cannot be followed: "
                                "an expert keeps the radix PrefixCache and is online")
            classes.append(cls)
        self.names = [cls.name or cls.__name__ for cls in classes]
        self.real = [cls(cost, config, workload) for cls in classes]   # admit / index
        if self.prior is not None:
            # every ghost runs in the real cache's memory layout (a plan's split pools), so
            # that a baseline's ghost scores what it would do in this cache
            layout = self.real[self.prior].capacity()
            config = dataclasses.replace(config, capacity=layout)
        self.ghost_policies = [cls(cost, config, workload) for cls in classes]
        for p in self.real:
            if isinstance(p, Marconi):
                p.tune = False                  # its α follows the ghost's (`_sync_tuned`)
        self.ghosts: list[Ghost] | None = None
        self._fresh = itertools.count(-1, -1)   # the ghosts' output ids (never matched)
        self.saved = [0.0] * len(classes)       # FLOPs each ghost saved after the warm-up
        self.prefill = 0.0                      # prefill FLOPs of those requests
        self.leader = self._first_leader(workload) if self.prior is None else self.prior
        evidence = self.window if self.evidence is None else self.evidence
        self.rule = WindowLeader(len(classes), self.window, self.margin, start=self.leader,
                                 evidence=evidence, sustained=self.sustained, z=self.z)
        self.index: SwitchIndex | None = None
        self.cache = None
        self.ghost_times: list[float] = []      # seconds hedging took, per request
        self.leaders: list[int] = []            # leader that served each request

    @classmethod
    def with_params(cls, experts=None, window=None, margin=None,
                    evidence=None, sustained=None, z=None, warm=None) -> type[Hedged]:
        """This policy with other experts, window, margin, evidence, `sustained` or `z`
        (`WindowLeader`) rule, or `warm` switches (not registered)."""
        attrs = {k: v for k, v in (("experts", tuple(experts) if experts else None),
                                   ("window", window), ("margin", margin),
                                   ("evidence", evidence), ("sustained", sustained),
                                   ("z", z), ("warm", warm))
                 if v is not None}
        return type("HedgedWith", (cls,), attrs)

    @classmethod
    def around(cls, policy: type, baselines: tuple = BASELINES) -> type[Hedged]:
        """`policy` (e.g. `Planned` bound to a plan or to a re-planner) hedged by ghosts of
        `baselines`: it leads first, the real cache has its memory layout (a plan's split
        pools included), and the window hands the lead to a baseline only where that one's
        ghost did better by `SIGNIFICANCE` standard errors of the window's differences, and
        not before one full window of evidence (the plan, fitted on more requests than a
        window holds, is a strong prior; docs/planner.md §12). Not registered; its results
        carry `policy`'s name."""
        return type(f"Hedged{policy.__name__}", (cls,),
                    {"experts": (policy, *baselines), "prior": 0, "evidence": None,
                     "z": SIGNIFICANCE, "name": policy.name or policy.__name__})

    def capacity(self):
        if self.prior is None:
            return super().capacity()
        return self.real[self.prior].capacity()

    def _first_leader(self, workload) -> int:
        """The prior, before any window: `vllm-align` on a block-hash trace of a model
        with states (the best baseline on the Mooncake traces, docs/planner.md §8), else
        the first expert (a state-free model's real cache hits any token, as `sglang`)."""
        if workload.block_size > 1 and self.cost.state_bytes() and "vllm-align" in self.names:
            return self.names.index("vllm-align")
        return 0

    def make_cache(self):
        self.cache = super().make_cache()
        return self.cache

    def make_index(self):
        self.index = SwitchIndex(self.real[self.leader].make_index())
        return self.index

    def admit(self, seq, m):
        lead = self.real[self.leader]
        adm = lead.admit(seq, m)
        if lead.refresh is Refresh.PATH:
            # what PATH's touch after the insert reaches among nodes that exist now: the
            # path to the deepest node whose whole edge lies in the first `adm.length` ids,
            # which may lie past the input (an output cached by an earlier request)
            if adm.length > m.node.depth:
                node = self.cache.match(seq, adm.length).node
            else:
                node = m.node
                while node.depth > adm.length:
                    node = node.parent
            self.cache.touch_path(node)
        return adm

    def after_request(self, replay, i):
        self.leaders.append(self.leader)
        t0 = time.perf_counter()
        if self.ghosts is None:
            self.ghosts = [Ghost(p, self.cost, self.workload, replay)
                           for p in self.ghost_policies]
        seq = make_seq(self.workload.requests[i], self._fresh)
        saved = [g.step(i, seq) for g in self.ghosts]
        L = self.workload.requests[i].input_tokens
        prefill = float(self.cost.prefill_flops(L, 0))
        if i >= self.config.warmup_requests(len(self.workload.requests)):
            self.saved = [a + b for a, b in zip(self.saved, saved)]
            self.prefill += prefill
        new = self.rule.observe(saved, prefill)
        if new != self.leader:
            self.leader = new
            if not self.real[new].kv_only_leaves:
                self._drop_kv_tails()
            if self.warm:
                take_recency(self.cache, self.ghosts[new].cache)
            self.index.switch(self.real[new].make_index())
        self._sync_tuned()
        # what following costs per request: the ghosts, the choice, a switch's re-filing
        self.ghost_times.append(time.perf_counter() - t0)

    def _drop_kv_tails(self) -> None:
        """Evict the KV-only leaves (KV past the last state, which `vllm-align` keeps):
        a leader that keeps none would extend them into state-less inner nodes, and its
        index (Marconi's orders states only) might never free them."""
        cache = self.cache
        for node in [n for n in cache.nodes() if not n.children and not n.ckpt]:
            if node is not cache.root and node.alive and not node.lock_ref:
                cache.evict_node(node, REMOVE)

    def _sync_tuned(self) -> None:
        """What an expert learns online, it learns in its ghost: a real-side Marconi runs
        at its ghost's α; a real-side `Planned` takes its ghost's rules (planned online
        there) and sightings (`Planned.follow`), so it never plans twice."""
        for real, ghost in zip(self.real, self.ghost_policies):
            if isinstance(ghost, Marconi) and real.index is not None \
                    and real.alpha != ghost.alpha:
                real.alpha = ghost.alpha
                if self.real[self.leader] is real:
                    real.index.alpha = ghost.alpha
            elif isinstance(ghost, Planned):
                real.follow(ghost)

    def describe(self):
        share = {}
        for k in self.leaders:
            share[self.names[k]] = share.get(self.names[k], 0) + 1
        n = max(1, len(self.leaders))
        hedge = {"experts": self.names, "window": self.window, "margin": self.margin,
                 "switches": self.rule.switches,
                 "leader_share": {k: round(v / n, 4) for k, v in share.items()},
                 # each ghost's own FLOP savings (the requests after the warm-up): what
                 # the expert alone would have saved
                 "expert_flop_savings": {k: round(s / self.prefill, 6) if self.prefill
                                         else 0.0 for k, s in zip(self.names, self.saved)}}
        if self.prior is None:
            return hedge
        return {**self.ghost_policies[self.prior].describe(), "hedge": hedge}
        # (no timings here: a result must not depend on the machine; see `ghost_times`)

"""Cache policies: admission + eviction strategies, registered by name.

Writing a policy
----------------
A policy is a subclass of `marconi.runtime.cache.policies.base.Policy` in a module of this
package, registered with the decorator::

    from marconi.runtime.cache.policies import register
    from marconi.runtime.cache.policies.base import Admission, Policy
    from marconi.runtime.cache.tree import Refresh

    @register("my-policy")
    class MyPolicy(Policy):
        '''Exact semantics and the source they follow.'''
        refresh = Refresh.PATH           # or HIT: which recency a request refreshes

        def make_index(self):            # eviction order: a `runtime.eviction` index
            return LeafLRU()

        def admit(self, seq, match):     # what to cache for this request
            return Admission(length=len(seq), checkpoints=(len(seq),))

Every module in this folder is imported the first time a name is looked up, so a new file
(e.g. ``planned.py``) registers itself; importing this package does nothing else.

The hooks, all optional except `make_index` and `admit` (see `Policy` for defaults):

- ``__init__(cost, config, workload)``: a fresh instance per replay (`CostModel`,
  `CacheConfig`, `Workload`).
- ``capacity()``: the `Capacity` to enforce (default: ``config.capacity``).
- ``cache_class`` and ``make_cache()``: the cache a replay runs in: the radix `PrefixCache`
  by default; the per-block baselines keep a `DenseCache` (a state every block inside
  edges) and build it with their block.
- ``hit_grid()``: for a state-free model (no recurrent layers), the tokens its hits on
  cached KV are floored to (vLLM: whole blocks), or None for any id (SGLang: any token).
  Such a model keeps no states: `admit`'s checkpoints are ignored, its `length` counts.
- ``make_index()``: the eviction index (`LeafLRU`, `StateAndLeafLRU`, `FlopAware`, …).
- ``admit(seq, match) -> Admission``: after the request's input was matched (`match`, a
  `prefix_cache.Match`), cache ``seq.ids[:length]`` with states at the depths in
  `checkpoints` (ids, not tokens; `seq.tokens(depth)` and `seq.floor_grid` convert).
- ``refresh`` (a `tree.Refresh`; its text is accepted): PATH = the matched and inserted
  path becomes most recent; HIT = only the consumed checkpoint's node and new nodes
  (Marconi, SGLang #31643).
- ``kv_only_leaves``: True if `admit` may insert KV past the last checkpoint.
- ``after_request(replay, i)``: called after request `i` (Marconi tunes α here, through
  `replay.what_if`; `base.ReplayView` is what it may use).
- ``describe()``: parameters to report (e.g. the α chosen).
- ``oracle_alphas``: True for an oracle row (marconi-static): the simulator replays the
  trace once per α of ``config.marconi.alpha_grid`` and reports the best. Policies decide; the
  simulator (`runtime.sim.simulator.replay_policy`) replays.

Unknown names raise `UserError` listing the known ones.
"""

from __future__ import annotations

import importlib
import pkgutil

from marconi.errors import UserError

_REGISTRY: dict[str, type] = {}
_discovered = False


def register(name: str):
    """Class decorator: make a `Policy` subclass available under `name` (no duplicates)."""
    def decorate(cls):
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"policy {name!r} is already registered by "
                             f"{_REGISTRY[name].__module__}.{_REGISTRY[name].__qualname__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls
    return decorate


def policy_names() -> list[str]:
    _discover()
    return sorted(_REGISTRY)


def get_policy(name: str, where: str = "policy") -> type:
    """The policy class registered as `name`."""
    _discover()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UserError(where, f"unknown policy {name!r}; expected one of "
                        f"{', '.join(sorted(_REGISTRY))}") from None


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    for info in pkgutil.iter_modules(__path__):
        if info.name != "base" and not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")
    _discovered = True

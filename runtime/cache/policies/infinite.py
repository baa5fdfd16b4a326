"""An unbounded cache: the upper bound on prefix hits for a trace."""

from __future__ import annotations

from marconi.runtime.capacity import Capacity
from marconi.runtime.cache.dense_cache import DenseCache
from marconi.runtime.cache.eviction import NoEviction
from marconi.runtime.cache.policies import register
from marconi.runtime.cache.policies.base import Admission, Policy


@register("infinite")
class Infinite(Policy):
    """No capacity limit and a state at every id (every block of a block trace, every token
    of a token workload; every ``--chunk-size`` tokens if given): a request hits the longest
    prefix of its input that any earlier input or output covered. On a block trace this is
    the "ideal prefix hit" of ../shared/traces/README.md (a block hits only if every block
    before it hit too). Its peak occupancy is what it needed, relative to the capacity."""

    cache_class = DenseCache

    def capacity(self):
        return Capacity.unbounded()

    def make_cache(self):
        block = self.workload.block_size
        return DenseCache.for_cost(self.cost, self.capacity(), self.make_index(),
                                   hit_grid=self.hit_grid(), stride=(self.chunk or block) // block,
                                   block=block)

    def make_index(self):
        return NoEviction()

    def admit(self, seq, m):
        n = len(seq.ids)
        return Admission(n, (n,))

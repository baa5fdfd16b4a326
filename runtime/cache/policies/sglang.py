"""The paper's SGLang+ baseline."""

from __future__ import annotations

from marconi.runtime.cache.eviction import LeafLRU
from marconi.runtime.cache.policies import register
from marconi.runtime.cache.policies.base import Policy, judicious_admission
from marconi.runtime.cache.tree import Refresh


@register("sglang")
class SGLangPlus(Policy):
    """The paper's SGLang+ (background/marconi.md §6.1, artifact policy V1).

    Admission: Marconi's judicious admission (`judicious_admission`: the branch point found
    by speculative insertion, and the last decoded token). Eviction: LRU over leaves only;
    removing a leaf frees its KV and its state, so a past turn's state on a single-child
    node stays until everything below it is gone. Recency: every node on the matched and
    inserted path (including a partially matched edge) is refreshed. Without the artifact's
    partial-edge false hits (its bug 3). A state-free model hits any cached token.
    """

    refresh = Refresh.PATH

    def make_index(self):
        return LeafLRU()

    def admit(self, seq, m):
        return judicious_admission(seq, m, self.chunk)

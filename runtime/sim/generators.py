"""Seeded workload generators for the shapes the Marconi paper studies (token-level ids).

Each shape is a frozen spec whose `requests(rng, ids)` yields requests; `generate` merges
several shapes into one `Workload` in arrival order. Every new piece of content (a user
turn, an output, a document) gets fresh ids from one counter, so two requests share a
prefix only where the shape says they do. Lengths are log-normal (median, sigma), capped.

- `ChatSpec`: multi-turn chat like LMSys / ShareGPT (background/marconi.md §5): the input
  of turn t is the whole history (every earlier user turn and output) plus the new user
  turn; a session stops before its context passes `max_context`. Sessions start
  1/`sessions_per_s` apart; the next turn comes after the user's typing time
  (words / 1.5 s, as the artifact: 90 wpm, ≈ 0.75 words per token) plus the reply's decode
  time (`decode_ms_per_token`).
- `AgentSpec`: SWE-bench-like agent sessions: a system prompt shared by every session, a
  task, then rounds of (observation → input, action → output). Once six complete
  (observation, action) pairs exist, the observation of the fifth pair from the end is
  deleted (the artifact's SWE-agent history collapse, §5): the middle of the history is
  rewritten, the source of intra-session branch points. Rounds arrive with exponential
  gaps of mean `round_gap_s` (the artifact's `art`).
- `SharedPromptSpec`: fan-out over a few long system prompts (Zipf popularity), each
  request the prompt plus a fresh question; Poisson arrivals.
- `DocumentSpec`: long shared documents, several questions each (long-document QA),
  questions of all documents interleaved; Poisson arrivals.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
from typing import Iterator, Sequence

from marconi.errors import UserError
from marconi.runtime.workload import Request, Workload

_Raw = tuple[float, tuple[int, ...], tuple[int, ...], str]   # arrival ms, input, output, session


def _length(rng: random.Random, median: float, sigma: float, cap: int) -> int:
    return max(1, min(cap, int(rng.lognormvariate(math.log(median), sigma))))


def _fresh(ids: Iterator[int], n: int) -> tuple[int, ...]:
    return tuple(itertools.islice(ids, n))


@dataclasses.dataclass(frozen=True)
class ChatSpec:
    sessions: int = 40
    turns: tuple[int, int] = (4, 16)
    user_median: float = 120.0
    user_sigma: float = 1.0
    output_median: float = 300.0
    output_sigma: float = 0.8
    max_context: int = 32_768
    sessions_per_s: float = 0.5
    decode_ms_per_token: float = 20.0

    def requests(self, rng: random.Random, ids: Iterator[int]) -> Iterator[_Raw]:
        for s in range(self.sessions):
            t = 1000.0 * s / self.sessions_per_s
            history: tuple[int, ...] = ()
            for _ in range(rng.randint(*self.turns)):
                user = _fresh(ids, _length(rng, self.user_median, self.user_sigma, 8192))
                out = _fresh(ids, _length(rng, self.output_median, self.output_sigma, 4096))
                if len(history) + len(user) + len(out) > self.max_context:
                    break
                yield t, history + user, out, f"chat-{s}"
                history += user + out
                typing_ms = 1000.0 * 0.75 * len(user) / 1.5
                t += typing_ms + self.decode_ms_per_token * len(out)


@dataclasses.dataclass(frozen=True)
class AgentSpec:
    sessions: int = 20
    system_tokens: int = 1500
    task_median: float = 400.0
    rounds: tuple[int, int] = (10, 40)
    observation_median: float = 600.0
    observation_sigma: float = 1.0
    action_median: float = 120.0
    action_sigma: float = 0.6
    max_context: int = 32_768
    sessions_per_s: float = 0.5
    round_gap_s: float = 7.5

    def requests(self, rng: random.Random, ids: Iterator[int]) -> Iterator[_Raw]:
        system = _fresh(ids, self.system_tokens)
        for s in range(self.sessions):
            t = 1000.0 * s / self.sessions_per_s
            task = _fresh(ids, _length(rng, self.task_median, 0.5, 4096))
            pairs: list[list[tuple[int, ...]]] = []          # [observation, action]
            for _ in range(rng.randint(*self.rounds)):
                obs = _fresh(ids, _length(rng, self.observation_median,
                                          self.observation_sigma, 8192))
                act = _fresh(ids, _length(rng, self.action_median, self.action_sigma, 2048))
                context = system + task + tuple(i for pair in pairs for part in pair
                                                for i in part)
                if len(context) + len(obs) + len(act) > self.max_context:
                    break
                yield t, context + obs, act, f"agent-{s}"
                pairs.append([obs, act])
                if len(pairs) >= 6:
                    pairs[-5][0] = ()                         # the history collapse
                t += rng.expovariate(1.0 / (1000.0 * self.round_gap_s))


@dataclasses.dataclass(frozen=True)
class SharedPromptSpec:
    prompts: int = 4
    prompt_tokens: int = 2000
    requests_total: int = 200
    zipf: float = 1.1
    question_median: float = 80.0
    output_median: float = 150.0
    rate_per_s: float = 2.0

    def requests(self, rng: random.Random, ids: Iterator[int]) -> Iterator[_Raw]:
        prompts = [_fresh(ids, self.prompt_tokens) for _ in range(self.prompts)]
        weights = [1.0 / (k + 1) ** self.zipf for k in range(self.prompts)]
        t = 0.0
        for i in range(self.requests_total):
            k = rng.choices(range(self.prompts), weights)[0]
            question = _fresh(ids, _length(rng, self.question_median, 0.7, 2048))
            out = _fresh(ids, _length(rng, self.output_median, 0.7, 2048))
            yield t, prompts[k] + question, out, f"prompt-{k}-{i}"
            t += rng.expovariate(self.rate_per_s / 1000.0)


@dataclasses.dataclass(frozen=True)
class DocumentSpec:
    documents: int = 6
    document_tokens: tuple[int, int] = (8000, 24000)
    questions: tuple[int, int] = (3, 8)
    question_median: float = 40.0
    output_median: float = 200.0
    rate_per_s: float = 0.5

    def requests(self, rng: random.Random, ids: Iterator[int]) -> Iterator[_Raw]:
        docs = [_fresh(ids, rng.randint(*self.document_tokens)) for _ in range(self.documents)]
        asks = [d for d in range(self.documents) for _ in range(rng.randint(*self.questions))]
        rng.shuffle(asks)
        t = 0.0
        for i, d in enumerate(asks):
            question = _fresh(ids, _length(rng, self.question_median, 0.7, 1024))
            out = _fresh(ids, _length(rng, self.output_median, 0.7, 2048))
            yield t, docs[d] + question, out, f"doc-{d}-{i}"
            t += rng.expovariate(self.rate_per_s / 1000.0)


Spec = ChatSpec | AgentSpec | SharedPromptSpec | DocumentSpec


def generate(specs: Sequence[Spec], seed: int = 0, name: str = "generated") -> Workload:
    """One workload from several shapes, merged in arrival order (stable)."""
    rng = random.Random(seed)
    ids = itertools.count(1)
    raw: list[_Raw] = []
    for spec in specs:
        raw.extend(spec.requests(rng, ids))
    raw.sort(key=lambda r: r[0])
    requests = tuple(Request(index=i, arrival_ms=t, input_ids=inp, input_tokens=len(inp),
                             output_tokens=len(out), output_ids=out, session=session)
                     for i, (t, inp, out, session) in enumerate(raw))
    description = f"seed={seed}: " + "; ".join(repr(s) for s in specs)
    return Workload(name=name, requests=requests, block_size=1, kind="generated",
                    source=description)


_NAMED = {
    # The built-in default: all four shapes, modest, so the main job runs in seconds.
    "default": (ChatSpec(sessions=24, turns=(4, 12), user_median=100, output_median=250),
                AgentSpec(sessions=8, system_tokens=1200, rounds=(8, 24),
                          observation_median=400, action_median=100),
                SharedPromptSpec(prompts=3, prompt_tokens=1500, requests_total=150),
                DocumentSpec(documents=4, document_tokens=(6000, 12000), questions=(4, 6))),
    "chat": (ChatSpec(),),
    "agent": (AgentSpec(),),
    "shared-prompts": (SharedPromptSpec(),),
    "documents": (DocumentSpec(),),
}


def workload_names() -> list[str]:
    return sorted(_NAMED)


def named_workload(name: str, seed: int = 0) -> Workload:
    """A built-in workload by name (see `workload_names()`)."""
    try:
        specs = _NAMED[name]
    except KeyError:
        raise UserError("builtin_workload", f"unknown built-in workload {name!r}; expected one of "
                        f"{', '.join(workload_names())}") from None
    return generate(specs, seed=seed, name=f"builtin:{name}")


def default_workload(seed: int = 0) -> Workload:
    """The embedded default workload of the CLI: chat, agents, shared prompts, documents."""
    return named_workload("default", seed)

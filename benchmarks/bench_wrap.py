"""Benchmark of `marconi.wrap` on a CPU (figures go in docs/wrap.md).

    python benchmarks/bench_wrap.py                    # defaults below, 3 repeats
    python benchmarks/bench_wrap.py --repeats 5 --json out.json

Model: a reference hybrid of about 280 MB (float32: d_model 768, 12 layers = 4 Mamba2 +
2 GQA attention + 6 gated MLPs, vocab 16,000), random weights.

Requests: 20 prefills sharing long prefixes: `docs` documents of `doc_tokens` tokens, each
followed by a distinct question of 32–96 tokens, arriving round-robin over the documents
(request i reads document i mod docs).

Measured, per repeat, interleaved request by request (uncached, then cached):

- uncached: the model's own forward over each full input, from an empty cache;
- cached: `CachedModel.prefill` of each input on a fresh wrapper (match, restore, run the
  rest split at the checkpoints, admit), everything included.

Predicted: the simulator replays the same requests through the same policy and capacity
(`runtime.replay.Replay`, the same `PrefixCache` without tensors); its FLOP savings F
(Σ saved_flops / Σ prefill_flops over the requests) predicts a speed-up 1 / (1 − F).

Printed: medians over repeats of total prefill seconds, the measured speed-up, the
predicted one, and where the time went (time per token of computed vs full prefills).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time

import torch

SPEC = {
    "name": "bench-hybrid-280m", "d_model": 768, "vocab_size": 16000,
    "blocks": {
        "M": {"kind": "mamba2", "d_state": 16, "head_dim": 64, "expand": 2, "n_groups": 1,
              "d_conv": 4},
        "*": {"kind": "attention", "n_heads": 12, "n_kv_heads": 4, "head_dim": 64},
        "-": {"kind": "mlp", "d_ff": 2048, "gated": True},
    },
    "pattern": "M-M-*-M-M-*-",
}


def make_requests(n: int, docs: int, doc_tokens: int, seed: int, vocab: int) -> list[list[int]]:
    rng = random.Random(seed)
    documents = [[rng.randrange(vocab) for _ in range(doc_tokens)] for _ in range(docs)]
    return [documents[i % docs] + [rng.randrange(vocab) for _ in range(rng.randint(32, 96))]
            for i in range(n)]


def predicted(requests, cost, policy: str, capacity: int):
    """The simulator's FLOP savings and hits for the same requests, policy and capacity."""
    from marconi.runtime.capacity import Capacity
    from marconi.runtime.config import CacheConfig
    from marconi.planner.plan import planned_policy
    from marconi.runtime.cache.policies import get_policy
    from marconi.runtime.sim.replay import Replay
    from marconi.runtime.sim.simulator import summarize
    from marconi.runtime.workload import Request, Workload

    workload = Workload("bench_wrap", tuple(
        Request(index=i, arrival_ms=float(i), input_ids=tuple(ids), input_tokens=len(ids),
                output_tokens=0, output_ids=()) for i, ids in enumerate(requests)))
    config = CacheConfig(capacity=Capacity.shared(capacity))
    # as `marconi.wrap` binds it: the rules alone, planning online (its tensor cache keeps
    # no ghosts)
    cls = planned_policy(hedged=False) if policy == "planned" else get_policy(policy)
    replay = Replay(workload, cost, cls(cost, config, workload))
    replay.run()
    return summarize(policy, replay, cost, config, {}), replay.hits


@torch.no_grad()
def one_repeat(model, requests, cost, policy: str, capacity: int):
    """Per request: the uncached forward, then the cached prefill on a fresh wrapper that
    has seen the earlier requests. Interleaved, so that both see the same machine load."""
    from marconi import wrap
    cached = wrap(model, capacity=capacity, policy=policy, cost=cost)
    uncached_s, cached_s, starts = [], [], []
    for ids in requests:
        t0 = time.perf_counter()
        model(torch.tensor([ids]))
        t1 = time.perf_counter()
        starts.append(cached.prefill(ids).start)
        t2 = time.perf_counter()
        uncached_s.append(t1 - t0)
        cached_s.append(t2 - t1)
    return uncached_s, cached_s, starts, cached.stats()


def main(requests: int = 20, docs: int = 4, doc_tokens: int = 1024, repeats: int = 3,
         policy: str = "marconi", capacity: str = "256MiB", seed: int = 0,
         threads: int = 1, json_path: str | None = None) -> dict:
    from marconi.passes.reference_model import build
    from marconi.runtime.serve.model_adapters import adapter_for
    from marconi.spec import parse_spec
    from marconi.units import parse_capacity

    if threads:
        torch.set_num_threads(threads)
    spec = parse_spec(SPEC)
    model = build(spec, seed=seed).eval()
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    cost = adapter_for(model).cost_model()        # at the model's own (float32) dtypes
    cap = parse_capacity(capacity)
    reqs = make_requests(requests, docs, doc_tokens, seed, spec.vocab_size)
    sim, sim_hits = predicted(reqs, cost, policy, cap)

    with torch.no_grad():                          # warm-up: allocator, thread pools
        model(torch.tensor([reqs[0]]))
    uncached, cached, per_request, stats = [], [], [], None
    for r in range(repeats):
        u, c, starts, stats = one_repeat(model, reqs, cost, policy, cap)
        uncached.append(sum(u))
        cached.append(sum(c))
        per_request.append((u, c))
        print(f"repeat {r}: uncached {uncached[-1]:.2f} s, cached {cached[-1]:.2f} s",
              flush=True)
    t_u, t_c = statistics.median(uncached), statistics.median(cached)
    # medians per request over repeats: less sensitive to a burst of load on one repeat
    med_u = [statistics.median(rep[0][i] for rep in per_request) for i in range(requests)]
    med_c = [statistics.median(rep[1][i] for rep in per_request) for i in range(requests)]
    input_tokens = sum(len(x) for x in reqs)
    result = {
        "model": spec.name, "weight_bytes": weight_bytes, "requests": requests,
        "docs": docs, "doc_tokens": doc_tokens, "input_tokens": input_tokens,
        "policy": policy, "capacity_bytes": cap, "threads": torch.get_num_threads(),
        "repeats": repeats,
        "uncached_s": uncached, "cached_s": cached,
        "per_request_median_s": {"uncached": med_u, "cached": med_c, "restored": starts},
        "uncached_median_s": t_u, "cached_median_s": t_c,
        "measured_speedup": t_u / t_c,
        "measured_speedup_per_request_medians": sum(med_u) / sum(med_c),
        "hit_requests_time_ratio": sum(c for c, h in zip(med_c, starts) if h) /
        sum(u for u, h in zip(med_u, starts) if h),
        "hit_requests_flop_ratio": sum(cost.prefill_flops(len(x) - h, h) for x, h in
                                       zip(reqs, starts) if h) /
        sum(cost.prefill_flops(len(x), 0) for x, h in zip(reqs, starts) if h),
        "miss_requests_time_ratio": sum(c for c, h in zip(med_c, starts) if not h) /
        sum(u for u, h in zip(med_u, starts) if not h),
        "predicted_flop_savings": sim.flop_savings,
        "predicted_speedup": 1.0 / (1.0 - sim.flop_savings),
        "predicted_token_hit_rate": sim.token_hit_rate,
        "wrapper_reused_tokens": stats.reused_tokens, "simulator_hit_tokens": sum(sim_hits),
        "wrapper_flop_savings": stats.flop_savings,
        "token_fraction_computed": stats.prefill_tokens / input_tokens,
        "split_forwards": stats.split_forwards,
        "uncached_s_per_token": t_u / input_tokens,
        "cached_s_per_computed_token": t_c / stats.prefill_tokens,
    }
    result["measured_over_predicted"] = result["measured_speedup"] / result["predicted_speedup"]
    for k, v in result.items():
        if not isinstance(v, (list, dict)):
            print(f"{k:28s} {v:.4g}" if isinstance(v, float) else f"{k:28s} {v}")
    if json_path:
        with open(json_path, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=20)
    p.add_argument("--docs", type=int, default=4)
    p.add_argument("--doc-tokens", type=int, default=1024)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--policy", default="marconi")
    p.add_argument("--capacity", default="256MiB")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="intra-op threads (1: steadier on a shared machine; 0: torch's default)")
    p.add_argument("--json", dest="json_path", default=None)
    main(**vars(p.parse_args()))

"""Small seeded workloads and cost models for tests of the planner (no model tracing).

`toy_cost` is a two-layer model whose numbers are easy to work out by hand: one causal
attention layer (KV `kv` bytes per token; n²/2 + n·p score FLOPs) and one recurrent layer
(`state` bytes per checkpoint; `lin` FLOPs per token), or with ``state=0`` an MLP in its
place (`lin` FLOPs per token): a state-free model.
"""

from __future__ import annotations

import random

from marconi.layers import LayerKind
from marconi.passes.cost_model import CostModel, FlopPoly, LayerCost
from marconi.runtime.workload import Request, Workload


def toy_cost(kv: int = 100, state: int = 300, attn: float = 1.0, lin: float = 50.0
             ) -> CostModel:
    second = (LayerCost(1, LayerKind.MAMBA2, "ssm", recurrent_state_bytes=state,
                        flops=FlopPoly(c_n=lin)) if state else
              LayerCost(1, LayerKind.MLP, "mlp", flops=FlopPoly(c_n=lin)))
    layers = (
        LayerCost(0, LayerKind.ATTENTION, "attn", kv_bytes_per_token=kv,
                  flops=FlopPoly(c_n=lin, c_nn=attn / 2, c_np=attn)),
        second,
    )
    return CostModel(model="toy", dtype="float16", state_dtype="float16", layers=layers)


def random_workload(seed: int, n: int = 6, vocab: int = 2, max_len: int = 5,
                    block_size: int = 1, outputs: bool = True, reuse: float = 0.7) -> Workload:
    """`n` requests that often extend or branch off an earlier sequence.

    With `block_size` > 1 it is a block trace: ids are blocks, the last one partial at
    random, outputs unknown.
    """
    rng = random.Random(seed)
    history: list[tuple[int, ...]] = []
    reqs = []
    for i in range(n):
        if history and rng.random() < reuse:
            base = rng.choice(history)
            cut = rng.randint(1, len(base))
            ids = base[:cut] + tuple(rng.randrange(vocab) for _ in range(rng.randint(0, 2)))
        else:
            ids = tuple(rng.randrange(vocab) for _ in range(rng.randint(1, max_len)))
        if block_size > 1:
            tokens = (len(ids) - 1) * block_size + rng.randint(1, block_size)
            full = ids
            if tokens % block_size:         # a partial last block is other content: own id
                ids = ids[:-1] + (1000 + i,)
                full = ids[:-1]
            reqs.append(Request(index=i, arrival_ms=float(i), input_ids=ids,
                                input_tokens=tokens, output_tokens=rng.randint(1, 9),
                                block_size=block_size))
            if full:
                history.append(full)
            continue
        out = tuple(rng.randrange(vocab) for _ in range(rng.randint(0, 2))) if outputs else None
        reqs.append(Request(index=i, arrival_ms=float(i), input_ids=ids, input_tokens=len(ids),
                            output_tokens=len(out or ()), output_ids=out))
        history.append(ids + (out or ()))
    kind = "block" if block_size > 1 else "token"
    return Workload(name=f"random{seed}", requests=tuple(reqs), block_size=block_size,
                    kind=kind)

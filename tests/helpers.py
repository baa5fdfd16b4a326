"""Helpers the tests share: repository paths, hand-built cost models and tiny workloads.

The cost models are written out by hand (no tracing): the Marconi paper's 7B hybrid with
its closed forms (background/marconi.md §1.1, §4), and a toy model with round numbers for
tests whose arithmetic is worked out in comments. `test_runtime_helpers.py` checks them.
Fixtures live in conftest.py.
"""

from __future__ import annotations

import random
from pathlib import Path

from marconi.layers import LayerKind
from marconi.passes.cost_model import CostModel, FlopPoly, LayerCost
from marconi.runtime.workload import Request, Workload

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "models"
TRACES = REPO.parent / "shared" / "traces"


def paper_7b_cost() -> CostModel:
    """4 attention + 24 Mamba2 + 28 MLP layers, D = 4096, N = 128, FP16 (paper App. A).

    Attention KV 2·D·2 B/token/layer; SSM state D·N·2 + conv (2D + 2N)·4·2 B per layer;
    FLOPs per layer: attention 8·n·D² + causal scores 4·D·(n·p + n²/2); Mamba
    12·n·D² + 16·n·D·N + 10·n·D; MLP 16·n·D².
    """
    D, N = 4096, 128
    layers = []
    i = 0
    for _ in range(4):
        layers.append(LayerCost(i, LayerKind.ATTENTION, f"layers.{i}", kv_bytes_per_token=4 * D,
                                flops=FlopPoly(c_n=8 * D * D, c_nn=2 * D, c_np=4 * D)))
        i += 1
    for _ in range(24):
        layers.append(LayerCost(i, LayerKind.MAMBA2, f"layers.{i}",
                                recurrent_state_bytes=D * N * 2,
                                conv_state_bytes=(2 * D + 2 * N) * 4 * 2,
                                flops=FlopPoly(c_n=12 * D * D + 16 * D * N + 10 * D)))
        i += 1
    for _ in range(28):
        layers.append(LayerCost(i, LayerKind.MLP, f"layers.{i}",
                                flops=FlopPoly(c_n=16 * D * D)))
        i += 1
    return CostModel("paper-7b-by-hand", "float16", "float16", tuple(layers))


def toy_cost(kv_per_token: int = 1, state: int = 10, flops_per_token: float = 1.0,
             attention_np: float = 0.0) -> CostModel:
    """One attention layer (`kv_per_token` B/token) and one recurrent layer (`state` B).

    prefill_flops(n, p) = flops_per_token·n + attention_np·n·p.
    """
    return CostModel("toy", "float16", "float16", (
        LayerCost(0, LayerKind.ATTENTION, "attn", kv_bytes_per_token=kv_per_token,
                  flops=FlopPoly(c_n=flops_per_token, c_np=attention_np)),
        LayerCost(1, LayerKind.MAMBA2, "ssm", recurrent_state_bytes=state),
    ))


def token_workload(seqs, outputs=None, times=None, name="tiny") -> Workload:
    """A token workload from lists of input ids (and output ids; default: none)."""
    reqs = []
    for i, ids in enumerate(seqs):
        out = tuple(outputs[i]) if outputs else ()
        t = float(times[i]) if times else float(i)
        reqs.append(Request(index=i, arrival_ms=t, input_ids=tuple(ids), input_tokens=len(ids),
                            output_tokens=len(out), output_ids=out))
    return Workload(name=name, requests=tuple(reqs), block_size=1, kind="generated")


def block_workload(rows, block=4, name="tiny-blocks") -> Workload:
    """A block-hash workload from (input_tokens, output_tokens, ids) rows."""
    reqs = tuple(Request(index=i, arrival_ms=float(i), input_ids=tuple(ids),
                         input_tokens=L, output_tokens=out, block_size=block)
                 for i, (L, out, ids) in enumerate(rows))
    return Workload(name=name, requests=reqs, block_size=block, kind="block")


def causal_toy_cost(kv: int = 100, state: int = 300, attn: float = 1.0, lin: float = 50.0
                    ) -> CostModel:
    """A two-layer model whose numbers are easy to work out by hand: one causal attention
    layer (KV `kv` bytes per token; n²/2 + n·p score FLOPs) and one recurrent layer
    (`state` bytes per checkpoint; `lin` FLOPs per token), or with ``state=0`` an MLP in its
    place (`lin` FLOPs per token): a state-free model."""
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

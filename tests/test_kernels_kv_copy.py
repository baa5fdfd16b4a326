"""KV gather/scatter (Triton, interpreter, child process) against the references, and the
references against a per-token loop over the block table."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from marconi.kernels.kv_copy import kv_copy_plan, kv_gather_ref, kv_scatter_ref


@dataclass(frozen=True)
class Case:
    seed: int
    lens: tuple[int, ...]          # tokens per sequence in this copy
    starts: tuple[int, ...]        # request position of each sequence's first token
    gather: bool
    layers: int = 2                # K and V of each layer: 2 pairs per layer
    block_size: int = 4
    heads: int = 2
    dim: int = 6
    dtype: torch.dtype = torch.float32
    hole: bool = False             # one block id is -1 (not allocated): its tokens are skipped


CASES = {
    "gather-prefixes": Case(0, (7, 12), (0, 0), gather=True),
    "gather-offset-start": Case(1, (5, 3, 9), (3, 8, 1), gather=True),
    "scatter-new-tokens": Case(2, (6, 10), (5, 0), gather=False),
    "scatter-bf16": Case(3, (9,), (2,), gather=False, dtype=torch.bfloat16),
    "gather-int8-bytes": Case(4, (7, 2), (1, 0), gather=True, dtype=torch.int8, dim=3),
    "gather-hole": Case(5, (11,), (0,), gather=True, hole=True),
    "scatter-empty-seq": Case(6, (0, 5), (0, 3), gather=False),
}


def _draw(g, shape, dtype):
    if dtype.is_floating_point:
        return torch.randn(shape, generator=g).to(dtype)
    return torch.randint(-100, 100, shape, generator=g).to(dtype)


def _poison(t: torch.Tensor) -> torch.Tensor:
    return t.fill_(float("nan")) if t.dtype.is_floating_point else t.fill_(-128)


def _setup(case: Case):
    g = torch.Generator().manual_seed(case.seed)
    bs = case.block_size
    blocks_per_seq = [-(-(s + n) // bs) for s, n in zip(case.starts, case.lens)]
    n_blocks = sum(blocks_per_seq) + 3
    perm = torch.randperm(n_blocks, generator=g).tolist()
    width = max(blocks_per_seq + [1])
    table = torch.full((len(case.lens), width), -1, dtype=torch.int32)
    i = 0
    for b, nb in enumerate(blocks_per_seq):
        table[b, :nb] = torch.tensor(perm[i:i + nb], dtype=torch.int32)
        i += nb
    if case.hole:
        table[0, 1] = -1
    cu = torch.tensor([0] + list(torch.tensor(case.lens).cumsum(0).tolist()), dtype=torch.int32)
    row = (case.heads, case.dim)
    pairs = [(_draw(g, (n_blocks, bs) + row, case.dtype),
              _draw(g, (int(cu[-1]) + 2,) + row, case.dtype)) for _ in range(2 * case.layers)]
    for cache, work in pairs:
        _poison(work if case.gather else cache)
    return pairs, table, cu, torch.tensor(case.starts, dtype=torch.int32)


def _bytes(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.uint8)


def check(case: Case) -> dict:
    """Kernel and reference from identical poisoned destinations; bytes must agree."""
    from marconi.kernels.kv_copy import kv_gather, kv_scatter

    pairs, table, cu, start = _setup(case)
    ref_pairs = [(c.clone(), w.clone()) for c, w in pairs]
    plan = kv_copy_plan(pairs)
    kernel, ref = (kv_gather, kv_gather_ref) if case.gather else (kv_scatter, kv_scatter_ref)
    kernel(plan, table, cu, max(case.lens), start, block_t=4, block_w=8)
    ref(ref_pairs, table, cu, max(case.lens), start)
    side = 1 if case.gather else 0
    mismatched = sum(int((_bytes(p[side]) != _bytes(r[side])).sum())
                     for p, r in zip(pairs, ref_pairs))
    return {"mismatched_bytes": mismatched, "word_bytes": plan.word_bytes}


@pytest.fixture(scope="module")
def interpreted(interpreted_files):
    return interpreted_files(__file__)


@pytest.mark.parametrize("case_id", list(CASES))
def test_kernel_matches_ref(case_id, interpreted):
    r = interpreted[case_id]
    assert "error" not in r, r.get("error")
    assert r["mismatched_bytes"] == 0
    assert r["word_bytes"] == (1 if CASES[case_id].dtype == torch.int8 else 4)


@pytest.mark.parametrize("case_id", list(CASES))
def test_ref_matches_token_loop(case_id):
    case = CASES[case_id]
    pairs, table, cu, start = _setup(case)
    expected = [(c.clone(), w.clone()) for c, w in pairs]
    for b, n in enumerate(case.lens):
        for i in range(n):
            pos = case.starts[b] + i
            blk = int(table[b, pos // case.block_size])
            if blk < 0:
                continue
            for cache, work in expected:
                if case.gather:
                    work[int(cu[b]) + i] = cache[blk, pos % case.block_size]
                else:
                    cache[blk, pos % case.block_size] = work[int(cu[b]) + i]
    (kv_gather_ref if case.gather else kv_scatter_ref)(pairs, table, cu, max(case.lens), start)
    for (c, w), (ce, we) in zip(pairs, expected):
        assert torch.equal(_bytes(c), _bytes(ce)) and torch.equal(_bytes(w), _bytes(we))


def test_gather_then_scatter_round_trip():
    """Scatter a request's KV into fresh blocks, gather it back: identical rows."""
    case = CASES["scatter-new-tokens"]
    pairs, table, cu, start = _setup(case)
    work = [w.clone() for _, w in pairs]
    kv_scatter_ref(pairs, table, cu, max(case.lens), start)
    for _, w in pairs:
        _poison(w)
    kv_gather_ref(pairs, table, cu, max(case.lens), start)
    n = int(cu[-1])
    for (_, w), w0 in zip(pairs, work):
        assert torch.equal(w[:n], w0[:n])


def test_plan_rejects_mismatched_rows():
    with pytest.raises(ValueError, match=r"pairs\[0\]: cache \(3, 4, 2, 5\)"):
        kv_copy_plan([(torch.zeros(3, 4, 2, 5), torch.zeros(8, 2, 6))])


@pytest.mark.gpu
def test_kernel_matches_ref_gpu():
    from marconi.kernels.kv_copy import kv_gather
    g = torch.Generator().manual_seed(11)
    nb, bs, h, d = 64, 16, 8, 128
    lens = [100, 37, 250]
    table = torch.randperm(nb, generator=g)[:3 * 16].reshape(3, 16).to(torch.int32).cuda()
    cu = torch.tensor([0, 100, 137, 387], dtype=torch.int32, device="cuda")
    pairs = [(torch.randn(nb, bs, h, d, generator=g).cuda(),
              torch.full((387, h, d), float("nan"), device="cuda")) for _ in range(4)]
    ref = [(c, w.clone()) for c, w in pairs]
    kv_gather(pairs, table, cu, max(lens))
    kv_gather_ref(ref, table, cu, max(lens))
    for (_, w), (_, r) in zip(pairs, ref):
        assert torch.equal(w, r)

"""pool_copy (Triton, under TRITON_INTERPRET=1 in a child process) against pool_copy_ref."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from marconi.kernels.pool_copy import PoolCopyPlan, pool_copy_plan, pool_copy_ref


@dataclass(frozen=True)
class Case:
    seed: int
    layers: int                 # state pairs per layer: (ssm, conv)
    slots: int
    working: int
    mode: str                   # save | restore | fork
    conv_dtype: torch.dtype = torch.bfloat16
    conv_cols: int = 3          # odd bf16 rows are still word-aligned only if D*cols is even
    strided_pool: bool = False  # pool slots are every other row of a bigger tensor
    padding: bool = False       # some index entries are -1


CASES = {
    "save-2layers": Case(0, 2, 6, 3, "save"),
    "restore-3layers": Case(1, 3, 5, 2, "restore"),
    "fork-inplace": Case(2, 2, 8, 2, "fork"),
    "save-padding": Case(3, 2, 6, 3, "save", padding=True),
    "save-strided-pool": Case(4, 2, 6, 3, "save", strided_pool=True),
    "restore-bytes-path": Case(5, 2, 5, 2, "restore", conv_dtype=torch.int8, conv_cols=3),
}


def _poison(t: torch.Tensor) -> torch.Tensor:
    if t.dtype.is_floating_point:
        return t.fill_(float("nan"))
    return t.fill_(-77)


def _bytes(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.uint8)


def _tensors(case: Case):
    """Working states, pools and the (src, dst) pairs and indices for the case's mode."""
    g = torch.Generator().manual_seed(case.seed)
    heads, p, n, d = 2, 4, 8, 6

    def draw(shape, dtype):
        if dtype.is_floating_point:
            return torch.randn(shape, generator=g).to(dtype)
        return torch.randint(-128, 127, shape, generator=g, dtype=torch.int64).to(dtype)

    work, pool = [], []
    for _ in range(case.layers):
        work += [draw((case.working, heads, p, n), torch.float32),
                 draw((case.working, d, case.conv_cols), case.conv_dtype)]
        for shape, dtype in (((case.slots, heads, p, n), torch.float32),
                             ((case.slots, d, case.conv_cols), case.conv_dtype)):
            if case.strided_pool:
                pool.append(draw((case.slots, 2) + shape[1:], dtype)[:, 1])
            else:
                pool.append(draw(shape, dtype))
    perm = torch.randperm(case.slots, generator=g)
    if case.mode == "save":
        pairs = list(zip(work, pool))
        src = torch.randperm(case.working, generator=g)[:2]
        dst = perm[:2]
    elif case.mode == "restore":
        pairs = list(zip(pool, work))
        src = perm[:2]
        dst = torch.randperm(case.working, generator=g)[:2]
    else:  # fork: pool slots to other pool slots of the same tensors
        pairs = list(zip(pool, pool))
        src, dst = perm[:2], perm[2:5]
        src = torch.cat([src, src[:1]])      # one slot forked twice
    if case.padding:
        src = torch.cat([src, torch.tensor([-1, 1])])
        dst = torch.cat([dst, torch.tensor([0, -1])])
    return pairs, src.to(torch.int32), dst.to(torch.int32)


def check(case: Case) -> dict:
    """Kernel and reference from identical poisoned destinations; bytes must agree exactly."""
    from marconi.kernels.pool_copy import pool_copy

    pairs, src, dst = _tensors(case)
    if case.mode != "fork":
        for _, d in pairs:
            _poison(d)
    ref_pairs = [(s.clone(), d.clone()) for s, d in pairs]
    if case.mode == "fork":
        ref_pairs = [(d, d) for _, d in ref_pairs]
    plan = pool_copy_plan(pairs)
    pool_copy(plan, src, dst, block=16)
    pool_copy_ref(ref_pairs, src, dst)
    mismatched = sum(int((_bytes(d) != _bytes(r)).sum())
                     for (_, d), (_, r) in zip(pairs, ref_pairs))
    return {"mismatched_bytes": mismatched, "word_bytes": plan.word_bytes}


@pytest.fixture(scope="module")
def interpreted(interpreted_files):
    return interpreted_files(__file__)


@pytest.mark.parametrize("case_id", list(CASES))
def test_pool_copy_matches_ref(case_id, interpreted):
    result = interpreted[case_id]
    assert "error" not in result, result.get("error")
    assert result["mismatched_bytes"] == 0
    expected_word = 1 if CASES[case_id].conv_dtype == torch.int8 else 4
    assert result["word_bytes"] == expected_word


@pytest.mark.parametrize("case_id", list(CASES))
def test_pool_copy_ref_matches_loop(case_id):
    """The reference against a row-by-row Python loop (reads all sources before writing)."""
    case = CASES[case_id]
    pairs, src, dst = _tensors(case)
    expected = []
    for s, d in pairs:
        out = d.clone()
        for i, j in zip(src.tolist(), dst.tolist()):
            if i >= 0 and j >= 0:
                out[j] = s[i]
        expected.append(out)
    pool_copy_ref(pairs, src, dst)
    for (_, d), e in zip(pairs, expected):
        assert torch.equal(_bytes(d), _bytes(e))


def test_plan_rejects_mismatched_pair():
    with pytest.raises(ValueError, match=r"pairs\[0\].*same row shape"):
        pool_copy_plan([(torch.zeros(2, 3), torch.zeros(2, 4))])


def test_plan_table_layout():
    a, b = torch.zeros(4, 6), torch.zeros(3, 6)
    plan = pool_copy_plan([(a, b)])
    assert isinstance(plan, PoolCopyPlan)
    base = plan.addresses.base.data_ptr()
    assert plan.word_bytes == 4
    offsets = [(a.data_ptr() - base) // 4, (b.data_ptr() - base) // 4]
    assert plan.table.tolist() == [offsets + [6, 6, 6]]


def test_vector_width_follows_alignment():
    """16-byte aligned rows: 4-word accesses; 8-byte aligned: 2 words; a 6-byte row: bytes."""
    pool = torch.zeros(8, 4, 8)
    assert pool_copy_plan([(pool, pool)]).addresses.vec == 4
    rows = pool.view(8, 32)[:, 2:8]               # 24-byte rows starting 8 bytes in
    assert pool_copy_plan([(rows, rows)]).addresses.vec == 2
    odd = torch.zeros(8, 6, dtype=torch.uint8)
    plan = pool_copy_plan([(odd, odd)])
    assert plan.word_bytes == 1 and plan.addresses.vec == 2


@pytest.mark.gpu
def test_pool_copy_gpu_matches_ref():
    g = torch.Generator().manual_seed(7)
    work = [torch.randn(4, 8, 64, 128, generator=g).cuda() for _ in range(3)]
    pool = [torch.full((16, 8, 64, 128), float("nan"), device="cuda") for _ in range(3)]
    ref = [p.clone() for p in pool]
    src = torch.tensor([0, 3, 1], dtype=torch.int32, device="cuda")
    dst = torch.tensor([5, 0, 9], dtype=torch.int32, device="cuda")
    from marconi.kernels.pool_copy import pool_copy
    pool_copy(list(zip(work, pool)), src, dst)
    pool_copy_ref(list(zip(work, ref)), src, dst)
    for p, r in zip(pool, ref):
        assert torch.equal(p.view(torch.int32), r.view(torch.int32))

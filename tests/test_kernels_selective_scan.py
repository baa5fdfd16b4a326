"""Mamba1 selective scan with checkpoints: the Triton kernel (interpreter, child process)
against `selective_scan_ckpt_ref`, and the reference against the token-by-token recurrence."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from marconi.kernels.checkpoints import checkpoint_table
from marconi.kernels.naive import selective_scan_naive
from marconi.kernels.quant import dequantize_ref
from marconi.kernels.selective_scan import selective_scan_ckpt_ref

CHUNK = 16   # the reference's chunk length in these tests


@dataclass(frozen=True)
class Case:
    seed: int
    T: int
    positions: tuple[tuple[int, ...], ...]
    D: int = 12
    N: int = 8
    h0: bool = True
    dtype: torch.dtype = torch.float32
    int8: bool = False
    strided: bool = False
    block_d: int = 8             # 12 channels in blocks of 8: a partial block


# 0, chunk edges of the reference (16, 32), mid-chunk, two in one chunk (20, 21), T and
# T - 1, a repeat (a fork), unsorted rows.
EDGES = ((0, 16, 20, 21, 40), (39, 5, 32, 32))
CASES = {
    "f32-edges-mid-pair-last": Case(0, 40, EDGES),
    "f32-no-h0": Case(1, 40, EDGES, h0=False),
    "f32-short-T5": Case(2, 5, ((0, 2, 5), (5, 1))),
    "f32-strided-inputs": Case(3, 24, ((8, 24), (12,)), strided=True),
    "bf16-inputs": Case(4, 40, EDGES, dtype=torch.bfloat16),
    "int8-pool": Case(5, 40, EDGES, int8=True),
    "no-checkpoints": Case(6, 20, ((), ())),
}


def _inputs(case: Case):
    g = torch.Generator().manual_seed(case.seed)
    B, T, D, N = len(case.positions), case.T, case.D, case.N
    if case.strided:
        proj = torch.randn(B, T, D + 2 * N + 1, generator=g)
        x, bm, cm, _ = proj.split([D, N, N, 1], dim=-1)
    else:
        x, bm, cm = torch.randn(B, T, D, generator=g), torch.randn(B, T, N, generator=g), \
            torch.randn(B, T, N, generator=g)
    dt = F.softplus(torch.randn(B, T, D, generator=g) - 1.0)
    A = -torch.exp(torch.rand(D, N, generator=g) * 2.0)
    h0 = torch.randn(B, D, N, generator=g) if case.h0 else None
    x, bm, cm = (t.to(case.dtype) for t in (x, bm, cm))
    slots, s = [], 0
    for row in case.positions:
        slots.append(list(range(s, s + len(row))))
        s += len(row)
    table = checkpoint_table([list(r) for r in case.positions], slots, T)
    return dict(x=x, dt=dt, A=A, Bm=bm, Cm=cm, h0=h0), table, slots, s + 2


def _pool(case: Case, n_slots: int):
    """Poisoned pool (and scales); no pool at all for a case without positions."""
    if not any(case.positions):
        return None, None
    if case.int8:
        return (torch.full((n_slots, case.D, case.N), -128, dtype=torch.int8),
                torch.full((n_slots, case.D), float("nan")))
    return torch.full((n_slots, case.D, case.N), float("nan")), None


def _read_pool(pool, scale):
    if pool is None:
        return torch.zeros(0)
    return dequantize_ref(pool, scale) if scale is not None else pool.float()


def check(case: Case) -> dict:
    """Kernel vs reference from poisoned outputs; max abs errors and poison left behind."""
    from marconi.kernels.selective_scan import selective_scan_ckpt

    inputs, table, slots, n_slots = _inputs(case)
    B, T = len(case.positions), case.T
    pool_k, scale_k = _pool(case, n_slots)
    pool_r, scale_r = _pool(case, n_slots)
    out = (torch.full((B, T, case.D), float("nan")).to(case.dtype),
           torch.full((B, case.D, case.N), float("nan")))
    y_k, h_k = selective_scan_ckpt(**inputs, ckpt_pos=table.pos, ckpt_slot=table.slot,
                                   ckpt_pool=pool_k, ckpt_scale=scale_k, block_d=case.block_d,
                                   out=out)
    y_r, h_r = selective_scan_ckpt_ref(**inputs, ckpt_pos=table.pos, ckpt_slot=table.slot,
                                       ckpt_pool=pool_r, ckpt_scale=scale_r, chunk=CHUNK)
    used = [s for row in slots for s in row]
    unused = [s for s in range(n_slots) if s not in used]
    got, want = _read_pool(pool_k, scale_k)[used], _read_pool(pool_r, scale_r)[used]
    return {
        "y_err": float((y_k.float() - y_r.float()).abs().max()),
        "h_err": float((h_k.float() - h_r.float()).abs().max()),
        "pool_err": float((got - want).abs().max()) if used else 0.0,
        "pool_tol_extra": float(scale_r[used].max()) if case.int8 else 0.0,
        "nan_left": bool(y_k.float().isnan().any() or h_k.isnan().any() or got.isnan().any()),
        "unused_untouched": pool_k is None or (bool((pool_k[unused] == -128).all()) if case.int8
                                               else bool(pool_k[unused].isnan().all())),
        "scale": float(y_r.float().abs().max()),
    }


@pytest.fixture(scope="module")
def interpreted(interpreted_files):
    return interpreted_files(__file__)


@pytest.mark.parametrize("case_id", list(CASES))
def test_kernel_matches_ref(case_id, interpreted):
    case, r = CASES[case_id], interpreted[case_id]
    assert "error" not in r, r.get("error")
    tol = 2e-2 if case.dtype == torch.bfloat16 else 1e-4
    assert not r["nan_left"] and r["unused_untouched"]
    assert r["y_err"] <= tol * max(1.0, r["scale"])
    assert r["h_err"] <= tol * 10
    assert r["pool_err"] <= tol * 10 + 1.01 * r["pool_tol_extra"]


@pytest.mark.parametrize("case_id", list(CASES))
def test_ref_matches_token_loop(case_id):
    case = CASES[case_id]
    inputs, table, slots, n_slots = _inputs(case)
    pool, scale = _pool(case, n_slots)
    y, h = selective_scan_ckpt_ref(**inputs, ckpt_pos=table.pos, ckpt_slot=table.slot,
                                   ckpt_pool=pool, ckpt_scale=scale, chunk=CHUNK)
    h0 = inputs["h0"] if inputs["h0"] is not None else torch.zeros(len(slots), case.D, case.N)
    y_n, h_n, states = selective_scan_naive(inputs["x"], inputs["dt"], inputs["A"], inputs["Bm"],
                                            inputs["Cm"], h0, case.positions)
    y_tol = 2e-2 if case.dtype == torch.bfloat16 else 1e-4
    torch.testing.assert_close(y.float(), y_n.to(y.dtype).float(), atol=y_tol, rtol=y_tol)
    torch.testing.assert_close(h, h_n, atol=1e-4, rtol=1e-4)
    read = _read_pool(pool, scale)
    for b, row in enumerate(slots):
        for k, s in enumerate(row):
            want = states[b][k]
            if case.int8:   # quantization error is at most half a step per channel
                bound = scale[s][..., None] / 2 + 1e-6 * want.abs().max()
                assert ((read[s] - want).abs() <= bound).all()
            else:
                torch.testing.assert_close(read[s], want, atol=1e-4, rtol=1e-4)


@pytest.mark.gpu
def test_kernel_matches_ref_gpu():
    from marconi.kernels.selective_scan import selective_scan_ckpt
    g = torch.Generator().manual_seed(3)
    B, T, D, N = 2, 300, 256, 16
    x, bm, cm = torch.randn(B, T, D, generator=g), torch.randn(B, T, N, generator=g), \
        torch.randn(B, T, N, generator=g)
    dt = F.softplus(torch.randn(B, T, D, generator=g) - 1)
    A = -torch.exp(torch.rand(D, N, generator=g))
    h0 = torch.randn(B, D, N, generator=g)
    x, bm, cm, dt, A, h0 = (t.cuda() for t in (x, bm, cm, dt, A, h0))
    table = checkpoint_table([[0, 64, 100, 101, T], [T - 1, 33]], [[0, 1, 2, 3, 4], [5, 6]], T,
                             "cuda")
    pools = [torch.full((8, D, N), float("nan"), device="cuda") for _ in range(2)]
    y_k, h_k = selective_scan_ckpt(x, dt, A, bm, cm, h0, table.pos, table.slot, pools[0])
    y_r, h_r = selective_scan_ckpt_ref(x, dt, A, bm, cm, h0, table.pos, table.slot, pools[1])
    torch.testing.assert_close(y_k, y_r, atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(h_k, h_r, atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(pools[0][:7], pools[1][:7], atol=1e-3, rtol=1e-3)

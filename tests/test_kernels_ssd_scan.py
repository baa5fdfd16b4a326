"""Mamba2 scan with checkpoints: the Triton kernel (interpreter, child process) against
`ssd_scan_ckpt_ref`, and the reference against the token-by-token recurrence."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from marconi.kernels.checkpoints import checkpoint_table
from marconi.kernels.naive import ssd_scan_naive
from marconi.kernels.quant import dequantize_ref
from marconi.kernels.ssd_scan import ssd_scan_ckpt_ref

CHUNK = 16   # the kernel's block_q and the reference's chunk in these tests


@dataclass(frozen=True)
class Case:
    seed: int
    T: int
    positions: tuple[tuple[int, ...], ...]      # per sequence, in the order given to the table
    H: int = 4
    P: int = 16
    G: int = 2
    N: int = 16
    h0: bool = True
    dtype: torch.dtype = torch.float32
    int8: bool = False
    strided: bool = False                        # x, B, C are views into one projection


# Positions: 0, chunk edges (16, 32), mid-chunk (5, 20), two in one chunk (20, 21),
# the last token (T) and the one before (T - 1), a repeat (a fork), unsorted rows.
EDGES = ((0, 16, 20, 21, 40), (39, 5, 32, 32))
CASES = {
    "f32-edges-mid-pair-last": Case(0, 40, EDGES),
    "f32-no-h0-groups1": Case(1, 40, EDGES, G=1, h0=False),
    "f32-short-T7": Case(2, 7, ((0, 3, 7), (7, 1))),
    "f32-T32-exact-chunks": Case(3, 32, ((16, 32), (0, 31, 17))),
    "f32-strided-inputs": Case(4, 24, ((8, 24), (12,)), strided=True),
    "bf16-inputs": Case(5, 40, EDGES, dtype=torch.bfloat16),
    "int8-pool": Case(6, 40, EDGES, int8=True),
    "no-checkpoints": Case(7, 20, ((), ())),
}


def _inputs(case: Case):
    g = torch.Generator().manual_seed(case.seed)
    B, T, H, P, G, N = len(case.positions), case.T, case.H, case.P, case.G, case.N
    if case.strided:
        proj = torch.randn(B, T, H * P + 2 * G * N + 3, generator=g)
        x, bm, cm, _ = proj.split([H * P, G * N, G * N, 3], dim=-1)
        x, bm, cm = x.reshape(B, T, H, P), bm.reshape(B, T, G, N), cm.reshape(B, T, G, N)
    else:
        x = torch.randn(B, T, H, P, generator=g)
        bm, cm = torch.randn(B, T, G, N, generator=g), torch.randn(B, T, G, N, generator=g)
    dt = F.softplus(torch.randn(B, T, H, generator=g) - 1.0)
    A = -torch.exp(torch.rand(H, generator=g) * 2.0)
    h0 = torch.randn(B, H, P, N, generator=g) if case.h0 else None
    x, bm, cm = (t.to(case.dtype) for t in (x, bm, cm))
    slots, s = [], 0
    for row in case.positions:
        slots.append(list(range(s, s + len(row))))
        s += len(row)
    table = checkpoint_table([list(r) for r in case.positions], slots, T)
    n_slots = s + 2                                  # two slots no entry names: must stay poisoned
    return dict(x=x, dt=dt, A=A, Bm=bm, Cm=cm, h0=h0), table, slots, n_slots


def _pool(case: Case, n_slots: int):
    """Poisoned pool (and scales); no pool at all for a case without positions."""
    if not any(case.positions):
        return None, None
    if case.int8:
        return (torch.full((n_slots, case.H, case.P, case.N), -128, dtype=torch.int8),
                torch.full((n_slots, case.H, case.P), float("nan")))
    return torch.full((n_slots, case.H, case.P, case.N), float("nan")), None


def _read_pool(pool, scale):
    if pool is None:
        return torch.zeros(0)
    return dequantize_ref(pool, scale) if scale is not None else pool.float()


def check(case: Case) -> dict:
    """Kernel vs reference from poisoned outputs; max abs errors and poison left behind."""
    from marconi.kernels.ssd_scan import ssd_scan_ckpt

    inputs, table, slots, n_slots = _inputs(case)
    B, T = len(case.positions), case.T
    pool_k, scale_k = _pool(case, n_slots)
    pool_r, scale_r = _pool(case, n_slots)
    out = (torch.full((B, T, case.H, case.P), float("nan")).to(case.dtype),
           torch.full((B, case.H, case.P, case.N), float("nan")))
    y_k, h_k = ssd_scan_ckpt(**inputs, ckpt_pos=table.pos, ckpt_slot=table.slot, ckpt_pool=pool_k,
                             ckpt_scale=scale_k, block_q=CHUNK, block_p=16, out=out)
    y_r, h_r = ssd_scan_ckpt_ref(**inputs, ckpt_pos=table.pos, ckpt_slot=table.slot,
                                 ckpt_pool=pool_r, ckpt_scale=scale_r, chunk=CHUNK)
    used = [s for row in slots for s in row]
    unused = [s for s in range(n_slots) if s not in used]
    got, want = _read_pool(pool_k, scale_k)[used], _read_pool(pool_r, scale_r)[used]
    scale_tol = float(scale_r[used].max()) if case.int8 else 0.0
    return {
        "y_err": float((y_k.float() - y_r.float()).abs().max()),
        "h_err": float((h_k.float() - h_r.float()).abs().max()),
        "pool_err": float((got - want).abs().max()) if used else 0.0,
        "pool_tol_extra": scale_tol,               # int8: one quantization step either way
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
    y, h = ssd_scan_ckpt_ref(**inputs, ckpt_pos=table.pos, ckpt_slot=table.slot, ckpt_pool=pool,
                             ckpt_scale=scale, chunk=CHUNK)
    h0 = inputs["h0"]
    if h0 is None:
        h0 = torch.zeros(len(slots), case.H, case.P, case.N)
    y_n, h_n, states = ssd_scan_naive(inputs["x"], inputs["dt"], inputs["A"], inputs["Bm"],
                                      inputs["Cm"], h0, case.positions)
    y_tol = 2e-2 if case.dtype == torch.bfloat16 else 1e-4
    torch.testing.assert_close(y.float(), y_n.to(y.dtype).float(), atol=y_tol, rtol=y_tol)
    torch.testing.assert_close(h, h_n, atol=1e-4, rtol=1e-4)
    read = _read_pool(pool, scale)
    for b, row in enumerate(slots):
        for k, s in enumerate(row):
            want = states[b][k]
            if case.int8:   # quantization error is at most half a step per channel
                step = scale[s][..., None]
                assert ((read[s] - want).abs() <= step / 2 + 1e-6 * want.abs().max()).all()
            else:
                torch.testing.assert_close(read[s], want, atol=1e-4, rtol=1e-4)


def test_out_of_range_entries_are_ignored():
    """Entries the table builder would reject (negative slot, position > T) write nothing."""
    case = CASES["f32-short-T7"]
    inputs, _, _, _ = _inputs(case)
    pool = torch.full((3, case.H, case.P, case.N), float("nan"))
    pos = torch.tensor([[9, 2], [1, -1]], dtype=torch.int32)
    slot = torch.tensor([[0, -1], [1, 2]], dtype=torch.int32)
    ssd_scan_ckpt_ref(**inputs, ckpt_pos=pos, ckpt_slot=slot, ckpt_pool=pool, chunk=CHUNK)
    assert pool[0].isnan().all() and pool[2].isnan().all() and not pool[1].isnan().any()


def test_table_builder_rejects_bad_position():
    expected = r"row 0: position 9: out of range; expected 0 <= position <= 7"
    with pytest.raises(ValueError, match=expected):
        checkpoint_table([[9]], [[0]], 7)


@pytest.mark.gpu
@pytest.mark.parametrize("T, dtype", [pytest.param(1000, torch.float32, id="T1000-f32"),
                                      pytest.param(64, torch.float32, id="T64-f32"),
                                      pytest.param(777, torch.bfloat16, id="T777-bf16")])
def test_kernel_matches_ref_gpu(T, dtype):
    from marconi.kernels.ssd_scan import ssd_scan_ckpt
    g = torch.Generator().manual_seed(T)
    B, H, P, G, N = 2, 8, 64, 1, 128
    x = torch.randn(B, T, H, P, generator=g).to("cuda", dtype)
    dt = F.softplus(torch.randn(B, T, H, generator=g) - 1).cuda()
    A = -torch.exp(torch.rand(H, generator=g)).cuda()
    bm, cm = (torch.randn(B, T, G, N, generator=g).to("cuda", dtype) for _ in range(2))
    h0 = torch.randn(B, H, P, N, generator=g).cuda()
    table = checkpoint_table([[0, 16, T // 2, T // 2 + 1, T], [T - 1, 33]],
                             [[0, 1, 2, 3, 4], [5, 6]], T, "cuda")
    pools = [torch.full((8, H, P, N), float("nan"), device="cuda") for _ in range(2)]
    y_k, h_k = ssd_scan_ckpt(x, dt, A, bm, cm, h0, table.pos, table.slot, pools[0])
    y_r, h_r = ssd_scan_ckpt_ref(x, dt, A, bm, cm, h0, table.pos, table.slot, pools[1])
    # tl.dot runs in tf32 (float32 inputs) or bf16 (bf16 inputs) on the GPU
    y_scale, h_scale = y_r.float().abs().max().item(), h_r.abs().max().item()
    torch.testing.assert_close(y_k.float(), y_r.float(), atol=5e-2 * y_scale, rtol=5e-2)
    torch.testing.assert_close(h_k, h_r, atol=5e-2 * h_scale, rtol=5e-2)
    torch.testing.assert_close(pools[0][:7], pools[1][:7], atol=5e-2 * h_scale, rtol=5e-2)

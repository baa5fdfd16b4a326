"""Causal conv1d with conv-state checkpoints: the Triton kernel (interpreter, child process)
against `causal_conv1d_ckpt_ref`, the reference against a token loop, and against the
reference model's `CausalConv` module (the semantics passes/ uses)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from marconi.kernels.causal_conv import causal_conv1d_ckpt_ref
from marconi.kernels.checkpoints import checkpoint_table
from marconi.kernels.naive import causal_conv1d_naive

BLOCK_T = 16   # the kernel's time tile in these tests


@dataclass(frozen=True)
class Case:
    seed: int
    T: int
    positions: tuple[tuple[int, ...], ...]
    C: int = 12
    W: int = 4
    bias: bool = True
    state: bool = True
    silu: bool = False
    dtype: torch.dtype = torch.float32
    strided: bool = False


# 0, 1 and 2 (the state still holds carried inputs), tile edges (16, 32), mid-tile,
# two in one tile (20, 21), T and T - 1, a repeat, unsorted rows.
EDGES = ((0, 1, 2, 16, 20, 21, 40), (39, 5, 32, 32))
CASES = {
    "f32-edges-mid-pair-last": Case(0, 40, EDGES),
    "f32-silu-no-bias": Case(1, 40, EDGES, bias=False, silu=True),
    "f32-no-state": Case(2, 40, EDGES, state=False),
    "f32-short-T2-W4": Case(3, 2, ((0, 1, 2), (2,))),
    "f32-W2": Case(4, 20, ((0, 16, 20), (3,)), W=2),
    "f32-strided-x": Case(5, 24, ((8, 24), (12, 0)), strided=True),
    "bf16": Case(6, 40, EDGES, dtype=torch.bfloat16),
    "no-checkpoints": Case(7, 20, ((), ())),
}


def _inputs(case: Case):
    g = torch.Generator().manual_seed(case.seed)
    B, T, C, W = len(case.positions), case.T, case.C, case.W
    if case.strided:
        x = torch.randn(B, T, 2 * C, generator=g)[..., ::2]
    else:
        x = torch.randn(B, T, C, generator=g)
    weight = torch.randn(C, 1, W, generator=g) / W
    bias = torch.randn(C, generator=g) if case.bias else None
    state = torch.randn(B, C, W - 1, generator=g) if case.state else None
    x = x.to(case.dtype)
    state = state.to(case.dtype) if state is not None else None
    slots, s = [], 0
    for row in case.positions:
        slots.append(list(range(s, s + len(row))))
        s += len(row)
    table = checkpoint_table([list(r) for r in case.positions], slots, T)
    return dict(x=x, weight=weight, bias=bias, state=state), table, slots, s + 2


def _pool(case: Case, n_slots: int):
    if not any(case.positions):
        return None
    return torch.full((n_slots, case.C, case.W - 1), float("nan")).to(case.dtype)


def check(case: Case) -> dict:
    """Kernel vs reference from poisoned outputs; max abs errors and poison left behind."""
    from marconi.kernels.causal_conv import causal_conv1d_ckpt

    inputs, table, slots, n_slots = _inputs(case)
    B, T = len(case.positions), case.T
    pool_k, pool_r = _pool(case, n_slots), _pool(case, n_slots)
    out = (torch.full((B, T, case.C), float("nan")).to(case.dtype),
           torch.full((B, case.C, case.W - 1), float("nan")).to(case.dtype))
    y_k, s_k = causal_conv1d_ckpt(**inputs, ckpt_pos=table.pos, ckpt_slot=table.slot,
                                  ckpt_pool=pool_k,
                                  silu=case.silu, block_t=BLOCK_T, block_c=8, out=out)
    y_r, s_r = causal_conv1d_ckpt_ref(**inputs, ckpt_pos=table.pos, ckpt_slot=table.slot,
                                      ckpt_pool=pool_r, silu=case.silu)
    used = [s for row in slots for s in row]
    unused = [s for s in range(n_slots) if s not in used]
    pool_err = float((pool_k[used].float() - pool_r[used].float()).abs().max()) if used else 0.0
    return {
        "y_err": float((y_k.float() - y_r.float()).abs().max()),
        "state_err": float((s_k.float() - s_r.float()).abs().max()),
        "pool_err": pool_err,
        "nan_left": bool(y_k.float().isnan().any() or s_k.float().isnan().any()
                         or (pool_k is not None and pool_k[used].float().isnan().any())),
        "unused_untouched": pool_k is None or bool(pool_k[unused].float().isnan().all()),
    }


@pytest.fixture(scope="module")
def interpreted(interpreted_files):
    return interpreted_files(__file__)


@pytest.mark.parametrize("case_id", list(CASES))
def test_kernel_matches_ref(case_id, interpreted):
    case, r = CASES[case_id], interpreted[case_id]
    assert "error" not in r, r.get("error")
    tol = 2e-2 if case.dtype == torch.bfloat16 else 1e-5
    assert not r["nan_left"] and r["unused_untouched"]
    assert r["y_err"] <= tol
    assert r["state_err"] == 0.0 and r["pool_err"] == 0.0    # states are copies of inputs


@pytest.mark.parametrize("case_id", list(CASES))
def test_ref_matches_token_loop(case_id):
    case = CASES[case_id]
    inputs, table, slots, n_slots = _inputs(case)
    pool = _pool(case, n_slots)
    y, s = causal_conv1d_ckpt_ref(**inputs, ckpt_pos=table.pos, ckpt_slot=table.slot,
                                  ckpt_pool=pool,
                                  silu=case.silu)
    state = inputs["state"]
    if state is None:
        state = torch.zeros(len(slots), case.C, case.W - 1)
    y_n, s_n, states = causal_conv1d_naive(inputs["x"], inputs["weight"][:, 0], inputs["bias"],
                                           state, case.positions, silu=case.silu)
    tol = 2e-2 if case.dtype == torch.bfloat16 else 1e-5
    torch.testing.assert_close(y.float(), y_n.to(y.dtype).float(), atol=tol, rtol=tol)
    torch.testing.assert_close(s.float(), s_n, atol=0, rtol=0)
    for b, row in enumerate(slots):
        for k, slot in enumerate(row):
            torch.testing.assert_close(pool[slot].float(), states[b][k], atol=0, rtol=0)


def test_ref_matches_reference_model_conv():
    """Same numbers as passes' CausalConv module (the reference model's conv)."""
    from marconi.passes.ref_common import CausalConv
    torch.manual_seed(0)
    conv = CausalConv(10, 4)
    with torch.no_grad():
        conv.bias.normal_()
    x, state = torch.randn(2, 9, 10), torch.randn(2, 10, 3)
    with torch.no_grad():
        y_m, s_m = conv(x, state)
        y_r, s_r = causal_conv1d_ckpt_ref(x, conv.weight, conv.bias, state)
    torch.testing.assert_close(y_r, y_m, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(s_r, s_m, atol=0, rtol=0)


@pytest.mark.gpu
def test_kernel_matches_ref_gpu():
    from marconi.kernels.causal_conv import causal_conv1d_ckpt
    g = torch.Generator().manual_seed(5)
    B, T, C, W = 2, 333, 1000, 4
    x = torch.randn(B, T, C, generator=g).cuda()
    weight, bias = torch.randn(C, W, generator=g).cuda(), torch.randn(C, generator=g).cuda()
    state = torch.randn(B, C, W - 1, generator=g).cuda()
    table = checkpoint_table([[0, 1, 64, 100, 101, T], [T - 1, 33]],
                             [[0, 1, 2, 3, 4, 5], [6, 7]], T, "cuda")
    pools = [torch.full((9, C, W - 1), float("nan"), device="cuda") for _ in range(2)]
    y_k, s_k = causal_conv1d_ckpt(x, weight, bias, state, table.pos, table.slot, pools[0],
                                  silu=True)
    y_r, s_r = causal_conv1d_ckpt_ref(x, weight, bias, state, table.pos, table.slot, pools[1],
                                      silu=True)
    torch.testing.assert_close(y_k, y_r, atol=1e-4, rtol=1e-4)
    assert torch.equal(s_k, s_r) and torch.equal(pools[0][:8], pools[1][:8])

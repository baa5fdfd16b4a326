"""int8 state storage: save/restore kernels (interpreter, child process) against the
references, and the quantization formula against its closed-form error bound."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from marconi.kernels.quant import (dequantize_ref, dequantize_states_ref, quantize_ref,
                                   quantize_states_ref)


@dataclass(frozen=True)
class Case:
    seed: int
    state_shape: tuple[int, ...]   # channels..., N
    rows: int = 3                  # working states
    slots: int = 5
    zero_channel: bool = False     # one channel all zero: scale 0, restores 0
    padding: bool = False


CASES = {
    "mamba2-HPN": Case(0, (2, 8, 16)),
    "mamba1-DN-odd": Case(1, (12, 5)),
    "zero-channel": Case(2, (4, 16), zero_channel=True),
    "padding-entries": Case(3, (3, 8), padding=True),
}


def _setup(case: Case):
    g = torch.Generator().manual_seed(case.seed)
    states = torch.randn((case.rows,) + case.state_shape, generator=g) * 3
    if case.zero_channel:
        states[1, 2] = 0.0
    src = torch.tensor([2, 0, 1], dtype=torch.int32)
    dst = torch.tensor([4, 1, 2], dtype=torch.int32)
    if case.padding:
        src, dst = torch.cat([src, torch.tensor([-1, 0], dtype=torch.int32)]), \
            torch.cat([dst, torch.tensor([0, -1], dtype=torch.int32)])
    q = torch.full((case.slots,) + case.state_shape, -128, dtype=torch.int8)
    scale = torch.full((case.slots,) + case.state_shape[:-1], float("nan"))
    return states, src, dst, q, scale


def check(case: Case) -> dict:
    """Save with the kernel and the reference into poisoned pools, restore into poisoned states."""
    from marconi.kernels.quant import dequantize_states, quantize_states

    states, src, dst, q_k, s_k = _setup(case)
    _, _, _, q_r, s_r = _setup(case)
    quantize_states(states, src, q_k, s_k, dst, block_c=4)
    quantize_states_ref(states, src, q_r, s_r, dst)
    back_k = torch.full_like(states, float("nan"))
    back_r = torch.full_like(states, float("nan"))
    dequantize_states(q_k, s_k, dst, back_k, src, block_c=4)
    dequantize_states_ref(q_r, s_r, dst, back_r, src)
    return {
        "q_diff": int((q_k.int() - q_r.int()).abs().max()),
        "scale_equal": bool(torch.equal(s_k.nan_to_num(-1.0), s_r.nan_to_num(-1.0))),
        "restore_equal": bool(torch.equal(back_k.nan_to_num(7.0), back_r.nan_to_num(7.0))),
        "restored_rows": int((~back_k.isnan()).flatten(1).all(1).sum()),
    }


@pytest.fixture(scope="module")
def interpreted(interpreted_files):
    return interpreted_files(__file__)


@pytest.mark.parametrize("case_id", list(CASES))
def test_kernels_match_ref(case_id, interpreted):
    r = interpreted[case_id]
    assert "error" not in r, r.get("error")
    assert r["q_diff"] == 0 and r["scale_equal"] and r["restore_equal"]
    assert r["restored_rows"] == 3


@pytest.mark.parametrize("case_id", list(CASES))
def test_quantization_error_bound(case_id):
    """|h - deq(q(h))| <= scale / 2 per channel, with scale = absmax / 127."""
    states, *_ = _setup(CASES[case_id])
    q, scale = quantize_ref(states)
    assert q.dtype == torch.int8 and int(q.abs().max()) <= 127
    torch.testing.assert_close(scale, states.abs().amax(-1) / 127)
    err = (dequantize_ref(q, scale) - states).abs()
    assert (err <= scale[..., None] / 2 + 1e-6 * states.abs().amax(-1, keepdim=True)).all()


def test_zero_channel_restores_zero():
    states, src, dst, q, scale = _setup(CASES["zero-channel"])
    quantize_states_ref(states, src, q, scale, dst)
    back = torch.full_like(states, float("nan"))
    dequantize_states_ref(q, scale, dst, back, src)
    assert scale[2, 2] == 0 and (back[1, 2] == 0).all()


def test_rejects_float_pool():
    states, src, dst, _, scale = _setup(CASES["mamba1-DN-odd"])
    with pytest.raises(ValueError, match="expected int8 and float32"):
        quantize_states_ref(states, src, torch.zeros(5, 12, 5), scale, dst)

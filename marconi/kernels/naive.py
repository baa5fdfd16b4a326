"""Obviously-correct token-by-token recurrences, the oracles of the `*_ref` functions.

Each runs the recurrence one token at a time and takes a copy of the state whenever the
number of tokens consumed equals a requested position. They return the states rather than
writing a pool, so a test compares them with what a reference or a kernel wrote.
`positions[b]` lists the positions wanted for sequence b (any order, repeats allowed).
"""

from __future__ import annotations

from typing import Sequence

import torch


def _capture(positions: Sequence[Sequence[int]], b: int, t: int, state: torch.Tensor,
             out: list[list[torch.Tensor | None]]) -> None:
    for k, p in enumerate(positions[b]):
        if p == t:
            out[b][k] = state.clone()


def ssd_scan_naive(x, dt, A, Bm, Cm, h0, positions):
    """Mamba2: h_t = exp(dt_t A) h_{t-1} + (dt_t x_t) ⊗ B_t; y_t = h_t C_t; head h reads
    group h // (H/G).

    x [B, T, H, P]; dt [B, T, H]; A [H]; Bm, Cm [B, T, G, N]; h0 [B, H, P, N].
    Returns y [B, T, H, P] float32, h_T [B, H, P, N] float32, states[b][k] [H, P, N].
    """
    b_, T, H, P = x.shape
    rep = H // Bm.shape[2]
    y = torch.zeros(b_, T, H, P, dtype=torch.float32)
    states = [[None] * len(ps) for ps in positions]
    finals = []
    for b in range(b_):
        h = h0[b].float().clone()
        _capture(positions, b, 0, h, states)
        for t in range(T):
            for hd in range(H):
                g = hd // rep
                step = dt[b, t, hd].float()
                h[hd] = (torch.exp(step * A[hd].float()) * h[hd]
                         + step * torch.outer(x[b, t, hd].float(), Bm[b, t, g].float()))
                y[b, t, hd] = h[hd] @ Cm[b, t, g].float()
            _capture(positions, b, t + 1, h, states)
        finals.append(h)
    return y, torch.stack(finals), states


def selective_scan_naive(x, dt, A, Bm, Cm, h0, positions):
    """Mamba1: h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t (per channel d); y_t = h_t C_t.

    x, dt [B, T, D]; A [D, N]; Bm, Cm [B, T, N]; h0 [B, D, N].
    Returns y [B, T, D] float32, h_T [B, D, N] float32, states[b][k] [D, N].
    """
    b_, T, D = x.shape
    y = torch.zeros(b_, T, D, dtype=torch.float32)
    states = [[None] * len(ps) for ps in positions]
    finals = []
    for b in range(b_):
        h = h0[b].float().clone()
        _capture(positions, b, 0, h, states)
        for t in range(T):
            for d in range(D):
                step = dt[b, t, d].float()
                h[d] = (torch.exp(step * A[d].float()) * h[d]
                        + step * x[b, t, d].float() * Bm[b, t].float())
                y[b, t, d] = h[d] @ Cm[b, t].float()
            _capture(positions, b, t + 1, h, states)
        finals.append(h)
    return y, torch.stack(finals), states


def _stack(window: list[torch.Tensor], channels: int) -> torch.Tensor:
    return torch.stack(window, dim=-1) if window else torch.zeros(channels, 0)


def causal_conv1d_naive(x, weight, bias, state, positions, silu: bool = False):
    """Depthwise causal conv: y_t[c] = bias[c] + sum_j w[c, j] u[t - (W-1) + j][c], where u is
    the W-1 carried inputs (state) followed by x; the state after p tokens is u's last W-1
    inputs at that point.

    x [B, T, C]; weight [C, W]; bias [C] or None; state [B, C, W-1].
    Returns y [B, T, C] float32, final state [B, C, W-1] float32, states[b][k] [C, W-1].
    """
    b_, T, C = x.shape
    W = weight.shape[-1]
    y = torch.zeros(b_, T, C, dtype=torch.float32)
    states = [[None] * len(ps) for ps in positions]
    finals = []
    for b in range(b_):
        window = [state[b, :, j].float() for j in range(W - 1)]          # oldest first
        _capture(positions, b, 0, _stack(window, C), states)
        for t in range(T):
            taps = window + [x[b, t].float()]
            out = sum(weight[:, j].float() * taps[j] for j in range(W))
            if bias is not None:
                out = out + bias.float()
            y[b, t] = out * torch.sigmoid(out) if silu else out
            window = taps[1:]
            _capture(positions, b, t + 1, _stack(window, C), states)
        finals.append(_stack(window, C))
    return y, torch.stack(finals), states

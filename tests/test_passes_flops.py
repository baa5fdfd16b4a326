"""FLOP polynomials: exact fit, FlopCounterMode agreement, and the Marconi paper's forms.

Deliberate differences from the paper's closed forms (arXiv 2411.19379 App. A, the
simulator's utils.py), also in docs/passes.md:
- attention: the paper counts dense scores, 8LD² + 4L²D; a causal kernel computes the
  L(L+1)/2 visible entries only, so we count 8LD² + 2L²D + 2LD (half the score matrix
  plus its diagonal);
- Mamba: the paper's 12LD² + 16LDN + 10LD is Mamba1's; the 7B spec is Mamba2. The
  projection term 12LD² is the same computation and matches exactly; the rest is the
  Mamba2 in_proj's B, C, dt columns, the conv and the SSD recurrence, checked against its
  own closed form below.
"""

import random

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from marconi.layers import LayerKind
from marconi.passes import build_cost_model
from marconi.passes.analyze import ReferenceRunner
from marconi.passes.cost_model import FlopPoly, causal_entries
from marconi.passes.fit import FIT_POINTS, FitError, fit_poly
from marconi.passes.ops import register_cpu_sdpa_formula
from marconi.passes.reference_model import build
from marconi.spec import load_model, parse_spec

from helpers import EXAMPLES


pytestmark = pytest.mark.usefixtures("one_torch_thread")

D, N = 4096, 128
L_VALUES = [1, 17, 1000, 32768]


@pytest.fixture(scope="module")
def marconi7b():
    spec = load_model(EXAMPLES / "marconi-7b-hybrid.yaml")
    return spec, build_cost_model(spec)


def _one(cost, kind):
    layers = [l for l in cost.layers if l.kind is kind]
    assert layers and all(l.flops == layers[0].flops for l in layers)
    return layers[0]


@pytest.mark.parametrize("L", L_VALUES, ids=lambda L: f"L{L}")
def test_mlp_matches_paper_16LD2(marconi7b, L):
    _, cost = marconi7b
    assert _one(cost, LayerKind.MLP).prefill_flops(L, 0) == 16 * L * D * D


@pytest.mark.parametrize("L", L_VALUES, ids=lambda L: f"L{L}")
def test_attention_is_paper_form_with_causal_halving(marconi7b, L):
    _, cost = marconi7b
    attn = _one(cost, LayerKind.ATTENTION)
    paper_dense = 8 * L * D * D + 4 * L * L * D
    # causal: the 4L²D dense score term becomes 4D · L(L+1)/2
    assert attn.prefill_flops(L, 0) == paper_dense - 4 * L * L * D + 4 * D * L * (L + 1) // 2
    assert attn.flops.c_nn * 2 == 4 * D                      # half the dense n² coefficient
    assert attn.flops.c_np == 4 * D                          # new tokens × cached keys: dense


@pytest.mark.parametrize("L", L_VALUES, ids=lambda L: f"L{L}")
def test_mamba2_projection_term_is_paper_12LD2(marconi7b, L):
    spec, cost = marconi7b
    m = next(l.params for l in spec.layers if l.kind is LayerKind.MAMBA2)
    H, P, G, W = m.n_heads, m.head_dim, m.n_groups, m.d_conv
    conv_dim = m.d_inner + 2 * G * N
    ours = (12 * L * D * D                                   # in_proj z, x + out_proj: paper's
            + 2 * L * D * (2 * G * N + H)                    # in_proj B, C, dt columns
            + 2 * L * conv_dim * W                           # depthwise causal conv
            + L * H * (P * (5 * N + 1) + 1))                 # SSD recurrence (ops.ssd_scan)
    assert _one(cost, LayerKind.MAMBA2).prefill_flops(L, 0) == ours
    paper_mamba1 = 12 * L * D * D + 16 * L * D * N + 10 * L * D
    assert abs(ours - paper_mamba1) / paper_mamba1 < 0.05   # same order: 12LD² dominates


@pytest.mark.parametrize("n,p", [(512, 0), (300, 2000)])
def test_full_size_total_matches_flop_counter_on_meta_model(marconi7b, n, p):
    spec, cost = marconi7b
    counted = sum(ReferenceRunner(spec).layer_flops(n, p).values())
    assert abs(cost.prefill_flops(n, p) - counted) <= 0.01 * counted
    assert cost.prefill_flops(n, p) == counted               # in fact exact


def test_saved_flops_is_prefill_difference(marconi7b):
    _, cost = marconi7b
    p, n = 3000, 200
    saved = cost.saved_flops(p, n)
    assert saved == cost.prefill_flops(p + n, 0) - cost.prefill_flops(n, p)
    # every layer's linear part of the p prefix tokens, plus attention's p²-ish scores
    linear = cost.flops.c_n * p
    assert saved == pytest.approx(linear + cost.flops.c_nn * p * p, rel=1e-12)


# ---------------------------------------------------------------- fit

@pytest.mark.parametrize("seed", range(5))
def test_fit_recovers_random_polynomial_exactly(seed):
    rng = random.Random(seed)
    truth = FlopPoly(*(rng.randrange(0, 10 ** 9) for _ in range(6)))
    samples = {pt: int(truth(*pt)) for pt in FIT_POINTS + ((7, 3), (2, 9))}
    assert fit_poly(samples) == truth


def test_fit_rejects_cubic():
    samples = {(n, p): n ** 3 + p for n, p in FIT_POINTS + ((5, 2),)}
    with pytest.raises(FitError, match="n=5, p=2"):
        fit_poly(samples)


# ---------------------------------------------------------------- attention counting

@pytest.mark.parametrize("t,s", [(5, 5), (3, 8), (8, 3)])
def test_cpu_sdpa_formula_counts_causal_half(t, s):
    register_cpu_sdpa_formula()
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 2, t, 8, generator=g)
    k, v = torch.randn(1, 2, s, 8, generator=g), torch.randn(1, 2, s, 8, generator=g)
    with FlopCounterMode(display=False) as dense:
        F.scaled_dot_product_attention(q, k, v)
    with FlopCounterMode(display=False) as causal:
        F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert dense.get_total_flops() == sdpa_flop_count(q.shape, k.shape, v.shape)
    visible = sum(min(i + 1, s) for i in range(t))            # top-left aligned mask
    assert causal.get_total_flops() == 2 * 2 * (8 + 8) * visible


@pytest.mark.parametrize("n,p", [(1, 0), (3, 9), (20, 30), (2, 4), (12, 0), (1, 200)])
def test_sliding_window_flops_beyond_the_window(n, p):
    spec = parse_spec({"name": "w", "d_model": 32, "vocab_size": 64, "dtype": "float32",
                       "layers": [{"kind": "attention", "n_heads": 4, "n_kv_heads": 2,
                                   "head_dim": 8, "window": 8}]})
    cost = build_cost_model(spec)
    layer = cost.layers[0]
    assert layer.window == 7                                  # KV tokens held
    model = build(spec, seed=0)
    with torch.no_grad():
        cache = model(torch.zeros(1, p, dtype=torch.long))[1] if p else None
        with FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, n, dtype=torch.long), cache)
    counted = sum(counter.get_flop_counts()["HybridLM.layers.0.mixer"].values())
    assert layer.prefill_flops(n, p) == counted == cost.prefill_flops(n, p)
    assert causal_entries(n, p, 8) == sum(min(8, p + i) for i in range(1, n + 1))

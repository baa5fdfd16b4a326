"""The reference hybrid model really runs, and its cache continues a prefill exactly."""

import pytest
import torch

from marconi.layers import LayerKind
from marconi.passes.reference_model import HybridLM, build, build_fake, spec_dtypes
from marconi.passes.ref_common import CacheDtypes
from marconi.spec import parse_spec
from torch._subclasses.fake_tensor import FakeTensorMode


pytestmark = pytest.mark.usefixtures("one_torch_thread")

BLOCKS = {
    "attention": {"kind": "attention", "n_heads": 4, "n_kv_heads": 2, "head_dim": 8},
    "sliding": {"kind": "attention", "n_heads": 4, "n_kv_heads": 1, "head_dim": 8,
                "window": 4},
    "mla": {"kind": "mla", "n_heads": 2, "kv_lora_rank": 8, "qk_rope_head_dim": 4,
            "qk_nope_head_dim": 8, "v_head_dim": 8},
    "mla-qlora": {"kind": "mla", "n_heads": 2, "kv_lora_rank": 8, "qk_rope_head_dim": 4,
                  "qk_nope_head_dim": 8, "v_head_dim": 6, "q_lora_rank": 12},
    "mamba1": {"kind": "mamba1", "d_state": 4, "dt_rank": 4},
    "mamba2": {"kind": "mamba2", "d_state": 8, "head_dim": 8, "n_groups": 2},
    "gdn": {"kind": "gdn", "n_k_heads": 2, "n_v_heads": 4, "head_k_dim": 8, "head_v_dim": 6},
    "kda": {"kind": "kda", "n_heads": 2, "head_dim": 8},
    "linear_attention": {"kind": "linear_attention", "n_heads": 2, "d_conv": 3},
    "linear_attention-noconv": {"kind": "linear_attention", "n_heads": 2},
    "short_conv": {"kind": "short_conv", "d_conv": 3},
    "mlp": {"kind": "mlp", "d_ff": 64},
    "moe": {"kind": "moe", "n_experts": 4, "top_k": 2, "d_ff_expert": 16,
            "n_shared_experts": 1},
}


def _spec(*blocks, parallel_last=False):
    layers = [dict(BLOCKS[b]) for b in blocks]
    if parallel_last:
        layers[-1]["parallel"] = True
    return parse_spec({"name": "t", "d_model": 32, "vocab_size": 64, "dtype": "float32",
                       "state_dtype": "float32", "layers": layers})


CASES = [pytest.param((b, "mlp"), False, id=b) for b in BLOCKS] + [
    pytest.param(("mamba2", "attention", "gdn", "moe"), False, id="mixed"),
    pytest.param(("attention", "mamba2"), True, id="parallel-falcon-h1"),
]


@pytest.mark.parametrize("split", [1, 5, 9], ids=lambda s: f"cached{s}")
@pytest.mark.parametrize("blocks,parallel", CASES)
def test_cached_continuation_equals_full_prefill(blocks, parallel, split):
    torch.manual_seed(0)
    model = build(_spec(*blocks, parallel_last=parallel), seed=1)
    ids = torch.randint(0, 64, (2, 12))
    with torch.no_grad():
        full, full_cache = model(ids)
        head, cache = model(ids[:, :split])
        tail, cache = model(ids[:, split:], cache)
    torch.testing.assert_close(torch.cat([head, tail], dim=1), full, atol=2e-5, rtol=1e-4)
    assert cache.length == full_cache.length == 12
    for (_, name, a), (_, _, b) in zip(cache.tensors(), full_cache.tensors()):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4, msg=name)


def test_token_by_token_decode_matches_prefill():
    model = build(_spec("mamba1", "sliding", "kda", "mla"), seed=2)
    ids = torch.randint(0, 64, (1, 10))
    with torch.no_grad():
        full, _ = model(ids)
        cache, steps = None, []
        for t in range(ids.shape[1]):
            out, cache = model(ids[:, t:t + 1], cache)
            steps.append(out)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=2e-5, rtol=1e-4)


def test_sliding_window_cache_is_capped():
    model = build(_spec("sliding"), seed=0)
    with torch.no_grad():
        _, cache = model(torch.randint(0, 64, (1, 11)))
    k = cache.layers[0]["k"]
    assert k.shape[2] == 3            # window 4 = the query itself + 3 cached tokens


@pytest.mark.parametrize("n", [1, 7])
def test_sliding_window_attention_matches_dense_masked_reference(n):
    """The causal_attention op against a direct per-query loop (obviously correct)."""
    g = torch.Generator().manual_seed(0)
    s, window = 9, 4
    q = torch.randn(1, 4, n, 8, generator=g)
    k, v = torch.randn(1, 2, s, 8, generator=g), torch.randn(1, 2, s, 5, generator=g)
    got = torch.ops.marconi.causal_attention(q, k, v, window, 0.5)
    kk, vv = k.repeat_interleave(2, 1), v.repeat_interleave(2, 1)
    for i in range(n):
        pos = s - n + i
        lo = max(0, pos - window + 1)
        w = torch.softmax(q[:, :, i:i + 1] @ kk[:, :, lo:pos + 1].transpose(-1, -2) * 0.5, -1)
        torch.testing.assert_close(got[:, :, i], (w @ vv[:, :, lo:pos + 1]).squeeze(-2),
                                   atol=1e-5, rtol=1e-5)


def test_ssd_scan_matches_closed_form_single_step():
    """One SSD step from a known state: h' = exp(dt·A)·h + dt·x⊗B, y = h'·C."""
    g = torch.Generator().manual_seed(3)
    x, dt = torch.randn(1, 1, 2, 3, generator=g), torch.rand(1, 1, 2, generator=g)
    A, B, C = -torch.rand(2, generator=g), torch.randn(1, 1, 1, 4, generator=g), \
        torch.randn(1, 1, 1, 4, generator=g)
    h0 = torch.randn(1, 2, 3, 4, generator=g)
    y, h = torch.ops.marconi.ssd_scan(x, dt, A, B, C, h0)
    expect = torch.exp(dt[0, 0] * A)[:, None, None] * h0[0] + \
        (dt[0, 0, :, None] * x[0, 0])[..., None] * B[0, 0, 0]
    torch.testing.assert_close(h[0], expect)
    torch.testing.assert_close(y[0, 0], (expect * C[0, 0, 0]).sum(-1))


def test_fake_build_of_a_large_model_allocates_nothing():
    """A 64-layer, d_model 8192 model under FakeTensorMode: shapes only."""
    spec = parse_spec({"name": "big", "d_model": 8192, "vocab_size": 32000, "pattern": "M*-",
                       "repeat": 21, "blocks": {
                           "M": {"kind": "mamba2", "d_state": 128},
                           "*": {"kind": "attention", "n_heads": 64, "n_kv_heads": 8},
                           "-": {"kind": "mlp", "d_ff": 28672}}})
    mode = FakeTensorMode()
    model = build_fake(spec, spec_dtypes(spec), mode)
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params > 20e9
    with mode:
        logits, cache = model(torch.zeros(1, 4096, dtype=torch.long))
    assert logits.shape == (1, 4096, 32000)
    assert cache.nbytes() > 0


def test_layers_registry_covers_every_kind():
    from marconi.passes.reference_model import LAYERS
    assert set(LAYERS) == set(LayerKind)


def test_cache_dtypes_are_the_spec_dtypes():
    spec = parse_spec({"name": "d", "d_model": 32, "vocab_size": 64, "dtype": "bfloat16",
                       "state_dtype": "float32", "conv_dtype": "float16",
                       "layers": [BLOCKS["mamba2"], BLOCKS["attention"]]})
    dtypes = spec_dtypes(spec)
    assert dtypes == CacheDtypes(torch.bfloat16, torch.bfloat16, torch.float32, torch.float16)
    model = HybridLM(spec, dtypes).to(torch.bfloat16)
    _, cache = model(torch.randint(0, 64, (1, 3)))
    got = {name: t.dtype for _, name, t in cache.tensors()}
    assert got == {"ssm": torch.float32, "conv": torch.float16, "k": torch.bfloat16,
                   "v": torch.bfloat16}

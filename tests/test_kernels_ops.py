"""The torch.library ops: one graph node, fake shapes, FLOP formulas that agree with passes'
scan ops; CPU dispatch to the references; the package without Triton; and (interpreter,
child process) the ops' Triton path and the reference hybrid model running on the kernels."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.flop_counter import FlopCounterMode

from marconi.kernels import ops
from marconi.kernels.causal_conv import causal_conv1d_ckpt_ref
from marconi.kernels.checkpoints import checkpoint_table
from marconi.kernels.selective_scan import selective_scan_ckpt_ref
from marconi.kernels.ssd_scan import ssd_scan_ckpt_ref

TINY_HYBRID = {
    "name": "tiny-hybrid", "d_model": 32, "vocab_size": 64, "dtype": "float32",
    "state_dtype": "float32",
    "blocks": {"M": {"kind": "mamba2", "d_state": 16, "head_dim": 16, "n_groups": 1, "d_conv": 4},
               "m": {"kind": "mamba1", "d_state": 8, "d_conv": 4},
               "*": {"kind": "attention", "n_heads": 2, "n_kv_heads": 2, "head_dim": 16}},
    "pattern": "Mm*M",
}


def _mamba2_inputs(seed=0, B=2, T=20, H=4, P=16, G=2, N=16):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, T, H, P, generator=g), F.softplus(torch.randn(B, T, H, generator=g)),
            -torch.rand(H, generator=g) - 0.1, torch.randn(B, T, G, N, generator=g),
            torch.randn(B, T, G, N, generator=g), torch.randn(B, H, P, N, generator=g))


def _mamba1_inputs(seed=0, B=2, T=20, D=12, N=8):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, T, D, generator=g), F.softplus(torch.randn(B, T, D, generator=g)),
            -torch.rand(D, N, generator=g) - 0.1, torch.randn(B, T, N, generator=g),
            torch.randn(B, T, N, generator=g), torch.randn(B, D, N, generator=g))


class _Scan(torch.nn.Module):
    def forward(self, x, dt, A, Bm, Cm, h0, pos, slot, pool):
        return ops.mamba2_scan_ckpt(x, dt, A, Bm, Cm, h0, pos, slot, pool)


def test_mamba2_op_exports_as_one_node_with_dynamic_length():
    x, dt, A, Bm, Cm, h0 = _mamba2_inputs()
    table = checkpoint_table([[0, 7], [20]], [[0, 1], [2]], 20)
    pool = torch.zeros(3, 4, 16, 16)
    seq = torch.export.Dim("T", min=2, max=4096)
    dyn = {"x": {1: seq}, "dt": {1: seq}, "Bm": {1: seq}, "Cm": {1: seq}}
    ep = torch.export.export(_Scan(), (x, dt, A, Bm, Cm, h0, table.pos, table.slot, pool),
                             dynamic_shapes={**dyn, "A": None, "h0": None, "pos": None,
                                             "slot": None, "pool": None})
    targets = [str(n.target) for n in ep.graph.nodes if n.op == "call_function"]
    assert targets.count("marconi.ssd_scan_ckpt.default") == 1
    assert not any("exp" in t or "cumsum" in t for t in targets)


@pytest.mark.parametrize("shape", [pytest.param((1, 4096, 8, 64, 1, 128), id="nemotron-like-L4096"),
                                   pytest.param((2, 100, 4, 16, 2, 16), id="tiny-grouped")])
def test_mamba2_flops_match_passes_op(shape):
    from marconi.passes import ops as passes_ops  # noqa: F401  (registers marconi::ssd_scan)
    B, T, H, P, G, N = shape
    with FakeTensorMode():
        x, dt, A = torch.empty(B, T, H, P), torch.empty(B, T, H), torch.empty(H)
        Bm, Cm, h0 = torch.empty(B, T, G, N), torch.empty(B, T, G, N), torch.empty(B, H, P, N)
        pool = torch.empty(4, H, P, N)
        pos = slot = torch.zeros(B, 2, dtype=torch.int32)
        with FlopCounterMode(display=False) as ours:
            y, h = ops.mamba2_scan_ckpt(x, dt, A, Bm, Cm, h0, pos, slot, pool)
        with FlopCounterMode(display=False) as theirs:
            torch.ops.marconi.ssd_scan(x, dt, A, Bm, Cm, h0)
    assert y.shape == x.shape and h.shape == h0.shape
    assert ours.get_total_flops() == theirs.get_total_flops() == B * T * H * (P * (5 * N + 1) + 1)


def test_mamba1_flops_match_passes_op():
    from marconi.passes import ops as passes_ops  # noqa: F401
    with FakeTensorMode():
        x, dt, A = torch.empty(2, 300, 64), torch.empty(2, 300, 64), torch.empty(64, 16)
        Bm, Cm, h0 = torch.empty(2, 300, 16), torch.empty(2, 300, 16), torch.empty(2, 64, 16)
        with FlopCounterMode(display=False) as ours:
            y, h = ops.mamba1_scan_ckpt(x, dt, A, Bm, Cm, h0)
        with FlopCounterMode(display=False) as theirs:
            torch.ops.marconi.selective_scan(x, dt, A, Bm, Cm, h0)
    assert y.shape == x.shape and h.shape == h0.shape
    assert ours.get_total_flops() == theirs.get_total_flops() == 2 * 300 * 64 * (6 * 16 + 1)


def test_conv_flops_match_torch_conv1d():
    x, w, b = torch.randn(2, 30, 10), torch.randn(10, 1, 4), torch.randn(10)
    with FlopCounterMode(display=False) as ours:
        ops.conv1d_ckpt(x, w, b, torch.zeros(2, 10, 3))
    with FlopCounterMode(display=False) as theirs:
        F.conv1d(torch.zeros(2, 10, 33), w, b, groups=10)
    assert ours.get_total_flops() == theirs.get_total_flops() == 2 * 2 * 30 * 10 * 4


def test_cpu_ops_run_the_references_and_fill_pools():
    assert not ops.use_triton(torch.zeros(1))        # CPU without the interpreter
    table = checkpoint_table([[0, 7, 20], [13]], [[0, 1, 2], [3]], 20)
    inputs2, inputs1 = _mamba2_inputs(1), _mamba1_inputs(1)
    pools = [torch.full((4, 4, 16, 16), float("nan")) for _ in range(2)]
    y, h = ops.mamba2_scan_ckpt(*inputs2, table.pos, table.slot, pools[0])
    y_r, h_r = ssd_scan_ckpt_ref(*inputs2, table.pos, table.slot, pools[1])
    assert torch.equal(y, y_r) and torch.equal(h, h_r) and torch.equal(pools[0], pools[1])
    assert not pools[0].isnan().any()
    pools = [torch.full((4, 12, 8), float("nan")) for _ in range(2)]
    y, h = ops.mamba1_scan_ckpt(*inputs1, table.pos, table.slot, pools[0])
    y_r, h_r = selective_scan_ckpt_ref(*inputs1, table.pos, table.slot, pools[1])
    assert torch.equal(y, y_r) and torch.equal(h, h_r) and torch.equal(pools[0], pools[1])
    x, w, s = torch.randn(2, 20, 6), torch.randn(6, 4), torch.randn(2, 6, 3)
    pools = [torch.full((4, 6, 3), float("nan")) for _ in range(2)]
    y, st = ops.conv1d_ckpt(x, w, None, s, table.pos, table.slot, pools[0], silu=True)
    y_r, st_r = causal_conv1d_ckpt_ref(x, w, None, s, table.pos, table.slot, pools[1], silu=True)
    assert torch.equal(y, y_r) and torch.equal(st, st_r) and torch.equal(pools[0], pools[1])


def test_ops_with_empty_sequence_return_h0_copy():
    x, dt, A, Bm, Cm, h0 = _mamba2_inputs(2, T=0)
    pool = torch.full((1, 4, 16, 16), float("nan"))
    table = checkpoint_table([[0], []], [[0], []], 0)
    y, h = ops.mamba2_scan_ckpt(x, dt, A, Bm, Cm, h0, table.pos, table.slot, pool)
    assert y.shape[1] == 0 and torch.equal(h, h0) and h.data_ptr() != h0.data_ptr()
    assert torch.equal(pool[0], h0[0])


def test_package_imports_and_references_run_without_triton():
    """With `import triton` failing: references run; a kernel launch says what to install."""
    code = textwrap.dedent("""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "triton" or name.startswith("triton."):
                    raise ImportError("blocked for this test")
        sys.meta_path.insert(0, Block())
        import importlib.util
        importlib.util.find_spec = (lambda f: (lambda name, *a: None if name.startswith("triton")
                                                else f(name, *a)))(importlib.util.find_spec)
        import torch
        import marconi.kernels as K
        from marconi.kernels.ssd_scan import ssd_scan_ckpt, ssd_scan_ckpt_ref
        assert not K.triton_available()
        args = (torch.randn(1, 5, 2, 4), torch.rand(1, 5, 2), -torch.rand(2),
                torch.randn(1, 5, 1, 4), torch.randn(1, 5, 1, 4), torch.zeros(1, 2, 4, 4))
        y, h = K.mamba2_scan_ckpt(*args)          # the op takes the reference
        y_r, _ = ssd_scan_ckpt_ref(*args)
        assert torch.equal(y, y_r)
        try:
            ssd_scan_ckpt(*args)
        except ImportError as e:
            print("IMPORT-ERROR:", e)
        """)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "IMPORT-ERROR:" in proc.stdout and "pip install triton" in proc.stdout


def test_lazy_package_names():
    import marconi.kernels as K
    assert callable(K.copy_states) and callable(K.ssd_scan_ckpt_ref)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        K.nope


# ---------------------------------------------------------------- under the interpreter

CASES = {"ops-triton-path": "ops", "reference-model-on-kernels": "model"}


def check(case: str) -> dict:
    """Runs in the interpreter child: the ops' Triton path, and HybridLM before/after
    `passes.ops.install_kernels("cpu")`, prefill and prefill-then-continue."""
    from marconi.kernels import ops as kops
    from marconi.kernels._triton import use_triton
    from marconi.passes.ops import install_kernels
    if case == "ops":
        assert use_triton(torch.zeros(1))
        table = checkpoint_table([[0, 7, 16, 20], [13]], [[0, 1, 2, 3], [4]], 20)
        inputs = _mamba2_inputs(3)
        pools = [torch.full((5, 4, 16, 16), float("nan")) for _ in range(2)]
        y, h = kops.mamba2_scan_ckpt(*inputs, table.pos, table.slot, pools[0])
        y_r, h_r = ssd_scan_ckpt_ref(*inputs, table.pos, table.slot, pools[1])
        inputs1 = _mamba1_inputs(3)
        pools1 = [torch.full((5, 12, 8), float("nan")) for _ in range(2)]
        y1, h1 = kops.mamba1_scan_ckpt(*inputs1, table.pos, table.slot, pools1[0])
        y1_r, h1_r = selective_scan_ckpt_ref(*inputs1, table.pos, table.slot, pools1[1])
        return {"err": max(float((a - b).abs().max()) for a, b in
                           ((y, y_r), (h, h_r), (pools[0], pools[1]), (y1, y1_r), (h1, h1_r),
                            (pools1[0], pools1[1])))}
    from marconi.kernels import selective_scan as m1
    from marconi.kernels import ssd_scan as m2
    from marconi.passes.reference_model import build
    from marconi.spec import parse_spec
    launches = {"ssd": 0, "selective": 0}

    def counted(module, key):
        launch = module._launch

        def wrapper(*args, **kwargs):
            launches[key] += 1
            return launch(*args, **kwargs)
        module._launch = wrapper

    counted(m2, "ssd")
    counted(m1, "selective")
    model = build(parse_spec(TINY_HYBRID), seed=0).eval()
    ids = torch.randint(0, 64, (2, 23), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ref_full, _ = model(ids)
        ref_head, cache = model(ids[:, :17])
        ref_tail, _ = model(ids[:, 17:], cache)
        installed = install_kernels("cpu")
        full, _ = model(ids)
        head, cache = model(ids[:, :17])
        tail, _ = model(ids[:, 17:], cache)
    return {"installed": list(installed), "launches": launches,
            "full_err": float((full - ref_full).abs().max()),
            "continue_err": float((torch.cat([head, tail], 1)
                                   - torch.cat([ref_head, ref_tail], 1)).abs().max()),
            "logit_scale": float(ref_full.abs().max())}


@pytest.fixture(scope="module")
def interpreted(interpreted_files):
    return interpreted_files(__file__)


def test_ops_take_the_triton_path_under_interpreter(interpreted):
    r = interpreted["ops-triton-path"]
    assert "error" not in r, r.get("error")
    assert r["err"] <= 1e-4


def test_reference_model_runs_on_kernels(interpreted):
    r = interpreted["reference-model-on-kernels"]
    assert "error" not in r, r.get("error")
    assert set(r["installed"]) == {"marconi::ssd_scan", "marconi::selective_scan"}
    # 3 forward calls after install: 2 Mamba2 layers and 1 Mamba1 layer each
    assert r["launches"] == {"ssd": 6, "selective": 3}
    assert r["full_err"] <= 1e-4 * max(1.0, r["logit_scale"])
    assert r["continue_err"] <= 1e-4 * max(1.0, r["logit_scale"])


@pytest.mark.parametrize("with_h0", [pytest.param(True, id="h0"), pytest.param(False, id="zeros")])
def test_references_match_passes_ops(with_h0):
    """Same argument conventions and results as passes' marconi::ssd_scan / selective_scan."""
    from marconi.passes import ops as passes_ops  # noqa: F401
    x, dt, A, Bm, Cm, h0 = _mamba2_inputs(5)
    h0 = h0 if with_h0 else torch.zeros_like(h0)
    y_p, h_p = torch.ops.marconi.ssd_scan(x, dt, A, Bm, Cm, h0)
    y_r, h_r = ssd_scan_ckpt_ref(x, dt, A, Bm, Cm, h0)
    torch.testing.assert_close(y_r, y_p, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(h_r, h_p, atol=1e-4, rtol=1e-4)
    x, dt, A, Bm, Cm, h0 = _mamba1_inputs(5)
    h0 = h0 if with_h0 else torch.zeros_like(h0)
    y_p, h_p = torch.ops.marconi.selective_scan(x, dt, A, Bm, Cm, h0)
    y_r, h_r = selective_scan_ckpt_ref(x, dt, A, Bm, Cm, h0)
    torch.testing.assert_close(y_r, y_p, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(h_r, h_p, atol=1e-4, rtol=1e-4)

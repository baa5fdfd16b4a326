"""Every kernel compiles for an H100 (sm_90) down to a cubin, without a GPU.

The interpreter runs kernels as NumPy and accepts code the GPU compiler rejects (loop-carried
type changes, dot shapes, pointer casts), so each kernel is also compiled ahead of time here
with `triton.compile` for `GPUTarget("cuda", 90, 32)` at production-like constexprs: the
Triton frontend, the NVIDIA backend's LLVM and the bundled ptxas run on the CPU.
"""

from __future__ import annotations

import pytest

triton = pytest.importorskip("triton")

from marconi.kernels import (causal_conv, kv_copy, pool_copy, quant,  # noqa: E402
                             selective_scan, ssd_scan)

F32 = "*fp32"
SCAN_PTRS = dict(x="*bf16", dt=F32, A=F32, Bm="*bf16", Cm="*bf16", h0=F32, y="*bf16", hT=F32,
                 ck_pos="*i32", ck_slot="*i32", pool=F32, pool_scale=F32)


def _variants():
    tl = triton.language
    v = []
    for ckpt, q in ((True, False), (True, True), (False, False)):
        ptrs = dict(SCAN_PTRS, pool="*i8" if q else F32)
        v.append(pytest.param(
            ssd_scan._ssd_scan_ckpt_kernel, ptrs,
            dict(HAS_H0=True, HAS_CKPT=ckpt, QUANT=q, DOT=tl.bfloat16, BLOCK_Q=64, BLOCK_P=32,
                 BLOCK_N=128),
            ssd_scan.NUM_WARPS, id=f"ssd-ckpt{int(ckpt)}-int8{int(q)}"))
        v.append(pytest.param(
            selective_scan._selective_scan_ckpt_kernel, ptrs,
            dict(HAS_H0=True, HAS_CKPT=ckpt, QUANT=q, BLOCK_D=32, BLOCK_N=16), 4,
            id=f"selective-ckpt{int(ckpt)}-int8{int(q)}"))
    v.append(pytest.param(
        causal_conv._causal_conv1d_ckpt_kernel,
        dict(x="*bf16", weight=F32, bias=F32, s0="*bf16", y="*bf16", sT="*bf16", ck_pos="*i32",
             ck_slot="*i32", pool="*bf16"),
        dict(W=4, HAS_BIAS=True, HAS_S0=True, SILU=True, HAS_CKPT=True, BLOCK_T=64, BLOCK_C=64,
             BLOCK_S=4), 4, id="conv"))
    for base, vec in (("*i32", 4), ("*u8", 1)):
        v.append(pytest.param(pool_copy._pool_copy_kernel,
                              dict(base=base, table_ptr="*i64", src_idx_ptr="*i32",
                                   dst_idx_ptr="*i32"),
                              dict(VEC=vec, BLOCK=2048), 4, id=f"pool-copy-{base[1:]}"))
    for gather in (True, False):
        v.append(pytest.param(kv_copy._kv_copy_kernel,
                              dict(base="*i32", table_ptr="*i64", block_table="*i32",
                                   cu_seqlens="*i32", start="*i32"),
                              dict(BLOCK_SIZE=16, VEC=4, GATHER=gather, BLOCK_T=16, BLOCK_W=256),
                              4, id=f"kv-{'gather' if gather else 'scatter'}"))
    v.append(pytest.param(quant._quantize_rows_kernel,
                          dict(src=F32, src_idx="*i32", q_pool="*i8", scale_pool=F32,
                               dst_idx="*i32"),
                          dict(BLOCK_C=32, BLOCK_N=128), 4, id="quantize"))
    v.append(pytest.param(quant._dequantize_rows_kernel,
                          dict(q_pool="*i8", scale_pool=F32, src_idx="*i32", dst=F32,
                               dst_idx="*i32"),
                          dict(BLOCK_C=32, BLOCK_N=128), 4, id="dequantize"))
    return v


@pytest.mark.filterwarnings("ignore:TRITON_DEFAULT_FP_FUSION")
@pytest.mark.parametrize("kernel, ptrs, constexprs, num_warps", _variants())
def test_compiles_for_sm90(kernel, ptrs, constexprs, num_warps):
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    if not hasattr(kernel, "arg_names"):
        pytest.skip("kernels are interpreted in this process")
    signature = {name: "constexpr" if name in constexprs else ptrs.get(name, "i32")
                 for name in kernel.arg_names}
    compiled = triton.compile(ASTSource(kernel, signature, constexprs=constexprs),
                              target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps})
    assert len(compiled.asm["cubin"]) > 0


@pytest.mark.filterwarnings("ignore:TRITON_DEFAULT_FP_FUSION")
@pytest.mark.parametrize("kernel, ptrs, constexprs", [
    pytest.param(pool_copy._pool_copy_kernel,
                 dict(base="*i32", table_ptr="*i64", src_idx_ptr="*i32", dst_idx_ptr="*i32"),
                 dict(VEC=4, BLOCK=2048), id="pool-copy"),
    pytest.param(kv_copy._kv_copy_kernel,
                 dict(base="*i32", table_ptr="*i64", block_table="*i32", cu_seqlens="*i32",
                      start="*i32"),
                 dict(BLOCK_SIZE=16, VEC=4, GATHER=True, BLOCK_T=16, BLOCK_W=256), id="kv-gather")])
def test_copies_move_16_bytes_per_access(kernel, ptrs, constexprs):
    """With a 16-byte aligned base (what Triton's launcher sees for a torch allocation), the
    copy kernels' data loads and stores are 128-bit (`.v4.b32`) in the PTX."""
    import re

    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    if not hasattr(kernel, "arg_names"):
        pytest.skip("kernels are interpreted in this process")
    signature = {name: "constexpr" if name in constexprs else ptrs.get(name, "i32")
                 for name in kernel.arg_names}
    ptx = triton.compile(ASTSource(kernel, signature, constexprs=constexprs,
                                   attrs={(0,): [["tt.divisibility", 16]]}),
                         target=GPUTarget("cuda", 90, 32)).asm["ptx"]
    stores = [line for line in ptx.splitlines() if "st.global" in line]   # only row data is stored
    vector_loads = [line for line in ptx.splitlines() if re.search(r"ld\.global\.v4\.b32", line)]
    assert stores and all(".v4.b32" in line for line in stores), stores
    assert len(vector_loads) == len(stores)

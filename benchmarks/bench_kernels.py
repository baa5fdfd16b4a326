"""Benchmarks for marconi.kernels (figures go in docs/kernels.md).

    python benchmarks/bench_kernels.py                 # GPU: preamble + timings (no GPU: preamble)
    python benchmarks/bench_kernels.py --int8-error    # CPU: error of int8 checkpoints downstream
    python benchmarks/bench_kernels.py --json out.json

On a CUDA GPU it first checks every kernel against its reference at small shapes (the
correctness preamble), then measures, at Nemotron-H-8B sizes (24 Mamba2 layers, H=128,
P=64, N=128, G=8, conv 10240 x 3; 4 attention layers with 8 KV heads of 128):

- the device's copy bandwidth: `dst.copy_(src)` of a 1 GiB tensor, (read + write) / time;
- pool copy: restore 4 checkpoints (SSM + conv state of all 24 layers) in one launch,
  achieved (read + write) bandwidth and its fraction of the copy bandwidth (target >= 70 %);
- KV gather: 4 cached prefixes of 4096 tokens from the paged pool, K and V of 4 layers;
- the Mamba2 and Mamba1 scans with and without checkpoint emission (target: <= 5 % more).

Without a GPU it runs the correctness preamble under the Triton interpreter (a child
process with TRITON_INTERPRET=1), says that timings need a GPU, and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import torch
import torch.nn.functional as F

GiB = 1 << 30


# ---------------------------------------------------------------- correctness preamble

def _max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| relative to max(1, max |b|); NaN left in a counts as infinite."""
    scale = max(1.0, float(b.float().abs().max()))
    return float((a.float() - b.float()).nan_to_num(float("inf")).abs().max()) / scale


def preamble(device: str) -> list[tuple[str, float, float]]:
    """(name, max error kernel vs reference relative to max(1, max |ref|), tolerance) at small
    shapes on `device`."""
    from marconi.kernels import checkpoint_table
    from marconi.kernels.causal_conv import causal_conv1d_ckpt, causal_conv1d_ckpt_ref
    from marconi.kernels.kv_copy import kv_gather, kv_gather_ref
    from marconi.kernels.pool_copy import pool_copy, pool_copy_ref
    from marconi.kernels.quant import dequantize_ref
    from marconi.kernels.selective_scan import selective_scan_ckpt, selective_scan_ckpt_ref
    from marconi.kernels.ssd_scan import ssd_scan_ckpt, ssd_scan_ckpt_ref

    g = torch.Generator().manual_seed(0)

    def rnd(*shape):
        return torch.randn(*shape, generator=g).to(device)

    tol = 1e-2 if device == "cuda" else 1e-4       # tl.dot is tf32 on the GPU
    B, T = 2, 80
    table = checkpoint_table([[0, 16, 40, 41, T], [T - 1, 7]], [[0, 1, 2, 3, 4], [5, 6]], T, device)
    out = []

    H, P, G, N = 4, 16, 2, 16
    x, bm, cm, h0 = rnd(B, T, H, P), rnd(B, T, G, N), rnd(B, T, G, N), rnd(B, H, P, N)
    dt, A = F.softplus(rnd(B, T, H) - 1), -torch.rand(H, generator=g).to(device) - 0.2
    for int8 in (False, True):
        pools = [torch.full((8, H, P, N), -128 if int8 else float("nan"), device=device,
                            dtype=torch.int8 if int8 else torch.float32) for _ in range(2)]
        scales = [torch.zeros(8, H, P, device=device) for _ in range(2)] if int8 else [None, None]
        y_k, h_k = ssd_scan_ckpt(x, dt, A, bm, cm, h0, table.pos, table.slot, pools[0], scales[0],
                                 block_q=16)
        y_r, h_r = ssd_scan_ckpt_ref(x, dt, A, bm, cm, h0, table.pos, table.slot, pools[1],
                                     scales[1])
        read = [dequantize_ref(p, s) if int8 else p for p, s in zip(pools, scales)]
        step = float(scales[1].max()) / max(1.0, float(h_r.abs().max())) if int8 else 0.0
        # int8: kernel and reference may round one value to neighbouring steps
        out.append((f"mamba2 scan+ckpt{' int8' if int8 else ''}",
                    max(_max_err(y_k, y_r), _max_err(h_k, h_r), _max_err(read[0][:7], read[1][:7])),
                    tol + 1.01 * step))

    D, N1 = 24, 8
    x1, b1, c1, h1 = rnd(B, T, D), rnd(B, T, N1), rnd(B, T, N1), rnd(B, D, N1)
    dt1, A1 = F.softplus(rnd(B, T, D) - 1), -torch.rand(D, N1, generator=g).to(device) - 0.2
    pools = [torch.full((8, D, N1), float("nan"), device=device) for _ in range(2)]
    y_k, h_k = selective_scan_ckpt(x1, dt1, A1, b1, c1, h1, table.pos, table.slot, pools[0],
                                   block_d=16)
    y_r, h_r = selective_scan_ckpt_ref(x1, dt1, A1, b1, c1, h1, table.pos, table.slot, pools[1])
    out.append(("mamba1 scan+ckpt", max(_max_err(y_k, y_r), _max_err(h_k, h_r),
                                        _max_err(pools[0][:7], pools[1][:7])), tol))

    C, W = 20, 4
    xc, w, bias, s0 = rnd(B, T, C), rnd(C, W), rnd(C), rnd(B, C, W - 1)
    pools = [torch.full((8, C, W - 1), float("nan"), device=device) for _ in range(2)]
    y_k, s_k = causal_conv1d_ckpt(xc, w, bias, s0, table.pos, table.slot, pools[0], silu=True,
                                  block_t=32, block_c=16)
    y_r, s_r = causal_conv1d_ckpt_ref(xc, w, bias, s0, table.pos, table.slot, pools[1], silu=True)
    out.append(("causal conv+ckpt", max(_max_err(y_k, y_r), _max_err(s_k, s_r),
                                        _max_err(pools[0][:7], pools[1][:7])), 1e-4))

    pairs = [(rnd(3, 4, 8, 16), torch.full((6, 4, 8, 16), float("nan"), device=device))
             for _ in range(3)]
    refs = [(s, d.clone()) for s, d in pairs]
    src = torch.tensor([2, 0], dtype=torch.int32, device=device)
    dst = torch.tensor([5, 1], dtype=torch.int32, device=device)
    pool_copy(pairs, src, dst)
    pool_copy_ref(refs, src, dst)
    err = max(_max_err(d[[1, 5]], r[[1, 5]]) for (_, d), (_, r) in zip(pairs, refs))
    out.append(("pool copy", err, 0.0))

    cache = [rnd(12, 4, 2, 8) for _ in range(4)]
    work = [torch.full((9, 2, 8), float("nan"), device=device) for _ in range(4)]
    work_r = [w.clone() for w in work]
    bt = torch.tensor([[3, 7, 1], [10, 0, -1]], dtype=torch.int32, device=device)
    cu = torch.tensor([0, 5, 9], dtype=torch.int32, device=device)
    start = torch.tensor([6, 0], dtype=torch.int32, device=device)
    kv_gather(list(zip(cache, work)), bt, cu, 5, start)
    kv_gather_ref(list(zip(cache, work_r)), bt, cu, 5, start)
    out.append(("kv gather", max(_max_err(a, b) for a, b in zip(work, work_r)), 0.0))
    return out


def _report_preamble(rows) -> bool:
    ok = True
    for name, err, tol in rows:
        good = err <= tol
        ok &= good
        print(f"  {name:<24} max |kernel - ref| / max(1, |ref|) = {err:.2e}  (tol {tol:.0e})  "
              f"{'ok' if good else 'FAIL'}")
    return ok


# ---------------------------------------------------------------- GPU timings

def _ms(fn) -> float:
    from triton.testing import do_bench
    return do_bench(fn, warmup=25, rep=200)


def copy_bandwidth() -> float:
    """GB/s of dst.copy_(src) on 1 GiB, counting read + write."""
    src = torch.empty(GiB, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms = _ms(lambda: dst.copy_(src))
    return 2 * GiB / ms / 1e6


def bench_pool_copy(layers=24, H=128, P=64, N=128, conv_dim=10240, width=4, slots=32, restores=4):
    """Restore `restores` checkpoints of every layer (SSM fp32 + conv bf16) in one launch."""
    from marconi.kernels.pool_copy import pool_copy, pool_copy_plan
    pairs = []
    for _ in range(layers):
        pairs.append((torch.randn(slots, H, P, N, device="cuda"),
                      torch.empty(restores, H, P, N, device="cuda")))
        pairs.append((torch.randn(slots, conv_dim, width - 1, device="cuda").bfloat16(),
                      torch.empty(restores, conv_dim, width - 1, device="cuda",
                                  dtype=torch.bfloat16)))
    plan = pool_copy_plan(pairs)
    src = torch.tensor([3, 17, 9, 30], dtype=torch.int32, device="cuda")[:restores]
    dst = torch.arange(restores, dtype=torch.int32, device="cuda")
    moved = 2 * restores * sum(s[0].numel() * s.element_size() for s, _ in pairs)
    by_block = {blk: _ms(lambda blk=blk: pool_copy(plan, src, dst, block=blk))
                for blk in (1024, 2048, 4096, 8192)}
    block, ms = min(by_block.items(), key=lambda kv: kv[1])
    ms_loop = _ms(lambda: [d.index_copy_(0, dst.long(), s.index_select(0, src.long()))
                           for s, d in pairs])
    return {"bytes_moved": moved, "ms": ms, "GBps": moved / ms / 1e6, "block": block,
            "ms_by_block": by_block, "ms_torch_per_layer_loop": ms_loop}


def bench_kv_gather(layers=4, kv_heads=8, head_dim=128, block=16, seqs=4, tokens=4096):
    from marconi.kernels.kv_copy import kv_copy_plan, kv_gather
    blocks_per_seq = tokens // block
    n_blocks = seqs * blocks_per_seq * 2
    pairs = [(torch.randn(n_blocks, block, kv_heads, head_dim, device="cuda").bfloat16(),
              torch.empty(seqs * tokens, kv_heads, head_dim, device="cuda", dtype=torch.bfloat16))
             for _ in range(2 * layers)]
    plan = kv_copy_plan(pairs)
    table = torch.randperm(n_blocks, device="cuda")[:seqs * blocks_per_seq].reshape(seqs, -1).int()
    cu = torch.arange(0, (seqs + 1) * tokens, tokens, dtype=torch.int32, device="cuda")
    moved = 2 * sum(w.numel() * w.element_size() for _, w in pairs)
    by_tile = {(bt, bw): _ms(lambda bt=bt, bw=bw: kv_gather(plan, table, cu, tokens, block_t=bt,
                                                           block_w=bw))
               for bt in (8, 16, 32) for bw in (128, 256, 512)}
    tile, ms = min(by_tile.items(), key=lambda kv: kv[1])
    return {"bytes_moved": moved, "ms": ms, "GBps": moved / ms / 1e6, "block_t_w": tile}


def bench_scans(T=8192, n_ckpt=8):
    """Scan time without and with `n_ckpt` checkpoints per sequence (mid-chunk positions)."""
    from marconi.kernels import checkpoint_table
    from marconi.kernels.selective_scan import selective_scan_ckpt
    from marconi.kernels.ssd_scan import ssd_scan_ckpt
    g = torch.Generator(device="cuda").manual_seed(0)
    positions = [[(k + 1) * T // (n_ckpt + 1) + 3 for k in range(n_ckpt - 1)] + [T]]
    table = checkpoint_table(positions, [list(range(n_ckpt))], T, "cuda")
    res = {}
    H, P, G, N = 128, 64, 8, 128                                   # Nemotron-H-8B Mamba2
    x = torch.randn(1, T, H, P, device="cuda", generator=g).bfloat16()
    dt = F.softplus(torch.randn(1, T, H, device="cuda", generator=g) - 3)
    A = -torch.rand(H, device="cuda", generator=g) * 8 - 1
    bm, cm = (torch.randn(1, T, G, N, device="cuda", generator=g).bfloat16() for _ in range(2))
    h0 = torch.zeros(1, H, P, N, device="cuda")
    pool = torch.empty(n_ckpt, H, P, N, device="cuda")
    plain = _ms(lambda: ssd_scan_ckpt(x, dt, A, bm, cm, h0))
    ckpt = _ms(lambda: ssd_scan_ckpt(x, dt, A, bm, cm, h0, table.pos, table.slot, pool))
    res["mamba2"] = {"T": T, "ms": plain, "ms_ckpt": ckpt, "overhead": ckpt / plain - 1}
    D, N1 = 4096, 16                                               # a Mamba1 layer of a 2.8B model
    T1 = T // 4
    table1 = checkpoint_table([[p * T1 // T for p in positions[0]]], [list(range(n_ckpt))], T1,
                              "cuda")
    x1 = torch.randn(1, T1, D, device="cuda", generator=g).bfloat16()
    dt1 = F.softplus(torch.randn(1, T1, D, device="cuda", generator=g) - 3)
    A1 = -torch.arange(1, N1 + 1, device="cuda").float().repeat(D, 1)
    b1, c1 = (torch.randn(1, T1, N1, device="cuda", generator=g).bfloat16() for _ in range(2))
    h1 = torch.zeros(1, D, N1, device="cuda")
    pool1 = torch.empty(n_ckpt, D, N1, device="cuda")
    plain = _ms(lambda: selective_scan_ckpt(x1, dt1, A1, b1, c1, h1))
    ckpt = _ms(lambda: selective_scan_ckpt(x1, dt1, A1, b1, c1, h1, table1.pos, table1.slot, pool1))
    res["mamba1"] = {"T": T1, "ms": plain, "ms_ckpt": ckpt, "overhead": ckpt / plain - 1}
    return res


# ---------------------------------------------------------------- int8 error (CPU)

def _rel(a: torch.Tensor, b: torch.Tensor) -> dict:
    """Relative errors of a against b: max and mean absolute error over max / mean |b|."""
    d = (a.float() - b.float()).abs()
    return {"max_rel": float(d.max() / b.float().abs().max()),
            "mean_rel": float(d.mean() / b.float().abs().mean())}


def _dt(g, *shape):
    """Mamba's dt initialisation: log-uniform in [1e-3, 1e-1]."""
    return torch.exp(torch.empty(*shape).uniform_(-6.9078, -2.3026, generator=g))


def _continue(scan, inputs, prefix: int, states: dict) -> dict:
    """Errors of continuing `scan` after `prefix` tokens from each approximate state."""
    head = [t[:, :prefix] for t in inputs[:2]] + [inputs[2]] + [t[:, :prefix] for t in inputs[3:]]
    tail = [t[:, prefix:] for t in inputs[:2]] + [inputs[2]] + [t[:, prefix:] for t in inputs[3:]]
    _, h = scan(*head)
    y, _ = scan(*tail, h)
    out = {}
    for name, approx in states.items():
        hq = approx(h)
        yq, _ = scan(*tail, hq)
        out[name] = {"state": _rel(hq, h), "y_first16": _rel(yq[:, :16], y[:, :16]),
                     "y_all": _rel(yq, y)}
    return out


def int8_scan_error(seed=0, prefix=512, cont=256) -> dict:
    """Continue each scan for `cont` tokens from the exact state after `prefix` tokens and
    from its int8 (and, for comparison, bfloat16) copy; errors of y and of the state."""
    from marconi.kernels.quant import dequantize_ref, quantize_ref
    from marconi.kernels.selective_scan import selective_scan_ckpt_ref
    from marconi.kernels.ssd_scan import ssd_scan_ckpt_ref
    g = torch.Generator().manual_seed(seed)
    L = prefix + cont
    states = {"int8": lambda h: dequantize_ref(*quantize_ref(h)),
              "bf16": lambda h: h.bfloat16().float()}
    H, P, G, N = 8, 64, 1, 128                                     # Nemotron-H head dims, 8 heads
    A = -torch.exp(torch.empty(H).uniform_(0.0, 2.7726, generator=g))  # A_log ~ U(log 1, log 16)
    x, bm, cm = (torch.randn(1, L, H, P, generator=g), torch.randn(1, L, G, N, generator=g),
                 torch.randn(1, L, G, N, generator=g))
    mamba2 = (x, _dt(g, 1, L, H), A, bm, cm)
    D, N1 = 1024, 16                                               # S4D-real A, Mamba1 init
    A1 = -torch.arange(1, N1 + 1).float().repeat(D, 1)
    x1, b1, c1 = (torch.randn(1, L, D, generator=g), torch.randn(1, L, N1, generator=g),
                  torch.randn(1, L, N1, generator=g))
    mamba1 = (x1, _dt(g, 1, L, D), A1, b1, c1)
    return {"mamba2": _continue(ssd_scan_ckpt_ref, mamba2, prefix, states),
            "mamba1": _continue(selective_scan_ckpt_ref, mamba1, prefix, states)}


LOGIT_SPEC = {
    "name": "int8-probe", "d_model": 256, "vocab_size": 512, "dtype": "float32",
    "state_dtype": "float32",
    "blocks": {"M": {"kind": "mamba2", "d_state": 64, "head_dim": 32, "n_groups": 1, "d_conv": 4},
               "m": {"kind": "mamba1", "d_state": 16, "d_conv": 4},
               "*": {"kind": "attention", "n_heads": 4, "n_kv_heads": 2, "head_dim": 64},
               "-": {"kind": "mlp", "d_ff": 512}},
    "pattern": "M-m-M*-M-m-M*-",
}


def int8_logit_error(seed=0, prefix=192, cont=64) -> dict:
    """The reference hybrid model (random weights): logits of `cont` tokens after a cached
    prefix whose recurrent states are int8 round-tripped (conv states and KV exact)."""
    import dataclasses

    from marconi.kernels.quant import dequantize_ref, quantize_ref
    from marconi.passes.reference_model import build
    from marconi.spec import parse_spec
    model = build(parse_spec(LOGIT_SPEC), seed=seed).eval()
    ids = torch.randint(0, 512, (2, prefix + cont), generator=torch.Generator().manual_seed(seed))
    res = {}
    with torch.no_grad():
        _, cache = model(ids[:, :prefix])
        exact, _ = model(ids[:, prefix:], cache)
        for name, fn in {"int8": lambda h: dequantize_ref(*quantize_ref(h)).to(h.dtype),
                         "bf16": lambda h: h.bfloat16().to(h.dtype)}.items():
            layers = tuple({k: (fn(v) if k == "ssm" else v) for k, v in layer.items()}
                           for layer in cache.layers)
            approx, _ = model(ids[:, prefix:], dataclasses.replace(cache, layers=layers))
            top1 = float((approx.argmax(-1) == exact.argmax(-1)).float().mean())
            p, q = F.log_softmax(exact, -1), F.log_softmax(approx, -1)
            kl = float((p.exp() * (p - q)).sum(-1).mean())
            res[name] = {"logits": _rel(approx, exact), "top1_agreement": top1, "kl_mean": kl}
    return res


# ---------------------------------------------------------------- main

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--int8-error", action="store_true", help="measure int8 checkpoint error (CPU)")
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("--preamble-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    torch.set_num_threads(min(4, torch.get_num_threads()))
    results = {}

    if args.int8_error:
        results["int8_scan"] = int8_scan_error()
        results["int8_logits"] = int8_logit_error()
        print(json.dumps({k: results[k] for k in ("int8_scan", "int8_logits")}, indent=1))

    if args.preamble_only:                        # the child of the no-GPU path
        print("correctness preamble (Triton interpreter, CPU):")
        return 0 if _report_preamble(preamble("cpu")) else 1

    if not torch.cuda.is_available():
        if not args.int8_error:
            env = dict(os.environ, TRITON_INTERPRET="1")
            rc = subprocess.run([sys.executable, __file__, "--preamble-only"], env=env).returncode
            if rc != 0:
                return rc
        print("no CUDA GPU: skipping the timings (pool copy, KV gather, scans); they need a GPU")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1)
        return 0

    print(f"device: {torch.cuda.get_device_name()}")
    print("correctness preamble:")
    if not _report_preamble(preamble("cuda")):
        return 1
    bw = copy_bandwidth()
    results["copy_GBps"] = bw
    print(f"copy bandwidth (torch copy_, 1 GiB, read+write): {bw:.0f} GB/s")
    pc = bench_pool_copy()
    results["pool_copy"] = pc
    print(f"pool copy, 24 layers x 4 restores ({pc['bytes_moved'] / GiB:.2f} GiB moved): "
          f"{pc['ms']:.3f} ms, {pc['GBps']:.0f} GB/s = {pc['GBps'] / bw:.0%} of copy "
          f"(target >= 70%; block {pc['block']}); "
          f"torch per-layer loop {pc['ms_torch_per_layer_loop']:.3f} ms")
    kv = bench_kv_gather()
    results["kv_gather"] = kv
    print(f"KV gather, 4 x 4096 tokens x 8 tensors: {kv['ms']:.3f} ms, {kv['GBps']:.0f} GB/s "
          f"= {kv['GBps'] / bw:.0%} of copy (tile {kv['block_t_w']})")
    sc = bench_scans()
    results["scans"] = sc
    for name, r in sc.items():
        print(f"{name} scan T={r['T']}: {r['ms']:.3f} ms plain, {r['ms_ckpt']:.3f} ms with "
              f"8 checkpoints "
              f"({r['overhead']:+.1%}; target <= +5%)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

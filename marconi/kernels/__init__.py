"""marconi.kernels: Triton kernels for the runtime's GPU path, each beside a PyTorch reference.

Files are named after the stage they implement; each reads kernel → launcher → public
function (shape docstring) → `*_ref`:

    ssd_scan.py        Mamba2 chunked scan writing states at chosen positions into a pool
    selective_scan.py  Mamba1 selective scan, same
    causal_conv.py     depthwise causal conv writing conv states, same
    checkpoints.py     the checkpoint table (positions, slots) and pool storage
    pool_copy.py       save / restore / fork states of every layer in one launch
    kv_copy.py         paged KV gather / scatter, every layer in one launch
    quant.py           int8 state storage with per-channel scales
    naive.py           token-by-token recurrences, the oracles of the references
    ops.py             the scans and conv as torch.library ops (fake impl + FLOP formula)

The names below dispatch: Triton on CUDA tensors (or on CPU under TRITON_INTERPRET=1),
the reference otherwise. Importing this package imports nothing heavy; each name loads its
module on first use (`marconi.kernels.ops` registers the torch ops when loaded).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    # torch ops (dispatching)
    "mamba2_scan_ckpt": "ops", "mamba1_scan_ckpt": "ops", "conv1d_ckpt": "ops",
    # state and KV movement (dispatching)
    "copy_states": "pool_copy", "pool_copy_plan": "pool_copy", "PoolCopyPlan": "pool_copy",
    "gather_kv": "kv_copy", "scatter_kv": "kv_copy", "kv_copy_plan": "kv_copy",
    "KVCopyPlan": "kv_copy",
    "save_int8": "quant", "restore_int8": "quant",
    # checkpoint tables
    "CheckpointTable": "checkpoints", "checkpoint_table": "checkpoints",
    # the Triton functions and their references, by name
    "ssd_scan_ckpt": "ssd_scan", "ssd_scan_ckpt_ref": "ssd_scan",
    "selective_scan_ckpt": "selective_scan", "selective_scan_ckpt_ref": "selective_scan",
    "causal_conv1d_ckpt": "causal_conv", "causal_conv1d_ckpt_ref": "causal_conv",
    "pool_copy": "pool_copy", "pool_copy_ref": "pool_copy",
    "kv_gather": "kv_copy", "kv_gather_ref": "kv_copy",
    "kv_scatter": "kv_copy", "kv_scatter_ref": "kv_copy",
    "quantize_states": "quant", "quantize_states_ref": "quant",
    "dequantize_states": "quant", "dequantize_states_ref": "quant",
    # environment
    "use_triton": "_triton", "triton_available": "_triton",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'marconi.kernels' has no attribute {name!r}")
    module = importlib.import_module(f"marconi.kernels.{_EXPORTS[name]}")
    return getattr(module, name)


def __dir__():
    return __all__

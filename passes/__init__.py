"""marconi.passes: build a hybrid model without memory, trace it, derive a CostModel.

Entry point: `build_cost_model(source, dtype=None, state_dtype=None, layout="model")`,
defined in `passes.analyze` and re-exported here.

Importing this package imports nothing heavy: the planner and the simulator read
`passes.cost_model` without torch, so `build_cost_model` (torch, torch.export) loads its
module on first use, as `marconi.kernels` does for Triton.
"""

from __future__ import annotations

import importlib

_EXPORTS = {"build_cost_model": "analyze"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'marconi.passes' has no attribute {name!r}")
    module = importlib.import_module(f"marconi.passes.{_EXPORTS[name]}")
    return getattr(module, name)


def __dir__():
    return __all__

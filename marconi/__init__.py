"""marconi-plan: plan and run prefix caching for hybrid (attention + recurrent) LLMs.

Public API (imported lazily so that `import marconi` stays cheap and does nothing):

- `marconi.load_model(path)`: a `model.yaml` or Hugging Face `config.json` → spec.
- `marconi.parse_capacity("40GiB")`: capacity strings → bytes.
- `marconi.wrap(model, plan=None, capacity=None)`: a PyTorch / Hugging Face hybrid model
  behind a prefix cache (`marconi.runtime.serve.cached_model`, docs/wrap.md); loaded on first use.
"""

from marconi.errors import (CapacityError, PlanError, SolverError, SpecError, TraceError,
                            UnsupportedModelError, UserError)
from marconi.spec import HFConfig, ModelSpec, load_model
from marconi.units import DType, format_bytes, parse_capacity

__all__ = ["CapacityError", "DType", "HFConfig", "ModelSpec", "PlanError", "SolverError",
           "SpecError", "TraceError", "UnsupportedModelError", "UserError", "format_bytes",
           "load_model", "parse_capacity", "wrap"]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "wrap":          # lazy: importing marconi must not import torch
        from marconi.runtime.serve.cached_model import wrap
        return wrap
    raise AttributeError(f"module 'marconi' has no attribute {name!r}")

"""marconi-plan: plan and run prefix caching for hybrid (attention + recurrent) LLMs.

Public API (imported lazily so that `import marconi` stays cheap and does nothing):

- `marconi.load_model(path)`: a `model.yaml` or Hugging Face `config.json` → spec.
- `marconi.parse_capacity("40GiB")`: capacity strings → bytes.
"""

from marconi.errors import (CapacityError, PlanError, SolverError, SpecError, TraceError,
                            UnsupportedModelError, UserError)
from marconi.spec import HFConfig, ModelSpec, load_model
from marconi.units import DType, format_bytes, parse_capacity

__all__ = ["CapacityError", "DType", "HFConfig", "ModelSpec", "PlanError", "SolverError",
           "SpecError", "TraceError", "UnsupportedModelError", "UserError", "format_bytes",
           "load_model", "parse_capacity"]
__version__ = "0.1.0"

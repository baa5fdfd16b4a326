"""marconi-plan: plan and run prefix caching for hybrid (attention + recurrent) LLMs.

Public API (imported lazily so that `import marconi` stays cheap and does nothing):

- `marconi.load_model(path)`: a `model.yaml` or Hugging Face `config.json` → spec.
- `marconi.parse_capacity("40GiB")`: capacity strings → bytes.
- `marconi.wrap(model, plan=None, capacity=None)`: a PyTorch / Hugging Face hybrid model
  behind a prefix cache (`marconi.runtime.serve.cached_model`, docs/wrap.md), with the
  planner bound for `planned`'s online planning; loaded on first use.
"""

from marconi.errors import (CapacityError, PlanError, SolverError, SpecError, TraceError,
                            UnsupportedModelError, UserError)
from marconi.spec import HFConfig, ModelSpec, load_model
from marconi.units import DType, format_bytes, parse_capacity

__all__ = ["CapacityError", "DType", "HFConfig", "ModelSpec", "PlanError", "SolverError",
           "SpecError", "TraceError", "UnsupportedModelError", "UserError", "format_bytes",
           "load_model", "parse_capacity", "wrap"]
__version__ = "0.1.0"


def wrap(model, plan=None, capacity=None, policy=None, poison_freed=False, cost=None):
    """`marconi.runtime.serve.cached_model.wrap` (its docstring lists the arguments) with the
    planner's `replan_online` bound, so that `planned` without a plan plans itself online
    from the requests it served (docs/wrap.md)."""
    # imported here: importing marconi must not import torch or the planner
    from marconi.planner.plan import replan_online
    from marconi.runtime.serve.cached_model import wrap as wrap_model
    return wrap_model(model, plan=plan, capacity=capacity, policy=policy,
                      poison_freed=poison_freed, cost=cost, replanner=replan_online)

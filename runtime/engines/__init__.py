"""Engine models: vLLM, SGLang and TensorRT-LLM replayed as their flags make them.

``ENGINES`` maps an engine's name to its model (`base.EngineModel`); `engine(name)` looks one
up with a clear error. Each module cites the engine source behind every behaviour
(docs/engines.md has the tables).
"""

from __future__ import annotations

import importlib

from marconi.errors import UserError
from marconi.runtime.engines.base import EngineModel

NAMES = ("vllm", "sglang", "trtllm")


def engine(name: str) -> EngineModel:
    """The model of engine `name` (one of NAMES)."""
    if name not in NAMES:
        raise UserError("engine", f"unknown {name!r}; expected one of {', '.join(NAMES)}")
    return importlib.import_module(f"marconi.runtime.engines.{name}").MODEL

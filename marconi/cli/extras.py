"""Optional dependencies, checked before any work.

The core install has none of transformers (extra ``hf``: a Hugging Face config.json),
matplotlib (extra ``plot``: ``--plot``) and ray (extra ``ray``: ``--ray``). A run that needs
a missing one stops at once with one line naming the extra to install, instead of a
traceback after the work.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from marconi.errors import MissingExtraError

EXTRAS = {"transformers": "hf", "matplotlib": "plot", "ray": "ray"}   # module → its extra


def require(module: str, where: str, what: str) -> None:
    """Raise `MissingExtraError` unless `module` can be imported."""
    if importlib.util.find_spec(module) is None:
        raise MissingExtraError(where, f"{what} needs {module}, which is not installed; "
                                f"install it with: pip install 'marconi-plan[{EXTRAS[module]}]'")


def is_hf_config(model: str) -> bool:
    """Whether MODEL names a Hugging Face config.json (directly or as its folder), as
    `marconi.spec.load_model` decides."""
    p = Path(model)
    if p.is_dir():
        p = p / "config.json"
    return p.suffix == ".json" and p.is_file()


def check(args: argparse.Namespace) -> None:
    """Every optional dependency the parsed command line needs."""
    model = getattr(args, "model", None)
    if model is not None and is_hf_config(model):
        require("transformers", model, "a Hugging Face config.json")
    if getattr(args, "plot", None):
        require("matplotlib", "--plot", "drawing a plot")
    if getattr(args, "ray", None) is not None:
        require("ray", "--ray", "running on Ray")

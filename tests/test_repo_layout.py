"""The repository root is on sys.path under pytest (pythonpath ".") and for `python -m` run
from a checkout, so a top-level package folder here shadows any installed import of the same
name. transformers 5.25 imports PyPI's `kernels`, which a top-level kernels/ folder once hid
(ImportError: CUDAProperties); this keeps every top-level package name free."""

import importlib.metadata
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def top_level_packages() -> list[str]:
    return sorted(p.name for p in REPO.iterdir()
                  if p.is_dir() and (p / "__init__.py").exists())


def clashes(names: list[str], installed: dict[str, list[str]]) -> list[str]:
    out = []
    for n in names:
        if n in sys.stdlib_module_names:
            out.append(f"{n}/ shadows the standard library's {n}")
        elif set(installed.get(n, [])) - {"marconi-plan"}:
            out.append(f"{n}/ shadows {', '.join(sorted(installed[n]))}")
    return out


def test_no_top_level_package_shadows_an_installed_one():
    names = top_level_packages()
    assert "marconi" in names and "passes" in names
    bad = clashes(names, importlib.metadata.packages_distributions())
    assert not bad, "\n".join(bad)


def test_the_check_sees_a_shadowing_folder():
    installed = {"kernels": ["kernels"], "marconi": ["marconi-plan"]}
    assert clashes(["kernels", "marconi", "json"], installed) == [
        "kernels/ shadows kernels", "json/ shadows the standard library's json"]

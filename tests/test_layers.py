"""The layering of the code base, read off every import (module-level and function-level).

    core (marconi.spec, layers, units, errors) < kernels < passes
      < runtime (root: capacity, workload, seq, config) < runtime.plan < runtime.cache
      < runtime.sim < runtime.serve < planner < marconi.cli and the public API

A module may import only its own package or a lower one, so no two packages import each
other. Outside the CLI and the public API, imports of our own modules sit at module level:
a function-local import would hide the order (the CLI imports lazily to keep `--help` and
bad-input errors fast and torch-free). docs/architecture.md draws the same picture.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# import name → folder, as pyproject's [tool.setuptools.package-dir] maps them
ROOTS = {"marconi": REPO / "marconi", "marconi.passes": REPO / "passes",
         "marconi.planner": REPO / "planner", "marconi.runtime": REPO / "runtime",
         "marconi.kernels": REPO / "marconi" / "kernels"}
# package → rank; a module's package is the longest prefix of its name listed here
RANKS = {
    "marconi.core": 0,
    "marconi.kernels": 1,
    "marconi.passes": 2,
    "marconi.runtime": 3,
    "marconi.runtime.plan": 4,
    "marconi.runtime.cache": 5,
    "marconi.runtime.engines": 5.5,   # engine models: policies with flags
    "marconi.runtime.sim": 6,
    "marconi.runtime.serve": 7,
    "marconi.planner": 8,
    "marconi.cli": 9,
    "marconi.api": 9,
}
CORE = {"marconi.spec", "marconi.layers", "marconi.units", "marconi.errors"}
LAZY_OK = ("marconi.cli", "marconi.api")


def modules() -> dict[str, Path]:
    out = {}
    for name, folder in ROOTS.items():
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            if name == "marconi" and parts and parts[0] in ("passes", "planner", "runtime",
                                                           "kernels"):
                continue
            out[".".join([name, *parts])] = path
    return out


MODULES = modules()


def package_of(module: str) -> str:
    if module in CORE:
        return "marconi.core"
    if module == "marconi":
        return "marconi.api"
    best = max((p for p in RANKS if module == p or module.startswith(p + ".")), key=len,
               default=None)
    if best is None:
        raise AssertionError(f"{module}: in no layer; add its package to RANKS")
    return best


def imports(path: Path, module: str) -> list[tuple[str, int, bool]]:
    """(imported marconi module, line, at module level) for every import in `path`."""
    tree = ast.parse(path.read_text(), str(path))
    top = set(id(n) for n in tree.body)
    for node in tree.body:                     # `if TYPE_CHECKING:` blocks count as top
        if isinstance(node, ast.If):
            top |= {id(n) for n in node.body}
    is_pkg = path.name == "__init__.py"
    out = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_pkg else module.split(".")[:-1]
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base
                     for a in node.names]
        for name in names:
            if name == "marconi" or name.startswith("marconi."):
                out.append((name, node.lineno, id(node) in top))
    return out


def _resolve(name: str) -> str:
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


EDGES = [(m, _resolve(t), line, top) for m, p in MODULES.items() for t, line, top in
         imports(p, m)]


def test_every_module_is_in_a_layer():
    for module in MODULES:
        package_of(module)


@pytest.mark.parametrize("package", sorted(RANKS))
def test_no_import_from_a_higher_layer(package):
    bad = [f"{m}:{line} imports {t} ({package_of(t)})" for m, t, line, _ in EDGES
           if package_of(m) == package and RANKS[package_of(t)] > RANKS[package]]
    assert not bad, "\n".join(bad)


def test_no_cycle_between_packages():
    import networkx as nx
    graph = nx.DiGraph((package_of(m), package_of(t)) for m, t, _, _ in EDGES
                       if package_of(m) != package_of(t))
    assert not list(nx.simple_cycles(graph))


def test_our_imports_are_at_module_level():
    bad = [f"{m}:{line} imports {t} inside a function" for m, t, line, top in EDGES
           if not top and not package_of(m).startswith(LAZY_OK)]
    assert not bad, "\n".join(bad)


def test_the_walk_sees_function_level_imports(tmp_path):
    """The checker itself: an import inside a function is found and flagged as such."""
    src = tmp_path / "x.py"
    src.write_text("import marconi.errors\n\ndef f():\n    from marconi.planner import job\n")
    found = imports(src, "marconi.runtime.x")
    assert ("marconi.errors", 1, True) in found
    assert ("marconi.planner.job", 4, False) in found

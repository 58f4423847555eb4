"""Imports run one way: modules that once imported each other must not again (issue 26).

Every ``import`` / ``from ... import`` of every module under ``cream_pl/`` (module level and inside
functions, read from the source with ``ast``) becomes an edge of a module-level import graph;
``from package import name`` goes to the module the package's ``_EXPORTS`` table names for
``name`` (lazy PEP 562 exports), or to ``package.name`` when that is a module. The checks:

- ``data.images`` and ``data.metadata`` do not import each other both ways (metadata uses images);
- ``models.checkpoints`` and ``models.classifier`` likewise (the checkpoint reader uses the classifier);
- no module under ``pipelines`` imports ``cream_pl.cli`` or anything under it (the command line
  dispatches to the pipelines).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cream_pl"
"""The package whose imports are checked."""

ONE_WAY_PAIRS: tuple[tuple[str, str], ...] = (
    ("cream_pl.data.images", "cream_pl.data.metadata"),
    ("cream_pl.models.checkpoints", "cream_pl.models.classifier"),
)
"""Module pairs of which at most one may import the other."""


def _module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _lazy_exports(init: Path) -> dict[str, str]:
    """``name -> module`` of a package's ``_EXPORTS`` dict literal (empty when it has none)."""
    for node in ast.parse(init.read_text(encoding="utf-8")).body:
        target = node.target if isinstance(node, ast.AnnAssign) else (
            node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None)
        if isinstance(target, ast.Name) and target.id == "_EXPORTS" and isinstance(node.value, ast.Dict):
            return {k.value: v.value for k, v in zip(node.value.keys, node.value.values)
                    if isinstance(k, ast.Constant) and isinstance(v, ast.Constant)}
    return {}


def import_graph(package: Path) -> dict[str, dict[str, list[int]]]:
    """``module -> {imported cream_pl module -> [lines]}`` of every module under ``package``."""
    paths = sorted(package.rglob("*.py"))
    modules = {_module_name(p, package): p for p in paths}
    exports = {name: _lazy_exports(p) for name, p in modules.items() if p.name == "__init__.py"}
    root = package.name
    graph: dict[str, dict[str, list[int]]] = {}
    for name, path in modules.items():
        edges: dict[str, list[int]] = {}
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: resolved against this module's package
                    anchor = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                    base = ".".join([*anchor, *([base] if base else [])])
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in modules else exports.get(base, {}).get(alias.name, base))
            for target in targets:
                if target == root or target.startswith(root + "."):
                    edges.setdefault(target, []).append(node.lineno)
        graph[name] = edges
    return graph


def _imports(graph: dict[str, dict[str, list[int]]], importer: str, imported: str) -> list[int]:
    """Lines where ``importer`` imports ``imported`` (or a name of it)."""
    return sorted(line for target, lines in graph.get(importer, {}).items()
                  if target == imported or target.startswith(imported + ".") for line in lines)


@pytest.fixture(scope="module")
def graph() -> dict[str, dict[str, list[int]]]:
    return import_graph(PACKAGE)


@pytest.mark.parametrize(("first", "second"), ONE_WAY_PAIRS)
def test_the_pair_imports_one_way(graph, first, second):
    assert first in graph and second in graph, f"{first} or {second} is gone: update ONE_WAY_PAIRS"
    there, back = _imports(graph, first, second), _imports(graph, second, first)
    assert not (there and back), (f"{first} imports {second} (lines {there}) and {second} imports {first} "
                                  f"(lines {back}): move what both need to a module below them")


def test_pipelines_never_import_the_command_line(graph):
    bad = [f"{module} line {line}: imports {target}" for module, edges in sorted(graph.items())
           if module == "cream_pl.pipelines" or module.startswith("cream_pl.pipelines.")
           for target, lines in sorted(edges.items())
           if target == "cream_pl.cli" or target.startswith("cream_pl.cli.") for line in lines]
    assert not bad, "\n".join(bad)


def test_the_checker_sees_both_directions_and_lazy_imports(tmp_path):
    pkg = tmp_path / "cream_pl"
    (pkg / "data").mkdir(parents=True)
    (pkg / "cli").mkdir()
    (pkg / "pipelines").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "cli" / "__init__.py").write_text("")
    (pkg / "cli" / "lightning.py").write_text("")
    (pkg / "pipelines" / "__init__.py").write_text("")
    (pkg / "data" / "__init__.py").write_text('_EXPORTS: dict[str, str] = {"Err": "cream_pl.data.metadata"}\n')
    (pkg / "data" / "metadata.py").write_text("def f():\n    from cream_pl.data.images import load\n")
    (pkg / "data" / "images.py").write_text("from cream_pl.data import Err\n")
    (pkg / "pipelines" / "demo.py").write_text("def g():\n    from cream_pl import cli\n"
                                                "    from ..cli.lightning import build\n")
    g = import_graph(pkg)
    assert _imports(g, "cream_pl.data.metadata", "cream_pl.data.images") == [2]  # inside a function
    assert _imports(g, "cream_pl.data.images", "cream_pl.data.metadata") == [1]  # through the lazy export
    assert _imports(g, "cream_pl.pipelines.demo", "cream_pl.cli") == [2, 3]  # relative imports too

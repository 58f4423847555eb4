"""The package layout's import direction: core <- data <- metrics <- models <- callbacks / pseudo_boxes <- reporting <- pipelines / cli.

Every ``import`` / ``from ... import`` of every module (module level and inside functions, read from
the source with ``ast``) is checked against the layers a package may use.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cream_pl"

FORBIDDEN: dict[str, tuple[str, ...]] = {
    "core": ("data", "models", "metrics", "callbacks", "pseudo_boxes", "pipelines", "cli", "reporting"),
    "data": ("models", "metrics", "callbacks", "pseudo_boxes", "pipelines", "cli", "reporting"),
    "metrics": ("models", "callbacks", "pseudo_boxes", "pipelines", "cli", "reporting"),
    "models": ("callbacks", "pseudo_boxes", "pipelines", "cli", "reporting"),
    "callbacks": ("pseudo_boxes", "pipelines", "cli", "reporting"),
    "pseudo_boxes": ("pipelines", "cli", "reporting"),
    "reporting": ("pipelines", "cli"),
}
"""package -> the packages it must never import (each layer only reaches down)."""


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
            if node.module == "cream_pl":  # from cream_pl import x
                out += [(node.lineno, f"cream_pl.{a.name}") for a in node.names]
    return [(line, name) for line, name in out if name == "cream_pl" or name.startswith("cream_pl.")]


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_lower_layers_never_import_upper_ones(package):
    bad = []
    for path in sorted((PACKAGE / package).rglob("*.py")):
        for line, module in _imports(path):
            if _layer(module) in FORBIDDEN[package]:
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line}: imports {module}")
    assert not bad, "\n".join(bad)


def test_every_module_lives_in_a_layer_package():
    loose = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert loose == [], f"modules at the package root (give each a layer): {loose}"
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert packages == set(FORBIDDEN) | {"cli", "pipelines"}


def test_each_package_says_what_lives_there_and_what_it_may_import():
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
        assert "May import" in doc, f"{init.relative_to(PACKAGE.parent)}: the docstring must say what it may import"


def test_the_checker_sees_a_violation(tmp_path):
    bad = tmp_path / "m.py"
    bad.write_text("def f():\n    from cream_pl.pipelines.demo import run_demo\n    from cream_pl import reporting\n")
    assert [m for _, m in _imports(bad)] == ["cream_pl.pipelines.demo", "cream_pl", "cream_pl.reporting"]
    assert [_layer(m) for _, m in _imports(bad)] == ["pipelines", None, "reporting"]

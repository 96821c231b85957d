"""The direction imports may point between ortmodels' parts (DESIGN.md, "Layout").

Read from the source with `ast`, so imports inside functions and under ``TYPE_CHECKING``
count too: a part may import only the parts listed for it, and none of the libraries
listed against it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ortmodels"

#: Part → the ortmodels parts it may import (a part is a top-level module or sub-package).
LEAVES = {"errors", "units", "kinds", "precision", "lazy", "inputs"}
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "lazy": {"errors"},
    "units": set(),
    "kinds": {"errors"},
    "precision": {"errors", "kinds"},
    "inputs": {"errors"},
    "engine": {"errors"},
    "store": {"errors", "precision", "kinds", "units"},
    "config": LEAVES | {"store"},
    "monitoring": LEAVES | {"store"},
    "lifecycle": LEAVES | {"store"},  # stats arrive through its listener: it never imports monitoring
    "base": LEAVES | {"lifecycle", "monitoring"},
    "runtime": LEAVES | {"base", "config", "engine", "lifecycle", "store"},
    "registry": LEAVES | {"store"},
    "loader": LEAVES | {"base", "config", "engine", "lifecycle", "runtime", "store"},
    "manager": LEAVES | {"base", "config", "engine", "lifecycle", "loader", "monitoring", "registry", "runtime",
                         "store"},
    "export": LEAVES | {"config", "engine", "lifecycle", "store"},
    "serve": LEAVES | {"base", "config", "engine", "export", "lifecycle", "loader", "manager", "monitoring",
                       "registry", "runtime", "store"},
}
#: Part → third-party packages it must never import.
FORBIDDEN: dict[str, set[str]] = {
    "engine": {"langchain_core", "langchain", "pydantic", "pydantic_settings", "torch", "transformers", "optimum"},
    "store": {"langchain_core", "onnxruntime", "tokenizers", "torch", "transformers", "optimum"},
    "lifecycle": {"onnxruntime", "torch", "transformers", "optimum"},
    "runtime": {"torch", "transformers", "optimum"},
    "manager": {"torch", "transformers", "optimum"},
}
#: The HTTP server's libraries stay in ``serve/``: nothing else, the CLI included, imports them.
SERVER_LIBS = {"fastapi", "uvicorn", "starlette"}
for _part_name in [*ALLOWED, "ortmodels", "__main__", "cli"]:
    if _part_name != "serve":
        FORBIDDEN[_part_name] = FORBIDDEN.get(_part_name, set()) | SERVER_LIBS


def _module(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "ortmodels"


def _imports(path: Path) -> list[tuple[str, int]]:
    """Every module ``path`` imports (relative imports resolved), with its line."""
    module = _module(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((target, node.lineno))
            found.extend((f"{target}.{alias.name}", node.lineno) for alias in node.names if target == "ortmodels")
        elif isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
    return found


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_the_allowed_way(path: Path) -> None:
    part = _part(_module(path))
    allowed = ALLOWED.get(part)
    forbidden = FORBIDDEN.get(part, set())
    wrong = []
    for target, line in _imports(path):
        if target.startswith("ortmodels.") and allowed is not None:
            other = _part(target)
            if other != part and other not in allowed:
                wrong.append(f"line {line}: {target} ({part} may import {', '.join(sorted(allowed)) or 'nothing'})")
        if target.split(".")[0] in forbidden:
            wrong.append(f"line {line}: {target} (never imported by {part})")
    assert not wrong, f"{path.relative_to(PACKAGE)}: " + "; ".join(wrong)


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_ray_stays_in_serve_ray(path: Path) -> None:
    """Ray Serve is an extra: only ``serve/ray/`` imports ``ray``, so the local server runs without it."""
    if path.is_relative_to(PACKAGE / "serve" / "ray"):
        return
    wrong = [f"line {line}: {target}" for target, line in _imports(path) if target.split(".")[0] == "ray"]
    assert not wrong, f"{path.relative_to(PACKAGE)} imports ray outside serve/ray/: " + "; ".join(wrong)


def test_every_part_has_a_rule_or_is_a_front_end() -> None:
    """A new part gets a line in ALLOWED (and DESIGN.md); only the front ends import freely."""
    parts = {_part(_module(p)) for p in _sources()}
    assert parts - set(ALLOWED) <= {"ortmodels", "__main__", "cli"}, parts - set(ALLOWED)

"""Real text nobody on this project wrote: docstrings of Python's standard library.

Read from the source files with ``ast`` (nothing is imported), in a fixed file order,
so every run on the same Python gets the same sentences.
"""

from __future__ import annotations

import ast
import re
import sysconfig
from pathlib import Path

_SKIP_PARTS = {"test", "tests", "idlelib", "site-packages", "lib2to3", "turtledemo", "__pycache__"}


def _docstrings(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc:
                found.append(doc)
    return found


def stdlib_sentences(count: int = 2000, min_chars: int = 20, max_chars: int = 1200) -> list[str]:
    """The first paragraph of each distinct stdlib docstring, whitespace-normalised."""
    root = Path(sysconfig.get_paths()["stdlib"])
    seen: set[str] = set()
    out: list[str] = []
    for path in sorted(root.rglob("*.py")):
        if _SKIP_PARTS & set(path.relative_to(root).parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for doc in _docstrings(tree):
            paragraph = re.sub(r"\s+", " ", doc.split("\n\n")[0]).strip()
            if min_chars <= len(paragraph) <= max_chars and paragraph not in seen:
                seen.add(paragraph)
                out.append(paragraph)
                if len(out) == count:
                    return out
    if len(out) < count:
        raise RuntimeError(f"Only {len(out)} stdlib docstrings found under {root}; asked for {count}.")
    return out

"""DESIGN.md's layout table names every module of the package (the map is kept true).

A module ``ortmodels/<part>/<rest>.py`` must be named in backticks, as ``<rest>.py``, in the
row of the deepest folder the table has a row for (``serve/ray/`` before ``serve/``), so
``ortmodels/export/decoder/graph.py`` is `decoder/graph.py` in the ``export/`` row. A
top-level module is named in the first cell of a row. A package's ``__init__.py`` is named
by its folder (`toolcalls/`), the package's own by its row.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ortmodels"


def _rows(text: str) -> list[tuple[str, str]]:
    """(first cell, whole row) of each row of the layout table in ``text`` (DESIGN.md)."""
    layout = text.split("## Layout", 1)[1].split("\n## ", 1)[0]
    return [(line.split("|")[1], line) for line in layout.splitlines()
            if line.startswith("| `") and line.count("|") >= 4]


def _named(row: str, name: str) -> bool:
    return re.search(rf"`{re.escape(name)}`", row) is not None


def unnamed_modules(package: Path, design: str) -> list[str]:
    """The modules under ``package`` that the layout table in ``design`` does not name."""
    rows = _rows(design)
    folders = {m: row for cell, row in rows for m in re.findall(r"`([\w/]+/)`", cell)}
    missing = []
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package).as_posix()
        if "/" not in relative:  # a top-level module: the first cell of a row
            if not any(_named(cell, relative) for cell, _ in rows):
                missing.append(relative)
            continue
        owner = max((f for f in folders if relative.startswith(f)), key=len, default=None)
        if owner is None:
            missing.append(relative)
            continue
        rest = relative[len(owner):]
        if rest == "__init__.py":
            continue  # the row itself names the package
        name = rest[: -len("__init__.py")] if rest.endswith("/__init__.py") else rest
        if not _named(folders[owner], name):
            missing.append(relative)
    return missing


def test_design_names_every_module() -> None:
    missing = unnamed_modules(PACKAGE, (ROOT / "DESIGN.md").read_text(encoding="utf-8"))
    assert not missing, (
        "DESIGN.md's layout table does not name these modules (add each, with its one job, to its "
        f"folder's row, e.g. `decoder/graph.py` in the export/ row): {', '.join(missing)}"
    )


def test_the_check_reports_what_the_table_lacks(tmp_path: Path) -> None:
    design = """# map

## Layout

| part | one job | may import |
| --- | --- | --- |
| `errors.py` | errors | nothing |
| `export/` | `pipeline.py` (the flow), `decoder/graph.py` (the graph), `decoder/` (decoders) | leaves |
| `serve/` | `app.py` | all |
| `serve/ray/` | `remote.py` | all |

## Rules
`stray.py` named outside the table does not count.
"""
    for name in ("errors.py", "stray.py", "units.py", "export/__init__.py", "export/pipeline.py",
                 "export/decoder/__init__.py", "export/decoder/graph.py", "export/decoder/parity.py",
                 "serve/app.py", "serve/ray/remote.py", "serve/ray/run.py", "runtime/chat.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    assert unnamed_modules(tmp_path, design) == [
        "export/decoder/parity.py", "runtime/chat.py", "serve/ray/run.py", "stray.py", "units.py"]

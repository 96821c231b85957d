"""What a checkpoint says of itself: the model card's license and description, parameter count.

Read without loading weights: the card's YAML front matter and first paragraph, and the
JSON header of each ``*.safetensors`` file (shapes only).
"""

from __future__ import annotations

import json
import math
import re
import struct
from pathlib import Path

_FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*\n", re.DOTALL)
_MAX_HEADER = 100 * 2**20


def read_card(folder: Path) -> tuple[str | None, str | None]:
    """``(license, description)`` from ``README.md``; either is ``None`` when absent."""
    path = folder / "README.md"
    if not path.is_file():
        return None, None
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None, None
    license_name = None
    match = _FRONT_MATTER.match(text)
    if match:
        found = re.search(r"^license:\s*['\"]?([^'\"\n]+)", match.group(1), re.MULTILINE)
        license_name = found.group(1).strip() if found else None
        text = text[match.end():]
    return license_name, _first_paragraph(text)


def _first_paragraph(markdown: str) -> str | None:
    """The first block of prose: headings, code, tables, lists and HTML are skipped."""
    markdown = re.sub(r"^```.*?^```[^\n]*$", "", markdown, flags=re.DOTALL | re.MULTILINE)
    for block in re.split(r"\n\s*\n", markdown):
        lines = [ln.strip() for ln in block.strip().splitlines() if not ln.lstrip().startswith("#")]
        if not lines or lines[0].startswith(("|", "<", "!", "-", "*", ">")):
            continue
        paragraph = " ".join(lines)
        paragraph = re.sub(r"\[([^\]]+)\]\([^)]+\)", r"\1", paragraph)  # links → their text
        return paragraph[:500]
    return None


def count_parameters(folder: Path) -> int | None:
    """Sum of tensor sizes over the checkpoint's safetensors headers; ``None`` without weights."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for path in files:
        try:
            with open(path, "rb") as handle:
                (length,) = struct.unpack("<Q", handle.read(8))
                if length > _MAX_HEADER:
                    return None
                header = json.loads(handle.read(length))
        except (OSError, struct.error, ValueError):
            return None
        total += sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")
    return total

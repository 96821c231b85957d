"""Byte sizes (``2GB``, ``512MiB``) and durations (``30s``, ``5m``, ``-1``) as settings take them."""

from __future__ import annotations

import math
import re

_SIZE_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600}
_NUMBER = r"\s*(-?\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*"


def parse_bytes(value: str | int | float) -> int:
    """``2GB`` → 2,000,000,000; ``512MiB`` → 536,870,912; a plain number is bytes."""
    if isinstance(value, (int, float)):
        number, unit = float(value), ""
    else:
        match = re.fullmatch(_NUMBER, value)
        if not match or match.group(2).lower() not in _SIZE_UNITS:
            raise ValueError(f"{value!r} is not a size; use bytes or a unit: 2GB, 512MB, 1.5GiB")
        number, unit = float(match.group(1)), match.group(2).lower()
    if number < 0:
        raise ValueError(f"a size cannot be negative: {value!r}")
    return int(number * _SIZE_UNITS[unit])


def parse_seconds(value: str | int | float) -> float:
    """``300``, ``30s``, ``5m``, ``1h``; ``-1`` (forever) and ``0`` (at once) stay as they are."""
    if isinstance(value, (int, float)):
        number, unit = float(value), ""
    else:
        match = re.fullmatch(_NUMBER, value)
        if not match or match.group(2).lower() not in _DURATION_UNITS:
            raise ValueError(f"{value!r} is not a duration; use seconds or 30s, 5m, 1h; -1 is forever")
        number, unit = float(match.group(1)), match.group(2).lower()
    seconds = number * _DURATION_UNITS[unit]
    if not math.isfinite(seconds):
        raise ValueError(f"a duration must be a finite number of seconds, not {value!r}")
    if seconds < 0 and seconds != -1:
        raise ValueError(f"a duration is -1 (forever), 0 or positive, not {value!r}")
    return seconds


def format_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"

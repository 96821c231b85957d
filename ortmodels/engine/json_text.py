"""JSON as RFC 8259 defines it, read and written the same way everywhere.

Python's `json` reads and writes ``NaN``, ``Infinity`` and ``-Infinity`` by default; JavaScript's
``JSON.parse`` and most other clients refuse them. A tool call's arguments, a request body or a
schema that held one would be passed on as text no client can read, so they are refused where
JSON comes in and where arguments are written back into a prompt.
"""

from __future__ import annotations

import json
import math
from typing import Any


class NotJsonNumber(ValueError):
    """A ``NaN``, ``Infinity`` or ``-Infinity`` (Python's JSON extension, not JSON), or a number
    past a double's range, which Python reads as an infinity."""


def _refuse(name: str) -> Any:
    raise NotJsonNumber(f"{name} is not a JSON number (JSON has no NaN or Infinity)")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # 1e999: valid JSON that Python reads as an infinity
        raise NotJsonNumber(f"{text[:40]} is past the largest number a double holds")
    return value


def loads(text: str | bytes) -> Any:
    """``json.loads`` that refuses ``NaN``, the infinities and numbers that would read as one
    (`NotJsonNumber`, a ValueError)."""
    return json.loads(text, parse_constant=_refuse, parse_float=_finite)


def non_json_reason(value: Any) -> str | None:
    """Why ``value`` cannot be written as JSON (a NaN, a datetime), or ``None`` when it can."""
    try:  # a loop of references recurses (not json's own check): a ValueError is then a number's
        json.dumps(value, allow_nan=False, check_circular=False)
    except ValueError:
        return "NaN and Infinity are not JSON numbers"
    except TypeError as exc:
        return str(exc)
    except RecursionError:
        return "it is nested too deeply (or refers to itself)"
    return None

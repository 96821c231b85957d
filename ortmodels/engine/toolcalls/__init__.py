"""Tool-call formats by template family, one small file each; the first whose `detect`
accepts a chat template is used, `generic` when none does. Adding a family is one file
and one line here."""

from __future__ import annotations

from .base import CallPlan, Choice, ToolCall, ToolFormat
from .generic import GenericFormat
from .hermes import HermesFormat
from .llama3 import Llama3Format

FORMATS: dict[str, ToolFormat] = {f.name: f for f in (HermesFormat(), Llama3Format(), GenericFormat())}


def detect_format(template: str) -> str:
    """The name of the tool-call format a chat template (its source) speaks."""
    return next(name for name, fmt in FORMATS.items() if fmt.detect(template))


__all__ = ["FORMATS", "CallPlan", "Choice", "ToolCall", "ToolFormat", "detect_format"]

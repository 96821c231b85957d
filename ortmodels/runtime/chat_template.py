"""A checkpoint's own chat template, rendered with jinja2 the way transformers renders it.

Same environment (sandboxed, ``trim_blocks``, ``lstrip_blocks``, loop controls), same
helpers (``raise_exception``, ``strftime_now``, ``tojson``), same variables
(``messages``, ``add_generation_prompt``, the special tokens), so prompts match what
the model was trained on without importing transformers.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import ModelFileError, OrtModelsError


class ChatTemplateError(OrtModelsError, ValueError):
    """The template refused the conversation (it called ``raise_exception``)."""


def _raise(message: str) -> None:
    raise ChatTemplateError(f"The model's chat template refused the messages: {message}")


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: Any = None, sort_keys: bool = False) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


@lru_cache(maxsize=32)
def _compile(source: str) -> Any:
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(source)


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


class ChatTemplate:
    """The template source plus the special tokens it may refer to."""

    def __init__(self, source: str, special_tokens: dict[str, str | None]) -> None:
        self.source = source
        self.special_tokens = special_tokens
        self._template = _compile(source)

    @classmethod
    def from_folder(cls, folder: Path) -> ChatTemplate:
        """Read ``chat_template.jinja`` or the ``chat_template`` entry of ``tokenizer_config.json``."""
        config_path = folder / "tokenizer_config.json"
        config: dict[str, Any] = {}
        if config_path.is_file():
            try:
                config = json.loads(config_path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise ModelFileError(config_path, f"Corrupt JSON ({exc})") from None
        source = None
        jinja_path = folder / "chat_template.jinja"
        if jinja_path.is_file():
            source = jinja_path.read_text(encoding="utf-8")
        else:
            entry = config.get("chat_template")
            if isinstance(entry, list):  # named templates: take "default"
                entry = next((t.get("template") for t in entry if t.get("name") == "default"), None)
            source = entry if isinstance(entry, str) else None
        if not source:
            raise ModelFileError(
                folder,
                "No chat template (chat_template.jinja or tokenizer_config.json's chat_template)",
                "Chat needs an instruction-tuned checkpoint that ships its template.",
            )
        tokens = {
            key: _token_text(config.get(key))
            for key in ("bos_token", "eos_token", "unk_token", "pad_token")
        }
        return cls(source, tokens)

    def render(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True, **extra: Any) -> str:
        try:
            return self._template.render(
                messages=messages, add_generation_prompt=add_generation_prompt,
                **{k: v for k, v in self.special_tokens.items() if v is not None}, **extra,
            )
        except ChatTemplateError:
            raise
        except Exception as exc:  # jinja2's errors: undefined names, sandbox violations
            raise ChatTemplateError(f"Rendering the chat template failed: {type(exc).__name__}: {exc}") from exc

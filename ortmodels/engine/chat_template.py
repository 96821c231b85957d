"""A checkpoint's own chat template, rendered with jinja2 the way transformers renders it.

Same environment (sandboxed, ``trim_blocks``, ``lstrip_blocks``, loop controls), same
helpers (``raise_exception``, ``strftime_now``, ``tojson``), same variables
(``messages``, ``add_generation_prompt``, the special tokens), so prompts match what
the model was trained on without importing transformers.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import ChatTemplateError, ModelFileError
from .prompt_tokens import ESCAPE_CLOSE, ESCAPE_OPEN


def _raise(message: str) -> None:
    raise ChatTemplateError(f"The model's chat template refused the messages: {message}")


#: What ``json.dumps(ensure_ascii=True)`` writes as ``\uXXXX``, but for the escapes of special
#: tokens' text (`prompt_tokens`), which must reach the tokenizer as they are.
_NOT_ASCII = re.compile(rf"[^\x00-\x7e{ESCAPE_OPEN}{ESCAPE_CLOSE}]")


def _json_ascii(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code > 0xFFFF:  # a surrogate pair, as json writes it
        code -= 0x10000
        return f"\\u{0xD800 | (code >> 10):04x}\\u{0xDC00 | (code & 0x3FF):04x}"
    return f"\\u{code:04x}"


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: Any = None, sort_keys: bool = False) -> str:
    text = json.dumps(value, ensure_ascii=False, indent=indent, separators=separators, sort_keys=sort_keys)
    return _NOT_ASCII.sub(_json_ascii, text) if ensure_ascii else text


#: Longest a render may take; a real conversation renders in about a millisecond.
RENDER_SECONDS = 2.0
#: Rendered characters allowed when the caller gives no bound of its own.
RENDER_CHARS = 8_000_000
_TEMPLATE_FILE = "<template>"  # the file name jinja2 gives code compiled from a string


class _RenderLimit(Exception):
    """Raised inside a render that went past its time or size bound (turned into a ChatTemplateError)."""


class _Budget:
    """The bounds of one render, checked by the trace function and the sandbox's hooks."""

    def __init__(self, seconds: float, chars: int) -> None:
        self.deadline = time.monotonic() + seconds
        self.seconds, self.chars = seconds, chars
        self.lines = 0
        self.rss_start = _resident_bytes()

    def check_memory(self) -> None:
        """Stop a render whose process grew by far more than its output may hold (4 bytes a
        character, twice over, plus 512 MB of slack for what other threads allocate meanwhile:
        an engine growing its KV buffers can take ~100 MB at once)."""
        now = _resident_bytes()
        if self.rss_start and now and now - self.rss_start > 8 * self.chars + (512 << 20):
            raise _RenderLimit(f"it grew the process by {(now - self.rss_start) >> 20} MB")

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise _RenderLimit(f"it ran for more than {self.seconds:g} s")

    def check_size(self, size: int, what: str) -> None:
        if size > self.chars:
            raise _RenderLimit(f"{what} would be {size:,} characters, more than the {self.chars:,} allowed")

    def check_call(self, values: tuple[Any, ...], what: str) -> None:
        """Before a function or filter runs: in time, and no whole-number argument past the size
        bound (``center(300000000)``, ``indent(width=...)``)."""
        self.check_time()
        for value in values:
            if isinstance(value, int) and not isinstance(value, bool):
                self.check_size(value, what)


def _resident_bytes() -> int:
    """This process's resident memory from ``/proc`` (0 where there is none)."""
    try:
        with open("/proc/self/statm", "rb") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


_budget: threading.local = threading.local()


def _current_budget() -> _Budget | None:
    return getattr(_budget, "value", None)


def _size_of(value: Any) -> int:
    return len(value) if isinstance(value, (str, bytes, list, tuple)) else 0


def _bounded_environment() -> Any:
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class BoundedEnvironment(ImmutableSandboxedEnvironment):
        """The sandbox, plus bounds on what one operator or call may build."""

        intercepted_binops = frozenset({"*", "**", "%", "+"})

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            budget = _current_budget()
            if budget is not None:
                budget.check_time()
                if operator == "*":
                    for seq, times in ((left, right), (right, left)):
                        if _size_of(seq) and isinstance(times, int):
                            budget.check_size(_size_of(seq) * times, "a repeated sequence")
                elif operator == "**" and isinstance(right, (int, float)) and abs(right) > 256:
                    raise _RenderLimit(f"the power {right!r} is too large")
                elif operator == "%" and isinstance(left, str):
                    widths = [int(w) for w in re.findall(r"%[-#0 +]*(\d+)", left)]
                    budget.check_size(max(widths, default=0), "a formatted field")
                elif operator == "+" and _size_of(left) and _size_of(right):
                    budget.check_size(_size_of(left) + _size_of(right), "a joined sequence")
            return super().call_binop(context, operator, left, right)

        def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
            budget = _current_budget()
            if budget is not None:
                budget.check_call((*args, *kwargs.values()), "a number passed to a function")
            return super().call(__context, __obj, *args, **kwargs)

        def wrap_str_format(self, value: Any) -> Any:
            """``str.format`` in a template: a field width past the size bound is refused first."""
            wrapped = super().wrap_str_format(value)
            if wrapped is None:
                return None
            widths = [int(w) for w in re.findall(r"\{[^{}]*:[^{}\d]*(\d+)", value.__self__)]

            def bounded(*args: Any, **kwargs: Any) -> Any:
                budget = _current_budget()
                if budget is not None:
                    budget.check_size(max(widths, default=0), "a formatted field")
                return wrapped(*args, **kwargs)

            return bounded

    # optimized=False: no constant folding at compile time, where no bound applies yet
    env = BoundedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols], optimized=False)
    for name, function in list(env.filters.items()):
        env.filters[name] = _bounded_filter(function)
    return env


def _bounded_filter(function: Any) -> Any:
    """Filters (``center``, ``indent``, ``wordwrap``, ...) get the same number bound as calls.

    The wrapper takes the template context, which also keeps jinja2 from running the filter
    on constants at compile time, where no bound applies yet.
    """
    from jinja2.utils import _PassArg, pass_context

    wants = _PassArg.from_obj(function)

    @pass_context
    def bounded(context: Any, *args: Any, **kwargs: Any) -> Any:
        budget = _current_budget()
        if budget is not None:
            budget.check_call((*args, *kwargs.values()), "a number passed to a filter")
        if wants is _PassArg.context:
            return function(context, *args, **kwargs)
        if wants is _PassArg.eval_context:
            return function(context.eval_ctx, *args, **kwargs)
        if wants is _PassArg.environment:
            return function(context.environment, *args, **kwargs)
        return function(*args, **kwargs)

    return bounded


@lru_cache(maxsize=32)
def _compile(source: str) -> Any:
    env = _bounded_environment()
    env.filters["tojson"] = _bounded_filter(_tojson)
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(source)


def _bounded_render(template: Any, budget: _Budget, variables: dict[str, Any]) -> str:
    """Render with a trace on the template's own frames, so a loop that calls nothing and
    writes nothing (nested ``range`` loops) still meets the deadline; output is counted as
    it is produced, so it never grows past the size bound."""
    previous = sys.gettrace()

    def local(frame: Any, event: str, arg: Any) -> Any:
        budget.check_time()
        budget.lines += 1
        if not budget.lines % 8:  # what no operator hook sees (``~`` joins): the process's growth
            budget.check_memory()
        return local

    def global_trace(frame: Any, event: str, arg: Any) -> Any:
        return local if frame.f_code.co_filename == _TEMPLATE_FILE else None

    _budget.value = budget
    sys.settrace(global_trace)
    try:
        pieces, size = [], 0
        for piece in template.generate(**variables):
            size += len(piece)
            budget.check_size(size, "the rendered prompt")
            pieces.append(piece)
        return "".join(pieces)
    finally:
        sys.settrace(previous)
        _budget.value = None


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


class ChatTemplate:
    """The template source plus the special tokens it may refer to."""

    def __init__(self, source: str, special_tokens: dict[str, str | None], origin: str = "chat template") -> None:
        self.source = source
        self.special_tokens = special_tokens
        self.origin = origin
        """Where the template was read from, named in every error about it."""
        try:
            self._template = _compile(source)
        except Exception as exc:  # jinja2's TemplateSyntaxError
            raise ChatTemplateError(f"The chat template in {origin} does not compile: {exc}") from exc

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
        origin = str(jinja_path)
        if jinja_path.is_file():
            source = jinja_path.read_text(encoding="utf-8")
        else:
            origin = f"{config_path} (chat_template)"
            entry = config.get("chat_template")
            if isinstance(entry, list):  # named templates: take "default"
                entry = next((t.get("template") for t in entry if isinstance(t, dict) and t.get("name") == "default"), None)
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
        return cls(source, tokens, origin)

    def render(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True, *,
               max_chars: int = RENDER_CHARS, seconds: float = RENDER_SECONDS, **extra: Any) -> str:
        """The prompt text; a render past ``seconds`` or ``max_chars``, or an empty one, is an error."""
        variables = {"messages": messages, "add_generation_prompt": add_generation_prompt,
                     **{k: v for k, v in self.special_tokens.items() if v is not None}, **extra}
        try:
            text = _bounded_render(self._template, _Budget(seconds, max_chars), variables)
        except ChatTemplateError:
            raise
        except _RenderLimit as exc:
            raise ChatTemplateError(
                f"The chat template in {self.origin} was stopped: {exc}. A chat template should "
                "only format the messages; fix the template, or shorten the conversation."
            ) from None
        except Exception as exc:  # jinja2's errors: undefined names, sandbox violations
            raise ChatTemplateError(
                f"Rendering the chat template in {self.origin} failed: {type(exc).__name__}: {exc}"
            ) from exc
        if not text.strip():
            raise ChatTemplateError(
                f"The chat template in {self.origin} rendered an empty prompt for these "
                f"{len(messages)} message(s); check that the template reads 'messages' and their 'content'."
            )
        return text

"""``ortmodels chat`` without typer: its parameters (defined once, here), their reading for a
plain command line, and the command itself. Typer's import and its first parse took 30-50 ms
of every one-shot answer's start, so `main` reads a plain command line with `quick_arguments`
and leaves anything else (help, a root option, an unknown or malformed word) to typer, whose
command `cli/chat.py` builds from the same `PARAMETERS`."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import OrtModelsError
from . import model_loaded, said


@dataclass(frozen=True)
class Parameter:
    """One of the command's parameters; every one defaults to ``None`` (the model's own default)."""

    name: str
    help: str
    type: type = str
    flags: tuple[str, ...] = ()
    """Its option names (``--think/--no-think``: a switch); none for a positional argument."""


PARAMETERS = (
    Parameter("name", "Chat model name (default: DEFAULT_CHAT_MODEL)."),
    Parameter("prompt", "One prompt; omit for an interactive conversation."),
    Parameter("system", "A system message.", str, ("--system", "-s")),
    Parameter("max_tokens", "Most tokens per answer.", int, ("--max-tokens",)),
    Parameter("temperature", "0 is greedy.", float, ("--temperature", "-t")),
    Parameter("think", "A reasoning model's thinking on or off (default: its template's).", bool,
              ("--think/--no-think",)),
    Parameter("truncate", "Drop the oldest text when the conversation outgrows the model's context "
              "(default: refuse, saying by how much).", bool, ("--truncate/--no-truncate",)),
)

#: The values `quick_arguments` converts itself: those that typer reads as the same number.
_NUMBER = {int: re.compile(r"\d+"), float: re.compile(r"\d+(\.\d*)?|\.\d+")}


def quick_arguments(argv: list[str]) -> dict[str, Any] | None:
    """The values of a plain ``chat ...`` command line (``argv`` without the program), read as
    typer would; ``None`` when it is not plain: a root option first, help, an unknown, repeated
    or malformed option, ``--``, a value that starts with a dash, a third positional word."""
    if not argv or argv[0] != "chat":
        return None
    options: dict[str, tuple[Parameter, Any]] = {}
    for parameter in PARAMETERS:
        for flag in parameter.flags:
            if parameter.type is bool:
                on, off = flag.split("/")
                options.update({on: (parameter, True), off: (parameter, False)})
            else:
                options[flag] = (parameter, None)
    positional = [p for p in PARAMETERS if not p.flags]
    values: dict[str, Any] = {p.name: None for p in PARAMETERS}
    seen: set[str] = set()
    words = iter(argv[1:])
    for word in words:
        if not word.startswith("-") or word == "-":
            if not positional:
                return None
            parameter, value = positional.pop(0), word
        else:
            # ``--flag=value`` only: click reads ``-s=x`` as the value ``=x`` (left to typer, as ``-sx``)
            flag, equals, inline = word.partition("=") if word.startswith("--") else (word, "", "")
            if flag not in options:
                return None
            parameter, value = options[flag]
            if parameter.type is not bool:
                value = inline if equals else next(words, None)
                if value is None or value.startswith("-") or not _converts(parameter.type, value):
                    return None
                value = parameter.type(value)
            elif equals:
                return None
        if parameter.name in seen:
            return None
        seen.add(parameter.name)
        values[parameter.name] = value
    return values


def _converts(kind: type, value: str) -> bool:
    pattern = _NUMBER.get(kind)
    return pattern is None or pattern.fullmatch(value) is not None


def _texts(model: Any, history: list[dict[str, Any]], options: dict[str, Any]) -> Iterator[tuple[bool, str]]:
    """The answer's text as it comes, each piece marked True where it is a reasoning model's
    reasoning: from the model's chat service, or (a user's LangChain class) from its ``stream``."""
    if hasattr(model, "chat_events"):
        from ..runtime.events import ReasoningDelta, TextDelta, ToolCalls
        from ..runtime.options import ChatOptions

        for event in model.chat_events(history, ChatOptions.checked(**options)):
            if isinstance(event, ReasoningDelta):
                yield True, event.text
            elif isinstance(event, TextDelta):
                yield False, event.text
            elif isinstance(event, ToolCalls):
                yield False, event.content
        return
    from ..runtime.bridge import to_langchain

    for chunk in model.stream(to_langchain(history), **options):
        yield False, chunk.text


def _stream_reply(model: Any, history: list[dict[str, Any]], options: dict[str, Any]) -> str:
    """The answer written to stdout as it comes, as the model wrote it (no markup, no emoji
    codes: rich is loaded only for a conversation's prompt); a reasoning model's reasoning to
    stderr (dimmed on a terminal), so stdout holds the answer alone."""
    parts = []
    out, err = sys.stdout, sys.stderr
    dim, plain = ("\x1b[2m", "\x1b[0m") if err.isatty() else ("", "")
    reasoned = False
    for reasoning, text in _texts(model, history, options):
        if not text:
            continue
        if reasoning:
            err.write(dim + text + plain)
            err.flush()
            reasoned = True
            continue
        if reasoned:  # the reasoning ended: a line between it and the answer
            err.write("\n")
            err.flush()
            reasoned = False
        parts.append(text)
        out.write(text)
        out.flush()
    out.write("\n")
    out.flush()
    return "".join(parts)


def run_chat(name: str | None = None, prompt: str | None = None, system: str | None = None,
             max_tokens: int | None = None, temperature: float | None = None, think: bool | None = None,
             truncate: bool | None = None) -> None:
    """Stream the model's answer to PROMPT, or talk with it (history kept; /exit or Ctrl-D ends)."""
    from ..engine.session import discard_early
    from ..manager import ModelManager

    if name is not None and any(c.isspace() for c in name):  # a question where the name goes
        from ..errors import InvalidModelNameError

        raise InvalidModelNameError(f"{name[:60]!r} is not a model name: the model comes first, then the "
                                    "question (ortmodels chat NAME \"QUESTION\"; 'ortmodels list' names them).")
    if prompt is not None and not prompt.strip():  # a conversation skips blank lines; one question must be one
        from ..errors import ChatInputError

        raise ChatInputError("The question is empty: give one (ortmodels chat NAME \"QUESTION\"), or leave it "
                             "out to talk with the model.")
    options = {k: v for k, v in {"max_tokens": max_tokens, "temperature": temperature,
                                 "enable_thinking": think, "truncate_prompt": truncate}.items() if v is not None}
    if prompt is None:  # a conversation: a bad option is said now, not after the first question
        from ..runtime.options import ChatOptions

        ChatOptions.checked(**options)
    model = ModelManager().get_runtime("chat", name)  # ortmodels' own: no LangChain; a user's class: its own
    discard_early()  # a session `_open_early` started that this model did not take (a user's class)
    model_loaded()
    history: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    if prompt is not None:
        _stream_reply(model, [*history, {"role": "user", "content": prompt}], options)
        return
    from rich.markup import escape

    from . import err_console

    # stdout holds the answers alone: the banner, the prompt and a turn's error go to stderr, and
    # lines piped in (not a terminal) are read with neither banner nor prompt.
    typed = sys.stdin.isatty()
    asked = failed = 0
    if typed:
        err_console.print(f"[dim]{escape(str(model.model_name))}: /exit or Ctrl-D to end, /reset to forget the "
                          "conversation[/]")
    while True:
        try:
            line = err_console.input("[bold]you>[/] ") if typed else sys.stdin.readline()
        except (EOFError, KeyboardInterrupt):
            err_console.print()
            return
        ended = not typed and not line  # the end of what was piped in
        line = line.strip()
        if ended or line in ("/exit", "/quit"):
            if failed and not typed:  # piped in: a failed turn fails the command, as a one-shot answer does
                err_console.print(f"[bold red]error:[/] {failed} of {asked} turns failed (said above).",
                                  highlight=False)
                raise SystemExit(1)
            return
        if line == "/reset":
            history = history[:1] if system else []
            continue
        if not line:
            continue
        asked += 1
        try:
            answer = _stream_reply(model, [*history, {"role": "user", "content": line}], options)
        except OrtModelsError as exc:  # this turn only: the conversation goes on, its history kept
            failed += 1
            err_console.print(f"[bold red]error:[/] {escape(said(exc))}", highlight=False, soft_wrap=True)
            err_console.print("[dim](not added to the conversation; /reset forgets it, to start afresh)[/]")
            continue
        history += [{"role": "user", "content": line}, {"role": "assistant", "content": answer}]

"""``ortmodels chat``: one answer streamed to the terminal, or a conversation."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import typer

from . import app, model_loaded


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


@app.command()
def chat(
    name: str = typer.Argument(None, help="Chat model name (default: DEFAULT_CHAT_MODEL)."),
    prompt: str = typer.Argument(None, help="One prompt; omit for an interactive conversation."),
    system: str = typer.Option(None, "--system", "-s", help="A system message."),
    max_tokens: int = typer.Option(None, "--max-tokens", help="Most tokens per answer."),
    temperature: float = typer.Option(None, "--temperature", "-t", help="0 is greedy."),
    think: bool = typer.Option(None, "--think/--no-think",
                               help="A reasoning model's thinking on or off (default: its template's)."),
) -> None:
    """Stream the model's answer to PROMPT, or talk with it (history kept; /exit or Ctrl-D ends)."""
    from ..engine.session import discard_early
    from ..manager import ModelManager

    model = ModelManager().get_runtime("chat", name)  # ortmodels' own: no LangChain; a user's class: its own
    discard_early()  # a session `_open_early` started that this model did not take (a user's class)
    model_loaded()
    options = {k: v for k, v in {"max_tokens": max_tokens, "temperature": temperature,
                                 "enable_thinking": think}.items() if v is not None}
    history: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    if prompt is not None:
        _stream_reply(model, [*history, {"role": "user", "content": prompt}], options)
        return
    from . import console

    console.print(f"[dim]{model.model_name}: /exit or Ctrl-D to end, /reset to forget the conversation[/]")
    while True:
        try:
            line = console.input("[bold]you>[/] ").strip()
        except (EOFError, KeyboardInterrupt):
            console.print()
            return
        if line in ("/exit", "/quit"):
            return
        if line == "/reset":
            history = history[:1] if system else []
            continue
        if not line:
            continue
        history.append({"role": "user", "content": line})
        history.append({"role": "assistant", "content": _stream_reply(model, history, options)})

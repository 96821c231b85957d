"""``ortmodels chat``: one answer streamed to the terminal, or a conversation."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from . import app, console

if TYPE_CHECKING:
    from langchain_core.messages import BaseMessage

    from ..base import BaseLLMModel


def _stream_reply(model: BaseLLMModel, history: list[BaseMessage], options: dict) -> str:
    parts = []
    for chunk in model.stream(history, **options):
        text = chunk.text
        if text:
            parts.append(text)
            console.print(text, end="", markup=False, highlight=False, soft_wrap=True)
    console.print()
    return "".join(parts)


@app.command()
def chat(
    name: str = typer.Argument(None, help="Chat model name (default: DEFAULT_CHAT_MODEL)."),
    prompt: str = typer.Argument(None, help="One prompt; omit for an interactive conversation."),
    system: str = typer.Option(None, "--system", "-s", help="A system message."),
    max_tokens: int = typer.Option(None, "--max-tokens", help="Most tokens per answer."),
    temperature: float = typer.Option(None, "--temperature", "-t", help="0 is greedy."),
) -> None:
    """Stream the model's answer to PROMPT, or talk with it (history kept; /exit or Ctrl-D ends)."""
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

    from ..manager import ModelManager

    model = ModelManager().get_chat_model(name)
    options = {k: v for k, v in {"max_tokens": max_tokens, "temperature": temperature}.items() if v is not None}
    history: list[BaseMessage] = [SystemMessage(system)] if system else []
    if prompt is not None:
        _stream_reply(model, [*history, HumanMessage(prompt)], options)
        return
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
        history.append(HumanMessage(line))
        history.append(AIMessage(_stream_reply(model, history, options)))

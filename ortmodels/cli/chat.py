"""``ortmodels chat`` as a typer command, made from `chat_run.PARAMETERS` (help, a root option,
anything `chat_run.quick_arguments` leaves to typer); the command itself is `chat_run.run_chat`."""

from __future__ import annotations

import inspect
from typing import Any

import typer

from . import app, chat_run


def chat(**values: Any) -> None:
    chat_run.run_chat(**values)


chat.__signature__ = inspect.Signature([  # type: ignore[attr-defined]  (typer reads the signature)
    inspect.Parameter(
        p.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=p.type,
        default=typer.Option(None, *p.flags, help=p.help) if p.flags else typer.Argument(None, help=p.help),
    ) for p in chat_run.PARAMETERS
])
chat.__annotations__ = {p.name: p.type for p in chat_run.PARAMETERS}
chat.__doc__ = chat_run.run_chat.__doc__
app.command()(chat)

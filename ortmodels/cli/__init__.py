"""The ``ortmodels`` command: one module per command group, wired into one typer app."""

from __future__ import annotations

import logging
import sys

import typer
from rich.console import Console

from ..errors import OrtModelsError

app = typer.Typer(
    name="ortmodels",
    help="Export Hugging Face checkpoints to ONNX and run them locally.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what happens.")) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


def _register() -> None:
    from . import chat, demo, embed, export, lifecycle, models, rerank, samples, serve  # noqa: F401  (each adds its commands)


def main() -> None:
    _register()
    try:
        app()
    except OrtModelsError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(1)

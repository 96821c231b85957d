"""``ortmodels serve``: the OpenAI-compatible HTTP server."""

from __future__ import annotations

import logging

import typer

from . import app, console


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8000, "--port", help="Port to listen on."),
    models: str = typer.Option(None, "--models", help="Models to load at start, comma-separated (name or "
                               "name:int8); default: DEFAULT_CHAT_MODEL and DEFAULT_EMBEDDING_MODEL."),
    api_key: str = typer.Option(None, "--api-key", envvar="ORTMODELS_API_KEY",
                                help="Require 'Authorization: Bearer KEY' on /v1 routes."),
    max_queue: int = typer.Option(64, "--max-queue", min=1, help="Requests waiting or running at once; more "
                                  "are answered 503 with Retry-After."),
    shutdown_timeout: float = typer.Option(30.0, "--shutdown-timeout", min=0.0, help="Seconds running requests "
                                           "get to finish after SIGTERM before they are cancelled."),
) -> None:
    """Serve the models over OpenAI's API: /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models."""
    from ..serve import run

    verbose = logging.getLogger().isEnabledFor(logging.INFO)
    console.print(f"[dim]ortmodels serve on http://{host}:{port}/v1 (Ctrl-C or SIGTERM stops)[/]", highlight=False)
    run(host=host, port=port, models=models, api_key=api_key, max_queue=max_queue,
        shutdown_timeout=shutdown_timeout, log_level="info" if verbose else "warning")

"""``ortmodels serve``: the OpenAI-compatible HTTP server."""

from __future__ import annotations

import ipaddress
import logging
import os

import typer

from ..config import check_api_key
from ..errors import ConfigurationError
from . import app, console, err_console

API_KEY_VAR = "ORTMODELS_API_KEY"


def _api_key(value: str | None) -> str | None:
    """``--api-key`` (or ``ORTMODELS_API_KEY``): refused when empty, blank or unsendable (exit 2)."""
    if value is None and os.environ.get(API_KEY_VAR) == "":  # click reads an empty variable as unset
        value = ""
    try:
        return check_api_key(value)
    except ConfigurationError as exc:
        raise typer.BadParameter(str(exc)) from None


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="Port to listen on."),
    models: str = typer.Option(None, "--models", help="Models to load at start, comma-separated (name or "
                               "name:int8); default: DEFAULT_CHAT_MODEL, DEFAULT_EMBEDDING_MODEL and "
                               "DEFAULT_RERANK_MODEL, those exported."),
    api_key: str = typer.Option(None, "--api-key", envvar=API_KEY_VAR, callback=_api_key,
                                help="Require 'Authorization: Bearer KEY' on /v1 routes (visible ASCII, "
                                "no spaces)."),
    max_queue: int = typer.Option(64, "--max-queue", min=1, help="Requests waiting or running at once; more "
                                  "are answered 503 with Retry-After."),
    shutdown_timeout: float = typer.Option(30.0, "--shutdown-timeout", min=0.0, help="Seconds running requests "
                                           "get to finish after SIGTERM before they are cancelled."),
    ray: bool = typer.Option(False, "--ray", help="Run on Ray Serve: start a local Ray cluster, or join "
                             "RAY_ADDRESS's (needs the ray extra)."),
    replicas: int = typer.Option(1, "--replicas", min=1, help="With --ray: replicas of each model."),
    autoscale: str = typer.Option(None, "--autoscale", metavar="MIN:MAX", help="With --ray: scale each model "
                                  "between MIN and MAX replicas on ongoing requests."),
    threads: int = typer.Option(None, "--threads", min=1, help="With --ray: MODEL_THREADS per replica "
                                "(default: the cluster's CPUs over the replicas)."),
) -> None:
    """Serve the models over OpenAI's API (chat, completions, embeddings, responses, models), Anthropic's
    /v1/messages, /v1/rerank, /tokenize and a chat page at /; the README lists every route."""
    verbose = logging.getLogger().isEnabledFor(logging.INFO)
    ray_only = [flag for flag, given in (("--replicas", replicas != 1), ("--autoscale", autoscale is not None),
                                         ("--threads", threads is not None)) if given]
    if ray_only and not ray:  # the local server has one model instance each: they would do nothing
        many = len(ray_only) > 1
        raise typer.BadParameter(f"{', '.join(ray_only)} only appl{'y' if many else 'ies'} with --ray: add --ray, "
                                 f"or leave {'them' if many else 'it'} out.")
    if api_key is None and not _loopback(host):
        err_console.print(f"[yellow]warning:[/] listening on {host} without an API key: anyone who can reach "
                          f"this address can use the models. Set --api-key (or {API_KEY_VAR}) to require one.",
                          highlight=False)
    if ray:
        from ..serve.ray import run as run_on_ray

        console.print(f"[dim]ortmodels serve --ray on http://{host}:{port}/v1 (Ctrl-C or SIGTERM stops)[/]",
                      highlight=False)
        run_on_ray(host=host, port=port, models=models, replicas=replicas, autoscale=autoscale, threads=threads,
                   api_key=api_key, max_queue=max_queue)
        return
    from ..serve import run

    def ready() -> None:  # the port is bound: only now does the banner say so
        console.print(f"[dim]ortmodels serve on http://{host}:{port}/v1 (Ctrl-C or SIGTERM stops)[/]",
                      highlight=False)

    run(host=host, port=port, models=models, api_key=api_key, max_queue=max_queue,
        shutdown_timeout=shutdown_timeout, log_level="info" if verbose else "warning", ready=ready)

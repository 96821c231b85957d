"""The same OpenAI-compatible server on Ray Serve (needs the ``ray`` extra: ``pip install 'ortmodels[ray]'``).

``ortmodels serve --ray`` starts (or joins, with ``RAY_ADDRESS``) a Ray cluster and runs
`build_app` on it; Ray's own CLI runs it too: ``serve run ortmodels.serve.ray:app``
(the default models, one replica each) or ``serve run ortmodels.serve.ray:builder
replicas=2`` (Ray hands a builder its arguments as one dict of strings). Ray is imported
on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...lazy import Extra, lazy_attribute

if TYPE_CHECKING:
    from .deployments import build_app
    from .run import run

_PUBLIC = {"build_app": ".deployments", "run": ".run", "plan": ".deployments"}
_EXTRA = Extra("Ray Serve", "ray", ("ray", "fastapi", "uvicorn", "starlette"))


def _builder(args: dict[str, str]) -> Any:
    """``serve run ortmodels.serve.ray:builder key=value ...``: the arguments as strings."""
    build = __getattr__("build_app")
    typed: dict[str, Any] = dict(args)
    for key in ("replicas", "threads", "max_queue", "target_ongoing_requests", "ingress_replicas"):
        if key in typed:
            typed[key] = int(typed[key])
    for key in ("cpus", "health_check_period_s"):
        if key in typed:
            typed[key] = float(typed[key])
    return build(**typed)


def __getattr__(name: str) -> Any:
    if name == "app":  # built when Ray's CLI asks for it, not on import
        return __getattr__("build_app")()
    if name == "builder":
        return _builder
    return lazy_attribute(__name__, name, _PUBLIC, _EXTRA)


__all__ = ["build_app", "plan", "run"]

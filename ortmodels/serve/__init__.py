"""``ortmodels serve``: an OpenAI-compatible HTTP server (needs the ``serve`` extra).

``create_app`` builds the ASGI app (for ``uvicorn --factory ortmodels.serve:create_app``);
``run`` serves it with uvicorn. FastAPI and uvicorn are imported on first use, so
``import ortmodels`` never loads them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..lazy import Extra, lazy_attribute

if TYPE_CHECKING:
    from .app import create_app
    from .run import run

_PUBLIC = {"create_app": ".app", "run": ".run"}


_EXTRA = Extra("The server", "serve", ("fastapi", "uvicorn", "starlette"))


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, name, _PUBLIC, _EXTRA)


__all__ = ["create_app", "run"]

"""``ortmodels serve``: an OpenAI-compatible HTTP server (needs the ``serve`` extra).

``create_app`` builds the ASGI app (for ``uvicorn --factory ortmodels.serve:create_app``);
``run`` serves it with uvicorn. FastAPI and uvicorn are imported on first use, so
``import ortmodels`` never loads them.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from ..errors import MissingDependencyError

if TYPE_CHECKING:
    from .app import create_app
    from .run import run

_PUBLIC = {"create_app": ".app", "run": ".run"}


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'ortmodels.serve' has no attribute {name!r}")
    try:
        value = getattr(import_module(module, __name__), name)
    except ModuleNotFoundError as exc:
        if exc.name in ("fastapi", "uvicorn", "starlette"):
            raise MissingDependencyError(
                f"The server needs {exc.name}: pip install 'ortmodels[serve]'."
            ) from None
        raise
    globals()[name] = value
    return value


__all__ = ["create_app", "run"]

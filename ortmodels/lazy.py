"""Public names imported on first use (PEP 562), for the package and its optional parts.

``import ortmodels`` stays cheap, and the server's and Ray's parts import FastAPI or Ray
only when one of their names is first asked for; a missing optional dependency then says
which extra to install instead of a bare ``ModuleNotFoundError``.
"""

from __future__ import annotations

import sys
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from importlib import import_module
from typing import Any

from .errors import MissingDependencyError


@dataclass(frozen=True)
class Extra:
    """An optional part: who needs it (for the message), the extra's name, its top-level modules."""

    who: str
    name: str
    modules: Collection[str]


def lazy_attribute(package: str, name: str, public: Mapping[str, str], extra: Extra | None = None) -> Any:
    """``package``'s public ``name``, imported from its submodule in ``public`` and kept in the
    package's namespace, so later lookups skip this function."""
    module = public.get(name)
    if module is None:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    try:
        value = getattr(import_module(module, package), name)
    except ModuleNotFoundError as exc:
        if extra is not None and exc.name is not None and exc.name.split(".")[0] in extra.modules:
            raise MissingDependencyError(
                f"{extra.who} needs {exc.name}: pip install 'ortmodels[{extra.name}]'."
            ) from None
        raise
    setattr(sys.modules[package], name, value)
    return value

"""Model names double as folder names, so they are checked before any path is built."""

from __future__ import annotations

import re

from ..errors import InvalidModelNameError

_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")


def validate_model_name(name: object) -> str:
    """Return ``name`` if it is a plain folder name; otherwise raise before touching the disk."""
    if not isinstance(name, str):
        raise InvalidModelNameError(f"A model name must be a string, not {type(name).__name__}.")
    if not _PLAIN.fullmatch(name) or ".." in name:  # fullmatch: "$" would let a trailing newline through
        shown = f"{name[:60]!r}... ({len(name)} characters)" if len(name) > 60 else repr(name)
        raise InvalidModelNameError(
            f"Invalid model name {shown}: use a plain folder name of 1 to 128 letters, digits, '.', '_', "
            "'+' and '-' (no '/', '\\', '..', space, absolute path or leading dot)."
        )
    return name


def split_tag(name: object, dtype: str | None = None) -> tuple[str, str | None]:
    """``"model:int8"`` → ``("model", "int8")``, as Ollama's tags; checks both parts.

    A tag and a ``dtype`` argument that disagree are an error rather than a silent pick;
    ``auto`` (either way) asks for no precision: ``MODEL_DTYPE``'s choice, as when none is given.
    """
    from ..precision import normalize_precision

    def asked(value: str | None) -> str | None:
        if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
            return None
        return normalize_precision(value)

    if isinstance(name, str) and ":" in name:
        name, tag = name.rsplit(":", 1)
        tagged, given = asked(tag), asked(dtype)
        if given is not None and tagged is not None and given != tagged:
            raise InvalidModelNameError(
                f"The model tag ':{tag}' and dtype={dtype!r} disagree; give the precision once."
            )
        dtype = tagged or given
    else:
        dtype = asked(dtype)
    return validate_model_name(name), dtype

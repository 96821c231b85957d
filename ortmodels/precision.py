"""Precision names: the settings' spelling (``float32``) and the variant folders' (``fp32``).

Users meet both spellings (``MODEL_DTYPE=float16``, ``--dtype fp16``); one table
maps them so every entry point accepts either.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

from .errors import ConfigurationError
from .kinds import KINDS

logger = logging.getLogger(__name__)

#: Variant folder names, in the order ``auto`` prefers them on a CPU.
VARIANTS: tuple[str, ...] = ("fp32", "fp16", "bf16", "int8", "int4")

_ALIASES: dict[str, str] = {
    "fp32": "fp32",
    "float32": "fp32",
    "float": "fp32",
    "fp16": "fp16",
    "float16": "fp16",
    "half": "fp16",
    "bf16": "bf16",
    "bfloat16": "bf16",
    "int8": "int8",
    "q8": "int8",
    "int4": "int4",
    "q4": "int4",
}


def normalize_precision(value: str) -> str:
    """Return the variant folder name for any accepted spelling, or raise naming the choices."""
    try:
        return _ALIASES[value.strip().lower()]
    except (KeyError, AttributeError):  # AttributeError: not a string (dtype=4)
        raise ConfigurationError(
            f"Unknown precision {value!r}. Use one of: auto, float32, float16, bfloat16, "
            "int8, int4 (or fp32, fp16, bf16)."
        ) from None


def parse_precision_list(value: str) -> list[str]:
    """Parse ``"fp32,int8"`` into variant names, keeping order and dropping repeats."""
    names: list[str] = []
    for part in value.split(","):
        if part.strip():
            name = normalize_precision(part)
            if name not in names:
                names.append(name)
    if not names:
        raise ConfigurationError("No precision given. Use for example --dtype fp32,int8.")
    return names


_GPU_PREFERENCE = ("fp16", "fp32", "int8", "int4")


def select_variant(requested: str, exported: list[str], kind: str, device: str,
                   failed: Collection[str] = (), asked: bool = False) -> str:
    """Pick the precision to load: the asked-for one, or for ``auto`` the best exported one.

    ``MODEL_DTYPE`` is one setting for every model, so a precision a kind is never exported
    in (int4 for embeddings, bf16 for now) falls back to ``auto`` for that kind, with a warning;
    one ``asked`` for this model (a tag, ``dtype=``) is an error instead.
    ``auto`` never picks a precision in ``failed`` (it failed its quality gates at export);
    asking for one by name is left to the store, whose error gives its figures.
    """
    exported = [dtype for dtype in exported if dtype not in failed] or list(exported)
    name = "auto" if requested == "auto" else normalize_precision(requested)
    asked_as = f"The precision {requested!r}" if asked else "MODEL_DTYPE=bfloat16"
    if name == "bf16" and device != "cuda":
        raise ConfigurationError(
            f"{asked_as} runs only on the CUDA provider, and the device here is {device}. "
            "Use float32 or int8 (or float16 on CUDA/CoreML), or set MODEL_DEVICE=cuda on a GPU."
        )
    spec = KINDS.get(kind)
    if name != "auto" and spec is not None and name not in spec.precisions and asked:
        raise ConfigurationError(f"{kind.capitalize()} models are not exported as {name} (only "
                                 f"{', '.join(spec.precisions)}): ask for one of those, or leave the precision out.")
    if name != "auto" and spec is not None and name not in spec.precisions:
        logger.warning(
            "%s models are not exported as %s (only %s); loading the best exported variant.",
            kind, name, ", ".join(spec.precisions),
        )
        name = "auto"
    if name == "auto":
        preference = spec.auto_cpu if (spec is not None and device == "cpu") else _GPU_PREFERENCE
        for candidate in preference:
            if candidate in exported:
                return candidate
        return exported[0] if exported else "fp32"
    return name

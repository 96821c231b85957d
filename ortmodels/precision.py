"""Precision names: the settings' spelling (``float32``) and the variant folders' (``fp32``).

Users meet both spellings (``MODEL_DTYPE=float16``, ``--dtype fp16``); one table
maps them so every entry point accepts either.
"""

from __future__ import annotations

import logging

from .errors import ConfigurationError

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
    key = value.strip().lower()
    try:
        return _ALIASES[key]
    except KeyError:
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


_AUTO_PREFERENCE: dict[tuple[str, str], tuple[str, ...]] = {
    # Embeddings stay in fp32 on the CPU: dynamic int8 costs too much quality to pick silently.
    ("embedding", "cpu"): ("fp32", "int8"),
    ("chat", "cpu"): ("int4", "int8", "fp32"),
}
_GPU_PREFERENCE = ("fp16", "fp32", "int8", "int4")


#: The precisions each kind of model is exported in (the exporters use these lists).
KIND_PRECISIONS: dict[str, tuple[str, ...]] = {
    "embedding": ("fp32", "int8"),
    "chat": ("fp32", "fp16", "int8", "int4"),
}


def select_variant(requested: str, exported: list[str], kind: str, device: str) -> str:
    """Pick the precision to load: the asked-for one, or for ``auto`` the best exported one.

    ``MODEL_DTYPE`` is one setting for every model, so a precision a kind is never exported
    in (int4 for embeddings, bf16 for now) falls back to ``auto`` for that kind, with a warning.
    """
    name = "auto" if requested == "auto" else normalize_precision(requested)
    if name == "bf16" and device != "cuda":
        raise ConfigurationError(
            f"MODEL_DTYPE=bfloat16 runs only on the CUDA provider, and the device here is {device}. "
            "Use float32 or int8 (or float16 on CUDA/CoreML), or set MODEL_DEVICE=cuda on a GPU."
        )
    if name != "auto" and name not in KIND_PRECISIONS.get(kind, VARIANTS):
        logger.warning(
            "%s models are not exported as %s (only %s); loading the best exported variant.",
            kind, name, ", ".join(KIND_PRECISIONS.get(kind, ())),
        )
        name = "auto"
    if name == "auto":
        preference = _AUTO_PREFERENCE.get((kind, device), _GPU_PREFERENCE)
        for candidate in preference:
            if candidate in exported:
                return candidate
        return exported[0] if exported else "fp32"
    return name

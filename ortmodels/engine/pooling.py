"""Pooling of token vectors into one sentence vector, as sentence-transformers defines it.

Shared by the runtime and the export's parity check, so both pool the same way.
"""

from __future__ import annotations

import numpy as np

POOLING_MODES = ("mean", "cls", "lasttoken", "max")


def pool(hidden: np.ndarray, attention_mask: np.ndarray, mode: str) -> np.ndarray:
    """Pool ``hidden`` [batch, seq, dim] under ``attention_mask`` [batch, seq] (right padding)."""
    if mode == "mean":
        mask = attention_mask[..., None].astype(hidden.dtype)
        summed = (hidden * mask).sum(axis=1)
        return summed / np.clip(mask.sum(axis=1), 1e-9, None)
    if mode == "cls":
        return hidden[:, 0]
    if mode == "lasttoken":
        last = attention_mask.sum(axis=1).astype(np.int64) - 1
        return hidden[np.arange(hidden.shape[0]), np.clip(last, 0, None)]
    if mode == "max":
        masked = np.where(attention_mask[..., None].astype(bool), hidden, -np.inf)
        return masked.max(axis=1)
    raise ValueError(f"Unknown pooling mode {mode!r}; expected one of {', '.join(POOLING_MODES)}.")


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Unit-length rows (a zero row stays zero), as sentence-transformers' Normalize does."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.clip(norms, 1e-12, None)

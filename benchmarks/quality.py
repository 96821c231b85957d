"""Quality figures that need only numpy: perplexity, cosine to a reference, neighbour agreement.

Kept apart from the timing code so that a test can check them on tiny inputs, and so
that every contender's figures (ONNX Runtime, onnxruntime-genai, llama.cpp) go through
the very same arithmetic.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def perplexity(logits: np.ndarray, ids: Sequence[int]) -> float:
    """exp of the mean negative log-likelihood of ``ids[1:]``, each given the logits before it.

    ``logits`` is ``[len(ids), vocab]`` (row i predicts token i + 1); the last row is unused.
    Computed in float64 with the max subtracted, so fp16 logits of any size stay finite.
    """
    if len(ids) < 2 or logits.shape[0] < len(ids) - 1:
        raise ValueError(f"need logits for {len(ids) - 1} positions, got {logits.shape[0]}")
    scores = np.asarray(logits[: len(ids) - 1], dtype=np.float64)
    scores = scores - scores.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(scores).sum(axis=1))
    targets = np.asarray(ids[1:], dtype=np.int64)
    nll = log_norm - scores[np.arange(len(targets)), targets]
    return float(np.exp(nll.mean()))


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    vectors = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1.0, norms)


def cosine_rows(got: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of ``got`` with the same row of ``reference``."""
    return (normalise(got) * normalise(reference)).sum(axis=1)


def top_k_neighbours(vectors: np.ndarray, k: int) -> np.ndarray:
    """For each row, the indices of its ``k`` most cosine-similar other rows, best first."""
    unit = normalise(vectors)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)  # a sentence is not its own neighbour
    k = min(k, len(unit) - 1)
    part = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(similarity, part, axis=1).argsort(axis=1)[:, ::-1]
    return np.take_along_axis(part, order, axis=1)


def top_k_agreement(got: np.ndarray, reference: np.ndarray, k: int = 10) -> float:
    """Mean share of each sentence's top-``k`` neighbours under ``got`` that are also its
    top-``k`` under ``reference`` (order ignored): what a search index would notice."""
    ours, theirs = top_k_neighbours(got, k), top_k_neighbours(reference, k)
    shared = [len(set(a) & set(b)) / len(b) for a, b in zip(ours.tolist(), theirs.tolist())]
    return float(np.mean(shared))

"""Token choice for a decode loop: greedy, temperature/top-k/top-p sampling, repetition and DRY penalties.

Pure numpy: no session here, so each piece is testable on its own. A request may carry a
`LogitsProcessor` (a grammar mask, a banned-token list) that edits its row of logits in
place before the choice and hears which token was chosen after it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from .dry import DryParams

_FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class SamplingParams:
    """How the next token is chosen; ``temperature == 0`` means greedy."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    seed: int | None = None
    dry: DryParams | None = None
    """DRY's settings (`dry.DryPenalty`), None or a zero multiplier when off."""

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


def apply_repetition_penalty(logits: np.ndarray, seen: np.ndarray, penalty: float) -> np.ndarray:
    """CTRL-style penalty as transformers applies it: divide positive, multiply negative logits.

    Any finite penalty the options accept is safe: the penalized scores are computed in
    float64 and held within float32's finite range (a penalty of 1e-300 would otherwise
    make them infinite, and infinity minus infinity is NaN), and a banned (-inf) score stays banned.
    """
    if penalty == 1.0 or seen.size == 0:
        return logits
    logits = logits.copy()
    scores = logits[seen].astype(np.float64)
    with np.errstate(over="ignore"):
        penalized = np.where(scores > 0, scores / penalty, scores * penalty)
    logits[seen] = np.where(np.isfinite(scores), np.clip(penalized, -_FLOAT32_MAX, _FLOAT32_MAX), scores)
    return logits


def choose_token(
    logits: np.ndarray, params: SamplingParams, seen: np.ndarray, rng: np.random.Generator | None,
    penalize: Callable[[np.ndarray], None] | None = None,
) -> int:
    """The next token id from one row of logits (``rng``: ``None`` only for greedy ``params``).

    ``penalize`` edits a copy of the row after the repetition penalty (the request's DRY
    penalty, in llama.cpp's order), so the caller's row keeps the model's logits.

    The logits are shifted so the best is 0 before they are divided by the temperature, in
    float64: a temperature so small that a logit divided by it would overflow (1e-38, 5e-324)
    then sends every other token to -inf, the limit of sampling as the temperature goes to 0
    (greedy, ties shared), instead of inf - inf = NaN.
    """
    row = logits.astype(np.float32, copy=False)
    logits = apply_repetition_penalty(row, seen, params.repetition_penalty)
    if penalize is not None:
        if logits is row:
            logits = row.copy()
        penalize(logits)
    if params.greedy:
        return int(np.argmax(logits))
    best = float(np.max(logits))
    if not np.isfinite(best):  # every token banned: nothing to weigh, as greedy would choose
        return int(np.argmax(logits))
    with np.errstate(over="ignore"):
        scaled = (logits.astype(np.float64) - best) / params.temperature
    if params.top_k and params.top_k < scaled.size:
        kth = np.partition(scaled, -params.top_k)[-params.top_k]
        scaled = np.where(scaled < kth, -np.inf, scaled)
    probs = np.exp(scaled)
    probs /= probs.sum()
    if params.top_p < 1.0:
        order = np.argsort(-probs)
        cumulative = np.cumsum(probs[order])
        keep = order[: int(np.searchsorted(cumulative, params.top_p)) + 1]
        mask = np.zeros_like(probs)
        mask[keep] = probs[keep]
        probs = mask / mask.sum()
    if rng is None:
        raise ValueError("Sampling at a temperature above 0 needs a random generator (rng).")
    return int(rng.choice(probs.size, p=probs))


@runtime_checkable
class LogitsProcessor(Protocol):
    """Per-request hook around token choice; state (a grammar's position) lives in the object.

    `mask` edits one float32 row of logits in place (set disallowed tokens to ``-inf``);
    `accept` is told the token that was chosen, so the processor can advance. An exception
    from either fails only the request that owns the processor. A processor whose ``active``
    attribute is true holds the text to a grammar: the request's stop strings do not cut it.
    """

    def mask(self, logits: np.ndarray) -> None: ...

    def accept(self, token_id: int) -> None: ...


@dataclass
class BannedTokens:
    """The simplest processor: these token ids are never chosen (also a test of the hook)."""

    token_ids: tuple[int, ...]

    def mask(self, logits: np.ndarray) -> None:
        logits[list(self.token_ids)] = -np.inf

    def accept(self, token_id: int) -> None:
        return None


@dataclass(frozen=True)
class TokenLogprob:
    """A chosen token's log-probability and the likeliest alternatives (OpenAI's ``logprobs``)."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


def token_logprob(logits: np.ndarray, token_id: int, top: int) -> TokenLogprob:
    """Log-probabilities from one row of logits as the model gave them (after any grammar mask,
    before temperature and penalties), for the chosen token and the ``top`` likeliest."""
    row = logits.astype(np.float64, copy=False)
    peak = float(np.max(row))
    log_norm = peak + float(np.log(np.sum(np.exp(row - peak))))
    best: tuple[tuple[int, float], ...] = ()
    if top > 0:
        count = min(top, row.size)
        ids = np.argpartition(-row, count - 1)[:count]
        ids = ids[np.argsort(-row[ids], kind="stable")]
        best = tuple((int(i), float(row[i] - log_norm)) for i in ids)
    return TokenLogprob(int(token_id), float(row[token_id] - log_norm), best)

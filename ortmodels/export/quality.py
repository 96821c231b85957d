"""Quality gates: whether an exported variant is good enough to be loaded.

Parity figures (`decoder.parity`, `encoder.embedding`) become a `QualityVerdict` here. A variant
that fails keeps its figures in the manifest but is never loaded: ``auto`` skips it and
asking for it by name is an error that quotes them. The bounds are per precision: what a
faithful conversion of that kind keeps, measured on the samples (see the README's table).

``ortmodels export --skip-gates`` (random-weight checkpoints for benchmarks, which no gate
can pass) runs the same checks and records the same figures, but the verdicts of every
variant but fp32 say "not judged" and are published whatever they say. fp32 stays judged:
it must match PyTorch (a broken graph is never wanted, and it is what the others are
measured against), so the flag skips the quality gates of the other precisions only.
"""

from __future__ import annotations

import contextvars
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ..store.manifest import QualityVerdict

#: Precisions judged even with ``--skip-gates``: parity with PyTorch is a hard check.
ALWAYS_JUDGED = ("fp32",)
_skipping: contextvars.ContextVar[bool] = contextvars.ContextVar("skip_gates", default=False)


@contextmanager
def gates_skipped(skip: bool = True) -> Iterator[None]:
    """Inside the block, the verdicts of precisions other than fp32 are "not judged"."""
    token = _skipping.set(skip)
    try:
        yield
    finally:
        _skipping.reset(token)


def gates_are_skipped() -> bool:
    """Whether this export runs inside `gates_skipped` (then a recipe search has nothing to go by)."""
    return _skipping.get()


def _unless_skipped(dtype: str, verdict: QualityVerdict) -> QualityVerdict:
    if _skipping.get() and dtype not in ALWAYS_JUDGED:
        return verdict.model_copy(update={"judged": False})
    return verdict

#: Perplexity on the fixed text, at most this many times PyTorch fp32's.
PERPLEXITY_RATIO: dict[str, float] = {"fp32": 1.001, "fp16": 1.01, "bf16": 1.02, "int8": 1.02, "int4": 1.10}
#: Teacher-forced next-token agreement with PyTorch fp32 on the same text, at least.
#: (The sample measures fp16 1.000, int8 0.974, int4 0.858; 4 bits lose one token in 7.)
TOP1_AGREEMENT: dict[str, float] = {"fp32": 0.99, "fp16": 0.98, "bf16": 0.97, "int8": 0.95, "int4": 0.80}
LOOP_MIN_TOKENS = 12  # a loop counts once it fills this many trailing tokens ...
LOOP_MAX_PERIOD = 12  # ... repeating a cycle at most this long ...
LOOP_MIN_REPEATS = 3  # ... at least this many times


def find_loop(ids: Sequence[int]) -> int | None:
    """The period of a cycle the answer ends in (``la France, la France, ...``), or ``None``."""
    for period in range(1, LOOP_MAX_PERIOD + 1):
        span = max(LOOP_MIN_TOKENS, period * LOOP_MIN_REPEATS)
        if len(ids) < span:
            break
        tail = ids[-span:]
        if all(tail[i] == tail[i + period] for i in range(span - period)):
            return period
    return None


def derailment(got: Sequence[int], got_text: str, expected: Sequence[int], expected_text: str,
               keywords: Sequence[str]) -> str | None:
    """Why a variant's answer derails where PyTorch's does not, or ``None``."""
    if find_loop(got) and not find_loop(expected):
        return f"loops ({got_text[-60:]!r})"
    knows = [k for k in keywords if k.lower() in expected_text.lower()]
    if knows and not any(k.lower() in got_text.lower() for k in keywords):
        return f"misses {knows[0]!r}, which fp32 answers"
    return None


def judge_decoder(dtype: str, parity: dict[str, Any]) -> QualityVerdict:
    """The gates of a chat variant: finite logits, perplexity, agreement, plain questions."""
    ratio_bound, top1_bound = PERPLEXITY_RATIO.get(dtype, 1.10), TOP1_AGREEMENT.get(dtype, 0.85)
    failures: list[str] = []
    if not parity.get("finite", True):
        failures.append("non-finite logits (NaN or infinity)")
    reference, got = parity.get("perplexity_fp32"), parity.get("perplexity")
    ratio = (got / reference) if (isinstance(got, float) and reference) else float("nan")
    if not ratio <= ratio_bound:  # NaN fails too
        failures.append(f"perplexity {ratio:.3f}x fp32's > {ratio_bound}")
    top1 = parity.get("top1_agreement")
    if top1 is not None and not top1 >= top1_bound:
        failures.append(f"next-token agreement {top1:.3f} < {top1_bound}")
    failures += [f"{row['question']!r} {row['derailed']}" for row in parity.get("probes", []) if row.get("derailed")]
    return _unless_skipped(dtype, QualityVerdict(
        passed=not failures, failures=failures,
        bounds={"perplexity_ratio_max": ratio_bound, "top1_agreement_min": top1_bound, "finite": True,
                "probes": "no loop or missed answer where fp32 has none"},
    ))


def judge_embedding(dtype: str, parity: dict[str, Any]) -> QualityVerdict:
    """The gates of an embedding variant: finite vectors, and int8 close enough to fp32."""
    from .encoder.quantize import INT8_MIN_COSINE, INT8_MIN_COSINE_MEAN, INT8_MIN_TOP10

    failures: list[str] = []
    cosine_min = parity.get("cosine_min")
    if not isinstance(cosine_min, float) or not math.isfinite(cosine_min):
        failures.append("non-finite vectors (NaN)")
    vs_fp32 = parity.get("vs_fp32")
    if vs_fp32 is not None and not vs_fp32.get("meets_bar", True):
        failures.append(
            f"int8 vs fp32: cosine mean {vs_fp32['cosine_mean']:.4f} (>= {INT8_MIN_COSINE_MEAN}), worst "
            f"{vs_fp32['cosine_min']:.4f} (>= {INT8_MIN_COSINE}), top-10 {vs_fp32['top10_agreement']:.3f} "
            f"(>= {INT8_MIN_TOP10})"
        )
    return _unless_skipped(dtype, QualityVerdict(
        passed=not failures, failures=failures,
        bounds={"finite": True, "int8_cosine_mean_min": INT8_MIN_COSINE_MEAN, "int8_cosine_min": INT8_MIN_COSINE,
                "int8_top10_min": INT8_MIN_TOP10},
    ))


def judge_reranker(dtype: str, parity: dict[str, Any], top_k: int, min_order_kept: float) -> QualityVerdict:
    """The gates of a reranker variant: finite scores, and (not fp32, whose parity is a hard
    check) the reference's top-``top_k`` order kept on at least ``min_order_kept`` of the queries."""
    failures: list[str] = []
    if not parity.get("finite", False):
        failures.append("non-finite scores (NaN)")
    kept = parity.get(f"top{top_k}_order_kept")
    if dtype != "fp32" and isinstance(kept, float) and kept < min_order_kept:
        failures.append(f"{dtype} vs {parity.get('reference')}: top-{top_k} order kept on {kept:.3f} of "
                        f"{parity.get('queries')} queries (>= {min_order_kept})")
    return _unless_skipped(dtype, QualityVerdict(
        passed=not failures, failures=failures,
        bounds={"finite": True, f"top{top_k}_order_kept_min": min_order_kept},
    ))

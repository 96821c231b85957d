"""Whether an export will fit the machine's memory, said before it starts instead of being killed.

The estimate of the export's peak resident memory is a measured multiple of the checkpoint
(`resources` records every export's peak into its manifest; the figures below are those
records), or, when this very checkpoint was exported before, that export's own recorded
peak. A chat export's peak is the larger of two phases that the formula adds, to stay on
the safe side: the weights held as fp32 (PyTorch's reference model, then an onnxruntime
session of the fp32 graph) and the perplexity pass over 512 tokens of text, whose
``[512, vocabulary]`` logits are held in fp32 and worked on in float64 (several copies).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from ..errors import ExportMemoryError
from ..store import ModelInfo, read_json
from ..units import format_bytes
from .checkpoint_weights import parameter_count
from .common import checkpoint_bytes
from .decoder_parity import PERPLEXITY_TOKENS

logger = logging.getLogger(__name__)

#: Python with torch, transformers and onnxruntime imported, before any model.
FIXED_BYTES = 500_000_000
#: Peak bytes per byte of the weights in fp32, and per byte of one ``[512, vocabulary]`` fp32
#: logits array, fitted to the recorded chat exports (peak, weights in fp32, logits array):
#: SmolLM2-135M, 4 variants (1.48 GB; 0.54 GB; 0.10 GB: the estimate says 1.81 GB), a
#: random Llama 3.2 1B shape in bf16, fp32 and int4 (7.93 GB, 3.21x its checkpoint; 4.94 GB;
#: 0.26 GB: 8.16 GB) and Gemma 3 270M, 4 variants (5.30 GB, 4.94x its checkpoint for its 262k
#: vocabulary; 1.07 GB; 0.54 GB: 5.33 GB).
CHAT_WEIGHT_MULTIPLE = 1.2
CHAT_LOGITS_MULTIPLE = 6.6
#: Embedding exports (optimum's export, then onnxruntime's quantizer): one record,
#: all-MiniLM-L6-v2 in fp32 and int8 (0.96 GB for 0.09 GB of weights).
EMBEDDING_WEIGHT_MULTIPLE = 5.0


@dataclass(frozen=True)
class MemoryEstimate:
    """An export's expected peak resident memory, and how that figure was arrived at."""

    peak_bytes: int
    basis: str


def estimate(info: ModelInfo) -> MemoryEstimate:
    """The expected peak of exporting ``info``'s checkpoint (any precisions: they are built in turn)."""
    weights = checkpoint_bytes(info.path)
    recorded = _recorded_peak(info, weights)
    if recorded is not None:
        return recorded
    fp32 = 4 * parameter_count(info.path, default=weights // 4)
    if info.kind != "chat":
        peak = FIXED_BYTES + EMBEDDING_WEIGHT_MULTIPLE * fp32
        return MemoryEstimate(int(peak), (
            f"{format_bytes(FIXED_BYTES)} + {EMBEDDING_WEIGHT_MULTIPLE}x its weights in fp32 "
            f"({format_bytes(fp32)}), as measured on the embedding sample"))
    logits = 4 * PERPLEXITY_TOKENS * _vocab_size(read_json(info.path / "config.json"))
    peak = FIXED_BYTES + CHAT_WEIGHT_MULTIPLE * fp32 + CHAT_LOGITS_MULTIPLE * logits
    return MemoryEstimate(int(peak), (
        f"{format_bytes(FIXED_BYTES)} + {CHAT_WEIGHT_MULTIPLE}x its weights in fp32 ({format_bytes(fp32)}) "
        f"+ {CHAT_LOGITS_MULTIPLE}x one {PERPLEXITY_TOKENS}-token pass of fp32 logits ({format_bytes(logits)}), "
        "fitted to the peaks recorded by earlier exports"))


def _recorded_peak(info: ModelInfo, weights: int) -> MemoryEstimate | None:
    """The peak the previous export of this same checkpoint recorded, if there is one."""
    cost: dict[str, Any] | None = info.manifest.export_cost if info.manifest else None
    if not cost or cost.get("checkpoint_bytes") != weights or not isinstance(cost.get("peak_rss_bytes"), int):
        return None
    return MemoryEstimate(cost["peak_rss_bytes"], (
        f"the peak its previous export recorded ({cost.get('peak_rss_ratio')}x the checkpoint's "
        f"{format_bytes(weights)}, version {info.version})"))


def _vocab_size(config: dict[str, Any]) -> int:
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}
    return int(config.get("vocab_size") or text.get("vocab_size") or 0)


def available_bytes() -> int:
    """Memory a new allocation can get without swapping: the system's, or the cgroup's if less."""
    available = int(psutil.virtual_memory().available)
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
            available = min(available, int(limit) - used)
    except (OSError, ValueError):  # no cgroup v2 limit here
        pass
    return available


def check_memory(info: ModelInfo, *, force: bool = False) -> MemoryEstimate:
    """Raise `ExportMemoryError` when the export's estimated peak exceeds the available memory.

    With ``force``, only log it: the estimate errs on the large side, and a user who has
    swap or knows better may try anyway.
    """
    expected = estimate(info)
    available = available_bytes()
    logger.info("Exporting %s: expected peak %s (%s); %s available.", info.name,
                format_bytes(expected.peak_bytes), expected.basis, format_bytes(available))
    if expected.peak_bytes <= available:
        return expected
    message = (
        f"Exporting {info.name} needs about {format_bytes(expected.peak_bytes)} of memory at its peak "
        f"(estimate: {expected.basis}), and only {format_bytes(available)} is available, so the system "
        "would likely kill the export part-way. Close other programs (a running 'ortmodels serve' holds its "
        "loaded models: 'ortmodels ps'), export on a machine with more memory, or pass --force-memory "
        "to try anyway."
    )
    if force:
        logger.warning("%s (--force-memory: trying anyway)", message)
        return expected
    raise ExportMemoryError(message)

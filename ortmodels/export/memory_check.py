"""Whether an export will fit the machine's memory, said before it starts instead of being killed.

The estimate of the export's peak resident memory is fitted to measured exports (`resources`
records every export's peak into its manifest; the figures below are those records), or,
when this very checkpoint was exported before in at least the precisions asked for, that
export's own recorded peak. A chat export holds one large thing at a time, so its peak is
the export process's fixed cost plus the largest of its phases:

- the PyTorch reference, in a child process (`decoder/reference_process.py`) whose RSS the
  meter adds to the export's: an interpreter with torch and transformers imported, the
  checkpoint's weights as stored (bf16/fp16 matrices are kept so and widened a few rows at
  a time as used; an fp32 checkpoint is mapped and each module drops its pages after its
  forward, so about its largest matrix, the embedding or head, is resident at once), and
  the logits of the probes and of the perplexity text, 128 positions at a time;
- each variant's onnxruntime session, one at a time, in the export's own process (which
  never imports torch): an fp32 graph's weights are mapped (4 bytes a parameter), an fp16
  graph's are mapped and widened to fp32 one at a time as each run reaches them
  (`engine.session.create_widening_cpu_session`), a quantized graph's are mapped and packed
  (about twice its file).

Since 2026-12-04 (branch h28-export) the export and its child give each heap block of 64 KB
and more its own mapping, freed at once (`lifecycle.memory.large_allocations_mapped`), and the child leaves out
scikit-learn: the sample's phases fell to 0.73 GB at the reference (child 0.61 GB), 0.77 GB at
the fp32 check (text pieces of 64 positions), 0.57 GB at the fp16 check (1.41-1.43x in all). The constants below are the
earlier fits, kept while they still cover the 1B shape's record (measured before): they err
on the large side by that much on the sample.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from ..errors import ExportError, ExportMemoryError
from ..kinds import KINDS
from ..store import ModelInfo, read_json
from ..units import format_bytes
from .checkpoint.source import checkpoint_bytes
from .checkpoint.weights import open_weights, parameter_count
from .decoder.parity import PERPLEXITY_TOKENS

logger = logging.getLogger(__name__)

#: The export's own process: Python with onnxruntime, numpy and the tokenizer (~130 MB
#: measured on the sample through the reference's run), and heap not yet returned.
FIXED_BYTES = 150_000_000
#: The reference child's interpreter with torch and transformers imported (468 MB measured).
REFERENCE_FIXED_BYTES = 480_000_000
#: The reference child's peak beside its interpreter, per byte of the weights it holds (a
#: bf16/fp16 checkpoint's as stored; an fp32 checkpoint's largest matrix, ``vocabulary x
#: hidden``, its other mapped pages dropped as used) and per byte of one ``[512, vocabulary]``
#: fp32 logits array (the probes' and the text's logits, 128 rows at a time, their float64
#: NLL 32 rows at a time, and the heap the forwards leave). The sample (fp32, 0.54 GB; head
#: 0.11 GB; 0.10 GB of logits): the child peaked at 0.73-0.82 GB over runs, the export at
#: 0.90-0.94 GB (1.68-1.75x, int4 alone or every precision). The 1B shape in bf16 (2.47 GB,
#: 0.26 GB of logits; int8 and int4, --skip-gates --int4-search): the child 3.18 GB, the
#: export 3.30 GB (1.33x) at the reference; int8's check 2.77 GB, int4's 1.43 GB.
REFERENCE_WEIGHT_MULTIPLE = 1.0
REFERENCE_LOGITS_MULTIPLE = 2.5
#: A variant's check session at its peak, bytes per parameter with its activations: the
#: sample's phases less the export process's own ~150 MB, exporting every precision (135M
#: parameters: fp32 0.69 GB, its weights mapped; fp16 0.76 GB, widened to fp32 by
#: onnxruntime's CPU provider; int8 0.42 GB and int4 0.34 GB, mapped and packed).
SESSION_BYTES_PER_PARAMETER = {"fp32": 5.2, "fp16": 5.7, "int8": 3.1, "int4": 2.5}
#: fp16's is 3.3 since its weights are widened per run (0.57 GB less 0.13 GB, h28-export); kept at
#: the earlier fit until an export without fp32 records it.
#: Embedding exports (optimum's export, then onnxruntime's quantizer): one record,
#: all-MiniLM-L6-v2 in fp32 and int8 (0.96 GB for 0.09 GB of weights).
EMBEDDING_WEIGHT_MULTIPLE = 5.0


@dataclass(frozen=True)
class MemoryEstimate:
    """An export's expected peak resident memory, and how that figure was arrived at."""

    peak_bytes: int
    basis: str


def estimate(info: ModelInfo, dtypes: list[str] | None = None) -> MemoryEstimate:
    """The expected peak of exporting ``info``'s checkpoint in ``dtypes`` (default: its kind's precisions)."""
    dtypes = list(dtypes or KINDS[info.kind].precisions) if info.kind in KINDS else list(dtypes or [])
    weights = checkpoint_bytes(info.path)
    recorded = _recorded_peak(info, weights, dtypes)
    if recorded is not None:
        return recorded
    parameters = parameter_count(info.path, default=weights // 4)
    if info.kind != "chat":
        fp32 = 4 * parameters
        peak = FIXED_BYTES + EMBEDDING_WEIGHT_MULTIPLE * fp32
        return MemoryEstimate(int(peak), (
            f"{format_bytes(FIXED_BYTES)} + {EMBEDDING_WEIGHT_MULTIPLE}x its weights in fp32 "
            f"({format_bytes(fp32)}), as measured on the embedding sample"))
    config = read_json(info.path / "config.json")
    logits = 4 * PERPLEXITY_TOKENS * _vocab_size(config)
    held, how = _reference_weights(info.path, config, weights)
    reference = REFERENCE_FIXED_BYTES + REFERENCE_WEIGHT_MULTIPLE * held + REFERENCE_LOGITS_MULTIPLE * logits
    sessions = {d: SESSION_BYTES_PER_PARAMETER[d] * parameters for d in dtypes if d in SESSION_BYTES_PER_PARAMETER}
    largest = max(sessions, key=lambda d: sessions[d], default=None)
    if largest is None or reference >= sessions[largest]:
        phase = (f"the PyTorch reference in its child process: {format_bytes(REFERENCE_FIXED_BYTES)} of torch and "
                 f"transformers + {REFERENCE_WEIGHT_MULTIPLE}x {how} ({format_bytes(held)}) "
                 f"+ {REFERENCE_LOGITS_MULTIPLE}x one {PERPLEXITY_TOKENS}-token pass of fp32 logits "
                 f"({format_bytes(logits)})")
        peak = FIXED_BYTES + reference
    else:
        phase = (f"the {largest} variant's check: {SESSION_BYTES_PER_PARAMETER[largest]} bytes for each of its "
                 f"{parameters / 1e9:.2f}B parameters")
        peak = FIXED_BYTES + sessions[largest]
    return MemoryEstimate(int(peak), (
        f"{format_bytes(FIXED_BYTES)} + its largest phase, {phase}; fitted to the peaks recorded by earlier exports"))


def _recorded_peak(info: ModelInfo, weights: int, dtypes: list[str]) -> MemoryEstimate | None:
    """The peak the previous export of this same checkpoint recorded, if it made at least ``dtypes``."""
    manifest = info.manifest
    cost: dict[str, Any] | None = manifest.export_cost if manifest else None
    if not cost or cost.get("checkpoint_bytes") != weights or not isinstance(cost.get("peak_rss_bytes"), int):
        return None
    assert manifest is not None
    if not set(dtypes) <= set(manifest.variants):  # a precision it did not check may cost more
        return None
    return MemoryEstimate(cost["peak_rss_bytes"], (
        f"the peak its previous export recorded ({cost.get('peak_rss_ratio')}x the checkpoint's "
        f"{format_bytes(weights)}, version {info.version})"))


def _reference_weights(checkpoint: Path, config: dict[str, Any], weights: int) -> tuple[int, str]:
    """The bytes of weights the reference holds at once, and what they are (`decoder/reference.py`)."""
    try:
        with open_weights(checkpoint) as opened:
            mapped = opened.float_dtypes() <= {"F32"}
    except (ExportError, OSError, ValueError, KeyError):  # .bin weights: loaded, not mapped
        mapped = False
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}
    hidden = int(config.get("hidden_size") or text.get("hidden_size") or 0)
    if mapped and hidden:
        return min(weights, 4 * _vocab_size(config) * hidden), "its largest matrix, mapped"
    return weights, "its weights as stored"


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


def check_memory(info: ModelInfo, dtypes: list[str] | None = None, *, force: bool = False) -> MemoryEstimate:
    """Raise `ExportMemoryError` when the export's estimated peak exceeds the available memory.

    With ``force``, only log it: the estimate errs on the large side, and a user who has
    swap or knows better may try anyway.
    """
    expected = estimate(info, dtypes)
    available = available_bytes()
    logger.info("Exporting %s: expected peak %s (%s); %s available.", info.name,
                format_bytes(expected.peak_bytes), expected.basis, format_bytes(available))
    if expected.peak_bytes <= available:
        return expected
    message = (
        f"Exporting {info.name} needs about {format_bytes(expected.peak_bytes)} of memory at its peak "
        f"(estimate: {expected.basis}), and only {format_bytes(available)} is available, so the system "
        "would likely kill the export part-way. Close other programs (a running 'ortmodels serve' holds its "
        "loaded models: 'ortmodels ps'), export fewer precisions (for a chat model, --dtype int8,int4 needs "
        "the least: fp32's check maps the weights in fp32), export on a machine with more memory, "
        "or pass --force-memory to try anyway."
    )
    if force:
        logger.warning("%s (--force-memory: trying anyway)", message)
        return expected
    raise ExportMemoryError(message)

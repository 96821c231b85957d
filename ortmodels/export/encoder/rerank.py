"""Export of cross-encoder rerankers (one-label ``*ForSequenceClassification``) to ONNX variants.

The graph is optimum's ``text-classification`` export (the encoder and its classifier head,
one logit per pair). Each variant is scored on the export's own probe pairs and compared
with sentence-transformers' ``CrossEncoder`` on the checkpoint (transformers' model with the
same activation where sentence-transformers is not installed): fp32 must give the same
scores within `FP32_MAX_ABS_DIFF`; int8 must keep the reference's top-`TOP_K` order on at
least `INT8_MIN_ORDER_KEPT` of the probe queries, or it fails its gate.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ...engine.cross_encoder import CrossEncoderRunner
from ...engine.session import create_session
from ...engine.tokenizer import load_tokenizer
from ...errors import ExportError, ParityError
from ...kinds import KINDS
from ...store import ModelInfo, read_json
from ...store.manifest import Manifest, RerankerSpec, VariantEntry
from ..optimum_bridge import export_with_optimum
from ..pipeline import (
    build_variant,
    check_dtypes,
    export_attempt,
    finish_export,
    require_fast_tokenizer,
    variant_entry,
)
from ..probes import PROBE_SENTENCES
from ..progress import Progress
from ..quality import judge_reranker
from .embedding import Int8Builder
from .embedding_config import effective_max_length
from .quantize import encoder_texts

logger = logging.getLogger(__name__)

RERANK_DTYPES = KINDS["reranker"].precisions
TASK = "text-classification"
FP32_MAX_ABS_DIFF = 1e-4
TOP_K = 5
INT8_MIN_ORDER_KEPT = 0.95
PROBE_QUERIES = 20
PROBE_DOCUMENTS = 20

#: sentence-transformers' activation names (``config_sentence_transformers.json``'s
#: ``activation_fn``, ``config.json``'s ``sentence_transformers.activation_fn`` or, before
#: sentence-transformers 4, ``sbert_ce_default_activation_function``) → ours.
_ACTIVATIONS = {
    "torch.nn.modules.activation.Sigmoid": "sigmoid",
    "torch.nn.Sigmoid": "sigmoid",
    "torch.nn.modules.linear.Identity": "identity",
    "torch.nn.Identity": "identity",
}


def read_activation(checkpoint: Path, config: dict[str, Any]) -> str:
    """The activation sentence-transformers' ``CrossEncoder`` applies to this checkpoint's logit:
    the one its files name, else sigmoid (its default for one label)."""
    named: str | None = None
    st_config = checkpoint / "config_sentence_transformers.json"
    if st_config.is_file():
        named = read_json(st_config).get("activation_fn")
    if named is None and isinstance(config.get("sentence_transformers"), dict):
        named = config["sentence_transformers"].get("activation_fn")
    if named is None:
        named = config.get("sbert_ce_default_activation_function")
    if named is None:
        return "sigmoid"
    activation = _ACTIVATIONS.get(str(named))
    if activation is None:
        raise ExportError(
            f"{checkpoint}: the cross-encoder's activation is {named!r}; ortmodels applies "
            f"{', '.join(sorted(set(_ACTIVATIONS)))} only. Set activation_fn to one of them in "
            "config_sentence_transformers.json if the model was trained with it."
        )
    return activation


def _pad_id(base: Path, config: dict[str, Any], tokenizer: Any) -> int:
    """The id batches are padded with: the tokenizer's pad token, else the config's, else 0."""
    tokenizer_config = read_json(base / "tokenizer_config.json") if (base / "tokenizer_config.json").is_file() else {}
    token = tokenizer_config.get("pad_token")
    token = token.get("content") if isinstance(token, dict) else token
    found = tokenizer.token_to_id(token) if isinstance(token, str) else None
    return int(found if found is not None else config.get("pad_token_id") or 0)


def reranker_spec(checkpoint: Path, base: Path, config: dict[str, Any]) -> RerankerSpec:
    """Activation, pair length and padding, from the checkpoint's and the export's config files."""
    st_config = checkpoint / "sentence_bert_config.json"
    configured = read_json(st_config).get("max_seq_length") if st_config.is_file() else None
    tokenizer_config = read_json(base / "tokenizer_config.json") if (base / "tokenizer_config.json").is_file() else {}
    max_len = effective_max_length(configured, config.get("model_type", ""), config.get("max_position_embeddings"),
                                   tokenizer_config.get("model_max_length"))
    tokenizer = load_tokenizer(base / "tokenizer.json", max_len)
    return RerankerSpec(activation=read_activation(checkpoint, config), max_seq_length=max_len,
                        pad_token_id=_pad_id(base, config, tokenizer))


def probe_pairs(texts: list[str]) -> tuple[list[tuple[str, str]], list[int]]:
    """The export's probe pairs and the query each belongs to.

    `PROBE_QUERIES` queries (each paragraph's first sentence) against `PROBE_DOCUMENTS`
    paragraphs (its own and the next ones), plus one query against the odd probe sentences
    (empty, emoji, one past the token limit), so truncation and padding are compared too.
    """
    paragraphs = [t[:600] for t in texts[:PROBE_QUERIES + PROBE_DOCUMENTS]]
    pairs, groups = [], []
    for q in range(min(PROBE_QUERIES, len(paragraphs))):
        query = paragraphs[q].split(". ")[0][:200]
        for d in range(PROBE_DOCUMENTS):
            pairs.append((query, paragraphs[(q + d) % len(paragraphs)]))
            groups.append(q)
    for sentence in PROBE_SENTENCES:
        pairs.append(("What is the capital of France?", sentence))
        groups.append(PROBE_QUERIES)
    return pairs, groups


def reference_scores(checkpoint: Path, pairs: list[tuple[str, str]], spec: RerankerSpec) -> tuple[np.ndarray, str]:
    """The checkpoint's scores on ``pairs``: sentence-transformers' ``CrossEncoder`` where it is
    installed, else transformers' model with the same activation and truncation."""
    import torch

    try:
        from sentence_transformers import CrossEncoder
    except ImportError:
        CrossEncoder = None
    if CrossEncoder is not None:
        model = CrossEncoder(str(checkpoint), device="cpu", max_length=spec.max_seq_length)
        scores = model.predict(pairs, batch_size=16, convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(scores, dtype=np.float32).reshape(-1), "sentence-transformers CrossEncoder"
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    classifier = AutoModelForSequenceClassification.from_pretrained(checkpoint, dtype=torch.float32).eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(pairs), 16):
            chunk = pairs[start:start + 16]
            batch = tokenizer([q for q, _ in chunk], [d for _, d in chunk], padding=True, truncation=True,
                              max_length=spec.max_seq_length, return_tensors="pt")
            logits = classifier(**batch).logits[:, 0]
            out.append((torch.sigmoid(logits) if spec.activation == "sigmoid" else logits).numpy())
    return np.concatenate(out).astype(np.float32), "transformers fp32"


def order_kept(reference: np.ndarray, got: np.ndarray, groups: list[int], k: int = TOP_K) -> float:
    """The share of queries whose top-``k`` documents come in the reference's order."""
    group_ids = np.asarray(groups)
    kept = []
    for group in sorted(set(groups)):
        rows = np.flatnonzero(group_ids == group)
        top = min(k, len(rows))
        kept.append(bool(np.array_equal(np.argsort(-reference[rows], kind="stable")[:top],
                                        np.argsort(-got[rows], kind="stable")[:top])))
    return float(np.mean(kept))


def _parity(variant_dir: Path, spec: RerankerSpec, pairs: list[tuple[str, str]], groups: list[int],
            reference: np.ndarray, source: str) -> dict[str, Any]:
    session = create_session(variant_dir / "model.onnx", "cpu")
    runner = CrossEncoderRunner(session, load_tokenizer(variant_dir / "tokenizer.json", spec.max_seq_length), spec)
    got = runner.score(pairs, batch_size=16)  # batched and padded, as in use
    diff = np.abs(got.astype(np.float64) - reference)
    return {
        "reference": source,
        "pairs": len(pairs),
        "queries": len(set(groups)),
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        f"top{TOP_K}_order_kept": order_kept(reference, got, groups),
        "finite": bool(np.isfinite(got).all()),
    }


def export_reranker(info: ModelInfo, dtypes: list[str], source_hash: str, progress: Progress) -> Manifest:
    """Export ``info``'s cross-encoder into a new export folder and publish it; returns the manifest."""
    check_dtypes("Rerankers", dtypes, RERANK_DTYPES)
    with export_attempt(info) as work:
        base = work / "_base"
        progress.step("Exporting the cross-encoder with optimum")
        export_with_optimum(info.path, base, TASK)
        require_fast_tokenizer(info.path, base)
        config = read_json(base / "config.json")
        spec = reranker_spec(info.path, base, config)

        calibration, quality_texts = encoder_texts()
        pairs, groups = probe_pairs(quality_texts)
        progress.step("Scoring the probe pairs with the checkpoint")
        reference, source = reference_scores(info.path, pairs, spec)
        tokenizer = load_tokenizer(base / "tokenizer.json", spec.max_seq_length)

        variants: dict[str, VariantEntry] = {}
        for dtype in dtypes:
            progress.step(f"Building and checking the {dtype} variant")
            recipe = build_variant(dtype, base, work / dtype, {"int8": Int8Builder(work, tokenizer, calibration)})
            parity = _parity(work / dtype, spec, pairs, groups, reference, source)
            if dtype == "fp32" and not parity["max_abs_diff"] <= FP32_MAX_ABS_DIFF:
                raise ParityError(
                    f"fp32 export of {info.name} differs from {source}: worst score difference "
                    f"{parity['max_abs_diff']:.2e} > {FP32_MAX_ABS_DIFF} on the probe pairs."
                )
            variants[dtype] = variant_entry(dtype, work / dtype, recipe, parity,
                                            judge_reranker(dtype, parity, TOP_K, INT8_MIN_ORDER_KEPT))
            logger.info("%s %s parity: %s", info.name, dtype, parity)

        return finish_export(
            info, work, base, task=TASK, source_hash=source_hash, variants=variants,
            progress=progress, reranker=spec,
        )

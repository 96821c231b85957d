"""Export of sentence-embedding encoders (BERT, XLM-RoBERTa, MPNet, ...) to ONNX variants."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ...engine.encoder import EncoderRunner, pad_batch
from ...engine.pooling import l2_normalize, pool
from ...engine.session import create_session
from ...engine.tokenizer import load_tokenizer
from ...errors import ParityError
from ...kinds import KINDS
from ...store import ModelInfo, read_json
from ...store.manifest import EmbeddingSpec, Manifest, VariantEntry
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
from ..quality import judge_embedding
from .embedding_config import (
    effective_max_length,
    read_matryoshka,
    read_pooling_config,
    read_prompts,
)
from .quantize import (
    encoder_texts,
    int8_quality,
    quantize_int8_dynamic,
    smooth_activations,
)

logger = logging.getLogger(__name__)

EMBEDDING_DTYPES = KINDS["embedding"].precisions
FP32_MIN_COSINE = 0.9999
TASK = "feature-extraction"


def _spec(checkpoint: Path, base: Path, config: dict) -> EmbeddingSpec:
    """Pooling and prompts from the sentence-transformers files, Matryoshka training from the card;
    sizes and padding from the exported config."""
    pooling = read_pooling_config(checkpoint)
    tokenizer_config = read_json(base / "tokenizer_config.json") if (base / "tokenizer_config.json").is_file() else {}
    max_len = effective_max_length(
        pooling.max_seq_length,
        config.get("model_type", ""),
        config.get("max_position_embeddings"),
        tokenizer_config.get("model_max_length"),
    )
    tokenizer = load_tokenizer(base / "tokenizer.json", max_len)
    pad_token = tokenizer_config.get("pad_token")
    if isinstance(pad_token, dict):
        pad_token = pad_token.get("content")
    pad_id = tokenizer.token_to_id(pad_token) if isinstance(pad_token, str) else None
    if pad_id is None:
        pad_id = config.get("pad_token_id") or 0
    prompts, default_prompt_name = read_prompts(checkpoint, pooling.include_prompt)
    dimension = int(config["hidden_size"])
    return EmbeddingSpec(
        pooling=pooling.pooling,  # type: ignore[arg-type]
        normalize=pooling.normalize,
        max_seq_length=max_len,
        dimension=dimension,
        pad_token_id=int(pad_id),
        prompts=prompts,
        default_prompt_name=default_prompt_name,
        matryoshka=read_matryoshka(checkpoint, dimension),
    )


def _pytorch_reference(checkpoint: Path, id_lists: list[list[int]], spec: EmbeddingSpec) -> np.ndarray:
    """Sentence vectors from the original PyTorch model, pooled exactly as the runtime pools."""
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(checkpoint, dtype=torch.float32).eval()
    vectors = []
    with torch.inference_mode():
        for ids in id_lists:  # one at a time: no padding can differ between the two sides
            input_ids, mask = pad_batch([ids], spec.pad_token_id)
            hidden = model(
                input_ids=torch.from_numpy(input_ids), attention_mask=torch.from_numpy(mask)
            ).last_hidden_state.numpy()
            vectors.append(pool(hidden, mask, spec.pooling)[0])
    out = np.stack(vectors).astype(np.float32)
    return l2_normalize(out) if spec.normalize else out


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (l2_normalize(a) * l2_normalize(b)).sum(axis=1)


def _parity(variant_dir: Path, spec: EmbeddingSpec, reference: np.ndarray) -> dict[str, Any]:
    session = create_session(variant_dir / "model.onnx", "cpu")
    runner = EncoderRunner(session, load_tokenizer(variant_dir / "tokenizer.json", spec.max_seq_length), spec)
    got = runner.embed(list(PROBE_SENTENCES), batch_size=8)  # batched and padded, as in use
    cos = _cosines(got, reference)
    return {
        "reference": "pytorch fp32",
        "probes": len(PROBE_SENTENCES),
        "cosine_mean": float(cos.mean()),
        "cosine_min": float(cos.min()),
        "max_abs_diff": float(np.abs(got - reference).max()),
    }


def _embed_file(model_file: Path, tokenizer_file: Path, spec: EmbeddingSpec, texts: list[str]) -> np.ndarray:
    runner = EncoderRunner(create_session(model_file, "cpu"), load_tokenizer(tokenizer_file, spec.max_seq_length), spec)
    return runner.embed(texts, batch_size=32)


class Int8Builder:
    """Smooth the fp32 graph's activations on calibration text, then quantize it to int8."""

    def __init__(self, work: Path, tokenizer: Any, calibration: list[str]) -> None:
        self.work, self.tokenizer, self.calibration = work, tokenizer, calibration

    def __call__(self, source: Path, target: Path) -> dict[str, Any]:
        smoothed_dir = self.work / "_smoothed"
        smoothed_dir.mkdir(exist_ok=True)
        ids = [e.ids for e in self.tokenizer.encode_batch(self.calibration)]
        smoothing = smooth_activations(source, smoothed_dir / "model.onnx", ids)
        try:
            recipe = quantize_int8_dynamic(smoothed_dir / "model.onnx", target)
        finally:
            shutil.rmtree(smoothed_dir, ignore_errors=True)
        return {**recipe, **smoothing}


def export_embedding(
    info: ModelInfo, dtypes: list[str], source_hash: str, progress: Progress
) -> Manifest:
    """Export ``info``'s checkpoint into a new export folder and publish it; returns the manifest."""
    check_dtypes("Embedding models", dtypes, EMBEDDING_DTYPES)
    with export_attempt(info) as work:
        base = work / "_base"
        progress.step("Exporting the encoder with optimum")
        export_with_optimum(info.path, base, TASK)
        require_fast_tokenizer(info.path, base)
        config = read_json(base / "config.json")
        spec = _spec(info.path, base, config)

        progress.step("Running the PyTorch reference on probe sentences")
        tokenizer = load_tokenizer(base / "tokenizer.json", spec.max_seq_length)
        reference = _pytorch_reference(info.path, [e.ids for e in tokenizer.encode_batch(list(PROBE_SENTENCES))], spec)

        calibration, quality_texts = encoder_texts()
        fp32_vectors: np.ndarray | None = None
        variants: dict[str, VariantEntry] = {}
        for dtype in dtypes:
            progress.step(f"Building and checking the {dtype} variant")
            recipe = build_variant(dtype, base, work / dtype, {"int8": Int8Builder(work, tokenizer, calibration)})
            parity = _parity(work / dtype, spec, reference)
            if dtype == "int8":
                if fp32_vectors is None:
                    fp32_vectors = _embed_file(base / "model.onnx", base / "tokenizer.json", spec, quality_texts)
                int8_vectors = _embed_file(work / dtype / "model.onnx", base / "tokenizer.json", spec, quality_texts)
                parity["vs_fp32"] = int8_quality(fp32_vectors, int8_vectors)
            if dtype == "fp32" and parity["cosine_min"] < FP32_MIN_COSINE:
                raise ParityError(
                    f"fp32 export of {info.name} differs from PyTorch: worst cosine "
                    f"{parity['cosine_min']:.6f} < {FP32_MIN_COSINE} on the probe sentences."
                )
            variants[dtype] = variant_entry(dtype, work / dtype, recipe, parity, judge_embedding(dtype, parity))
            logger.info("%s %s parity: %s", info.name, dtype, parity)

        return finish_export(
            info, work, base, task=TASK, source_hash=source_hash, variants=variants,
            progress=progress, embedding=spec,
        )

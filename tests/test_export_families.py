"""`ortmodels export` on BERT, XLM-RoBERTa and MPNet sentence-embedding checkpoints.

Each case builds a tiny random-weight checkpoint with the sentence-transformers files,
exports it in fp32 and int8, checks the manifest, then compares the ONNX runtime's
embeddings with sentence-transformers' own on the original checkpoint: the independent
proof that pooling, normalisation and truncation were read correctly.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from tests.tiny_models import MAX_SEQ_LENGTH, build_tiny_encoder

#: An export takes about 30 s on 2 cores, several times that beside other work: a longer bound
#: than the suite's default (pyproject.toml).
pytestmark = pytest.mark.timeout(600)

CASES = [
    ("bert", "mean", True),
    ("xlm-roberta", "cls", True),
    ("mpnet", "lasttoken", False),
    ("bert", "max", False),
]

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "What is the capital of France?",
    "Paris is the capital and most populous city of France.",
    "",
    "ok",
    "A man is playing a guitar on a street corner.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "東京は日本の首都です。 🚀 ✓ €",
    "Embeddings map text to vectors so that similar meanings lie close together.",
    " ".join(["Long inputs are truncated to the model's limit rather than crashing."] * 12),
    "Short.",
]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.clip(np.linalg.norm(a, axis=1, keepdims=True), 1e-12, None)
    b = b / np.clip(np.linalg.norm(b, axis=1, keepdims=True), 1e-12, None)
    return (a * b).sum(axis=1)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("family", "pooling", "normalize"), CASES, ids=[f"{f}-{p}-{'norm' if n else 'raw'}" for f, p, n in CASES]
)
def test_export_family_matches_sentence_transformers(
    tmp_path: Path, family: str, pooling: str, normalize: bool, capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture, recwarn: pytest.WarningsRecorder,
) -> None:
    from sentence_transformers import SentenceTransformer

    from ortmodels.export import export_model
    from ortmodels.runtime.embeddings import OnnxEmbeddingModel
    from ortmodels.store import ModelStore

    name = f"tiny-{family}"
    root = tmp_path / "models"
    folder = build_tiny_encoder(root / name, family, pooling, normalize)

    # -- export -------------------------------------------------------------------------------
    outcome = export_model(ModelStore(root), name, ["fp32", "int8"])
    assert not outcome.skipped
    # the export stack's advice to its own callers is not passed on to ortmodels' users
    from torch.jit import TracerWarning

    written = capfd.readouterr().err + caplog.text
    assert "torch_dtype" not in written and "pre-processing before quantization" not in written
    assert not [w for w in recwarn if issubclass(w.category, TracerWarning)]
    manifest = outcome.manifest
    assert manifest.kind == "embedding"
    assert manifest.embedding is not None
    assert manifest.embedding.pooling == pooling
    assert manifest.embedding.normalize is normalize
    assert manifest.embedding.max_seq_length == MAX_SEQ_LENGTH
    assert manifest.embedding.dimension == 32
    assert set(manifest.variants) == {"fp32", "int8"}
    assert manifest.variants["fp32"].parity["cosine_min"] >= 0.9999
    int8_vs_fp32 = manifest.variants["int8"].parity["vs_fp32"]  # recorded, whatever random weights give
    assert int8_vs_fp32["texts"] > 0 and -1.0 <= int8_vs_fp32["cosine_min"] <= int8_vs_fp32["cosine_mean"] <= 1.0
    assert 0.0 <= int8_vs_fp32["top10_agreement"] <= 1.0 and isinstance(int8_vs_fp32["meets_bar"], bool)
    assert manifest.variants["int8"].quantization["smoothing"]["matmuls"] > 0

    # int8 of random weights may miss the bar: then it is recorded as failed, without files.
    int8 = manifest.variants["int8"]
    assert int8.quality is not None and int8.quality.passed is int8_vs_fp32["meets_bar"]
    assert int8.quality.passed or (not int8.files and "int8 vs fp32" in int8.quality.failures[0])
    for dtype, entry in manifest.variants.items():
        if not entry.usable:
            continue
        variant_dir = folder / "onnx" / dtype
        assert (folder / "onnx" / entry.path).resolve() == variant_dir.resolve()
        assert "model.onnx" in entry.files
        assert "tokenizer.json" in entry.files
        for rel, file_entry in entry.files.items():
            path = variant_dir / rel
            assert path.is_file(), f"{dtype}: {rel} listed in the manifest but missing"
            assert path.stat().st_size == file_entry.size, f"{dtype}: {rel} size differs"
            assert _sha256(path) == file_entry.sha256, f"{dtype}: {rel} sha256 differs"

    # -- runtime vs sentence-transformers -----------------------------------------------------
    onnx_model = OnnxEmbeddingModel(model_path=folder, device="cpu", dtype="fp32")
    try:
        got = np.asarray(onnx_model.embed_documents(SENTENCES), dtype=np.float32)
        assert onnx_model.variant == "fp32"
    finally:
        onnx_model.unload()

    st_model = SentenceTransformer(str(folder), device="cpu")
    assert st_model.max_seq_length == MAX_SEQ_LENGTH
    # The long text really is past the limit, so truncation is exercised on both sides.
    assert len(st_model.tokenizer(SENTENCES[-2])["input_ids"]) > MAX_SEQ_LENGTH
    expected = st_model.encode(SENTENCES, convert_to_numpy=True).astype(np.float32)

    assert got.shape == expected.shape == (len(SENTENCES), 32)
    cos = _cosines(got, expected)
    assert cos.min() >= 0.9999, f"per-sentence cosines vs sentence-transformers: {np.round(cos, 6)}"
    if normalize:
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    else:
        assert np.allclose(got, expected, atol=1e-4, rtol=1e-3), (
            f"max abs diff {np.abs(got - expected).max():.2e}"
        )

"""OnnxEmbeddingModel on the real all-MiniLM-L6-v2 export."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from ortmodels.errors import ConfigurationError, ModelFileError, ModelNotExportedError
from ortmodels.export.probes import PROBE_SENTENCES
from ortmodels.runtime.embeddings import OnnxEmbeddingModel

pytestmark = pytest.mark.slow

MODEL = "all-minilm-l6-v2"


@pytest.fixture(scope="module")
def fp32(samples_dir: Path) -> OnnxEmbeddingModel:
    return OnnxEmbeddingModel(model_path=samples_dir / MODEL, device="cpu", dtype="fp32").load()


def test_matches_sentence_transformers(fp32: OnnxEmbeddingModel, samples_dir: Path) -> None:
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(samples_dir / MODEL), device="cpu").encode(list(PROBE_SENTENCES))
    got = np.asarray(fp32.embed_documents(list(PROBE_SENTENCES)))
    assert got.shape == (len(PROBE_SENTENCES), 384)
    cos = (got * reference).sum(axis=1) / np.linalg.norm(got, axis=1) / np.linalg.norm(reference, axis=1)
    assert cos.min() >= 0.9999, cos
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)  # Normalize module


def test_similar_sentences_are_closer(fp32: OnnxEmbeddingModel) -> None:
    cat, kitten, stocks = np.asarray(
        fp32.embed_documents(["The cat sits on the mat.", "A kitten rests on a rug.", "Stocks fell sharply."])
    )
    assert cat @ kitten > cat @ stocks + 0.3


def test_result_does_not_depend_on_batching(fp32: OnnxEmbeddingModel, samples_dir: Path) -> None:
    texts = list(PROBE_SENTENCES)
    one_by_one = np.asarray([fp32.embed_query(t) for t in texts])
    small = OnnxEmbeddingModel(model_path=samples_dir / MODEL, dtype="fp32", batch_size=3)
    batched = np.asarray(small.embed_documents(texts))
    np.testing.assert_allclose(batched, one_by_one, atol=2e-5)


def test_concurrent_calls_do_not_mix(fp32: OnnxEmbeddingModel) -> None:
    from concurrent.futures import ThreadPoolExecutor

    texts = [f"sentence number {i} about topic {i % 7}" for i in range(40)]
    expected = np.asarray(fp32.embed_documents(texts))
    chunks = [texts[i::4] for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(fp32.embed_documents, chunks * 3))
    for chunk, got in zip(chunks * 3, results):
        rows = [texts.index(t) for t in chunk]
        np.testing.assert_allclose(np.asarray(got), expected[rows], atol=2e-5)


def test_vectors_come_with_the_tokens_each_text_was_read_as(fp32: OnnxEmbeddingModel) -> None:
    """The server's ``usage``: counted by the encoder while embedding, each text cut to the window."""
    texts = ["hello", "The cat sits on the mat.", "word " * 5000]
    vectors, tokens = fp32.embed_counted(texts)
    tokenizer = fp32.runner.tokenizer
    assert tokens == sum(len(tokenizer.encode(t).ids) for t in texts)
    assert tokens < 2 * 256 + 30  # the long text counts only its 256 tokens
    np.testing.assert_allclose(np.asarray(vectors), np.asarray(fp32.embed_documents(texts)), atol=2e-5)
    assert asyncio.run(fp32.aembed_counted(["hello"]))[1] == len(tokenizer.encode("hello").ids)
    assert fp32.embed_counted([]) == ([], 0)


def test_query_equals_document(fp32: OnnxEmbeddingModel) -> None:
    assert np.allclose(fp32.embed_query("hello"), fp32.embed_documents(["hello"])[0])


def test_empty_list_gives_empty_list(fp32: OnnxEmbeddingModel) -> None:
    assert fp32.embed_documents([]) == []


def test_long_input_is_truncated_not_a_crash(fp32: OnnxEmbeddingModel) -> None:
    long_text = "word " * 5000
    vector = fp32.embed_query(long_text)
    assert len(vector) == 384 and np.isfinite(vector).all()
    # past the 256-token limit, more text changes nothing
    assert np.allclose(vector, fp32.embed_query("word " * 3000), atol=1e-6)


@pytest.mark.parametrize(("bad", "where"), [(["ok", 3], "item 1 is int"), (["a", None, "b"], "item 1 is NoneType")])
def test_non_string_item_names_the_item(fp32: OnnxEmbeddingModel, bad: list, where: str) -> None:
    with pytest.raises(TypeError, match=where):
        fp32.embed_documents(bad)


def test_single_string_is_refused_for_documents(fp32: OnnxEmbeddingModel) -> None:
    with pytest.raises(TypeError, match="got a single str"):
        fp32.embed_documents("abc")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="expects a str"):
        fp32.embed_query(["abc"])  # type: ignore[arg-type]


async def test_async_twins(fp32: OnnxEmbeddingModel) -> None:
    docs, query = await asyncio.gather(fp32.aembed_documents(["a", "b"]), fp32.aembed_query("a"))
    assert len(docs) == 2 and np.allclose(docs[0], query)


def test_int8_variant_is_close_to_fp32(fp32: OnnxEmbeddingModel, samples_dir: Path) -> None:
    int8 = OnnxEmbeddingModel(model_path=samples_dir / MODEL, dtype="int8").load()
    assert int8.variant == "int8"
    a = np.asarray(fp32.embed_documents(list(PROBE_SENTENCES)))
    b = np.asarray(int8.embed_documents(list(PROBE_SENTENCES)))
    assert (a * b).sum(axis=1).mean() > 0.97


def test_int8_keeps_quality_on_real_text(fp32: OnnxEmbeddingModel, samples_dir: Path) -> None:
    """The int8 targets, on 2,000 real sentences: cosine to fp32 and each text's 10 nearest neighbours."""
    from benchmarks.corpus import stdlib_sentences
    from ortmodels.export.encoder.quantize import top_k_agreement

    texts = stdlib_sentences(2000)
    int8 = OnnxEmbeddingModel(model_path=samples_dir / MODEL, dtype="int8").load()
    a = np.asarray(fp32.embed_documents(texts))
    b = np.asarray(int8.embed_documents(texts))
    cos = (a * b).sum(axis=1)
    assert cos.mean() >= 0.99 and cos.min() >= 0.97, (cos.mean(), cos.min())
    assert top_k_agreement(a, b, 10) >= 0.9


def test_int8_manifest_records_its_quality(samples_dir: Path) -> None:
    from ortmodels.store import ModelStore

    entry = ModelStore(samples_dir).require(MODEL, "embedding").manifest.variants["int8"]  # type: ignore[union-attr]
    assert entry.quantization["smoothing"]["alpha"] > 0 and entry.quantization["reduce_range"] is True
    quality = entry.parity["vs_fp32"]
    assert quality["texts"] >= 500 and quality["meets_bar"] is True
    assert quality["cosine_mean"] >= 0.99 and quality["cosine_min"] >= 0.97 and quality["top10_agreement"] >= 0.9


def test_unload_and_reload(samples_dir: Path) -> None:
    model = OnnxEmbeddingModel(model_path=samples_dir / MODEL)
    assert not model.is_loaded
    first = model.embed_query("lazy load")  # loads on first use
    assert model.is_loaded and model.model_path == samples_dir / MODEL
    model.unload()
    assert not model.is_loaded
    assert np.allclose(model.embed_query("lazy load"), first)


def test_by_name_from_settings(samples_dir: Path) -> None:
    model = OnnxEmbeddingModel(MODEL).load()
    assert model.model_path == samples_dir / MODEL and model.variant == "fp32"


def test_precision_embeddings_never_have_falls_back(samples_dir: Path, caplog: pytest.LogCaptureFixture,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """MODEL_DTYPE is one setting for every model: int4 falls back for embeddings; asked of this
    model (``dtype=``, a tag), it is an error naming the precisions there are."""
    with pytest.raises(ConfigurationError, match=r"Embedding models are not exported as int4 \(only fp32, int8\)"):
        OnnxEmbeddingModel(model_path=samples_dir / MODEL, dtype="int4").load()
    monkeypatch.setenv("MODEL_DTYPE", "int4")
    model = OnnxEmbeddingModel(model_path=samples_dir / MODEL).load()
    assert model.variant == "fp32" and "not exported as int4" in caplog.text


def test_missing_variant_says_how_to_export(copied_embedding_model: Path) -> None:
    import json

    manifest = copied_embedding_model / "onnx" / "manifest.json"
    data = json.loads(manifest.read_text())
    del data["variants"]["int8"]
    manifest.unlink()
    manifest.write_text(json.dumps(data))
    with pytest.raises(ModelNotExportedError, match="--dtype int8"):
        OnnxEmbeddingModel(model_path=copied_embedding_model, dtype="int8").load()


def test_missing_model_file_names_the_file(copied_embedding_model: Path) -> None:
    graph = copied_embedding_model / "onnx" / "fp32" / "model.onnx"
    graph.unlink()
    with pytest.raises(ModelFileError, match="Missing model file") as info:
        OnnxEmbeddingModel(model_path=copied_embedding_model, dtype="fp32").load()
    assert str(graph.resolve()) in str(info.value)


@pytest.mark.parametrize("damage", ["garbage", "truncate"])
def test_corrupt_model_file_names_the_file(copied_embedding_model: Path, damage: str,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """onnxruntime's own refusal, should a damaged file get past the sha256 check (switched off here)."""
    monkeypatch.setenv("MODEL_VERIFY_FILES", "false")
    graph = copied_embedding_model / "onnx" / "fp32" / "model.onnx"
    data = graph.read_bytes()
    graph.unlink()  # the copy shares the inode with the sample when hard-linked: replace, never write through
    graph.write_bytes(b"this is not an onnx file" if damage == "garbage" else data[: len(data) // 3])
    with pytest.raises(ModelFileError, match="could not load the model") as info:
        OnnxEmbeddingModel(model_path=copied_embedding_model, dtype="fp32").load()
    assert str(graph.resolve()) in str(info.value) and "re-run 'ortmodels export'" in str(info.value)


def test_missing_tokenizer_names_the_file(copied_embedding_model: Path) -> None:
    tokenizer = copied_embedding_model / "onnx" / "fp32" / "tokenizer.json"
    tokenizer.unlink()
    with pytest.raises(ModelFileError, match="Missing model file") as info:  # the sha256 check's turn
        OnnxEmbeddingModel(model_path=copied_embedding_model, dtype="fp32").load()
    assert str(tokenizer.resolve()) in str(info.value)


def test_not_exported_model(tmp_path: Path, samples_dir: Path) -> None:
    folder = tmp_path / "raw"
    shutil.copytree(samples_dir / MODEL, folder, ignore=shutil.ignore_patterns("onnx", ".exports", "*.safetensors"))
    with pytest.raises(ModelFileError, match="ortmodels export raw"):
        OnnxEmbeddingModel(model_path=folder).load()
    assert os.path.exists(folder)


def test_traversal_name_refused_at_construction() -> None:
    from ortmodels.errors import InvalidModelNameError

    with pytest.raises(InvalidModelNameError):
        OnnxEmbeddingModel("../../etc")


def test_many_texts_run_in_slices_and_a_set_stop_ends_the_call(fp32: OnnxEmbeddingModel,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Slices give the vectors one call gives; a caller that gave up stops the rest, as cancelled."""
    import threading

    from ortmodels.lifecycle.managed import EMBED_SLICE

    runtime = fp32.runtime
    texts = [f"text {i} of a long list" for i in range(EMBED_SLICE + 10)]
    vectors, tokens = runtime.embed_counted(texts)
    assert len(vectors) == len(texts)
    np.testing.assert_allclose(vectors[EMBED_SLICE:], fp32.embed_documents(texts[EMBED_SLICE:]), atol=1e-5)
    sizes: list[int] = []
    stop = threading.Event()
    real = runtime._embed_as

    def first_slice_then_stop(part: list[str], *args: object) -> tuple[list[list[float]], int]:
        sizes.append(len(part))
        stop.set()
        return real(part, *args)

    monkeypatch.setattr(runtime, "_embed_as", first_slice_then_stop)
    with pytest.raises(asyncio.CancelledError, match=f"after {EMBED_SLICE} of {len(texts)} texts"):
        runtime.embed_counted(texts, stop=stop)
    assert sizes == [EMBED_SLICE]

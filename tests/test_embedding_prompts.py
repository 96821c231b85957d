"""Query and document prompts, and Matryoshka dimensions, against sentence-transformers.

A tiny random BERT checkpoint is given a ``config_sentence_transformers.json`` with prompts
and a default prompt name, and a model card that declares Matryoshka training as
sentence-transformers' generated cards do; it is exported once, and its vectors are compared
with sentence-transformers' ``encode_query``, ``encode_document``, ``encode`` and
``truncate_dim`` on the same checkpoint. The prompt rules themselves (which name each role
takes) are checked on specs alone; the server's fields through a real ``ortmodels serve``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ortmodels.errors import EmbeddingOptionError
from ortmodels.export.encoder.embedding_config import read_matryoshka, read_prompts
from ortmodels.runtime.embedding_options import output_size, prompt_for, truncate
from ortmodels.store.manifest import EmbeddingSpec, Matryoshka
from tests.tiny_models import build_tiny_encoder

PROMPTS = {"query": "query: ", "classification": "classify: ", "empty": None}
DEFAULT = "classification"
TEXTS = ["What is the capital of France?", "Paris is the capital and most populous city of France.", "ok",
         "A man is playing a guitar on a street corner."]
CARD = """---
language: en
tags:
- sentence-transformers
- sentence-similarity
- loss:MatryoshkaLoss
- loss:MultipleNegativesRankingLoss
pipeline_tag: sentence-similarity
---
# tiny

#### MatryoshkaLoss
```json
{
    "loss": "MultipleNegativesRankingLoss",
    "matryoshka_dims": [8, 32, 16],
    "matryoshka_weights": [1, 1, 1]
}
```
"""


def _spec(**changes: object) -> EmbeddingSpec:
    base = {"pooling": "mean", "normalize": True, "max_seq_length": 64, "dimension": 32, "pad_token_id": 0}
    return EmbeddingSpec(**{**base, **changes})  # type: ignore[arg-type]


# -- the rules, on specs ------------------------------------------------------------------------

@pytest.mark.parametrize(("prompts", "default", "role", "expected"), [
    ({"query": "q: ", "document": "d: "}, None, "query", "q: "),
    ({"query": "q: ", "document": "d: "}, None, "document", "d: "),
    # sentence-transformers 5.x always has a "document" prompt ("" unless set), so "passage" is only used by name
    ({"query": "q: ", "passage": "p: "}, None, "document", ""),
    ({"query": "q: ", "x": "x: "}, "x", "document", ""),  # ... and the default is not reached either
    ({"x": "x: "}, "x", "query", ""),
    ({"query": "q: ", "x": "x: "}, "x", None, "x: "),  # plain encode: the default
    ({"query": "q: "}, "query", None, "q: "),
    ({"query": "q: "}, None, None, ""),
    ({}, None, "query", ""),
])
def test_the_prompt_each_role_takes(prompts: dict, default: str | None, role: str | None, expected: str) -> None:
    assert prompt_for(_spec(prompts=prompts, default_prompt_name=default), "m", role) == expected


def test_a_prompt_by_name_wins_and_an_unknown_one_names_the_prompts() -> None:
    spec = _spec(prompts={"query": "q: ", "passage": "p: "})
    assert prompt_for(spec, "m", "document", "query") == "q: "
    assert prompt_for(spec, "m", "query", "passage") == "p: "
    with pytest.raises(EmbeddingOptionError, match=r"m has no prompt named 'nope'; its prompts: 'query', "
                                                   r"'document' \(empty\), 'passage'") as err:
        prompt_for(spec, "m", None, "nope")
    assert err.value.param == "prompt_name"
    with pytest.raises(EmbeddingOptionError, match="input_type must be 'query' or 'document'"):
        prompt_for(spec, "m", "question")


def test_dimensions_need_matryoshka_training_or_the_opt_in() -> None:
    plain, trained = _spec(), _spec(matryoshka=Matryoshka(source="README.md: tags matryoshka"))
    assert output_size(plain, "m", None) == output_size(plain, "m", 32) == 32
    with pytest.raises(EmbeddingOptionError, match=r"m gives 32 dimensions and its card declares no Matryoshka.*"
                                                   r"matryoshka=True") as err:
        output_size(plain, "m", 16)
    assert err.value.param == "dimensions"
    assert output_size(plain, "m", 16, matryoshka=True) == output_size(trained, "m", 16) == 16
    for bad in (0, 33, True, 2.5):
        with pytest.raises(EmbeddingOptionError, match="from 1 to 32"):
            output_size(trained, "m", bad)  # type: ignore[arg-type]
    cut = truncate(np.array([[3.0, 4.0, 12.0]], dtype=np.float32), 2, normalize=True)
    np.testing.assert_allclose(cut, [[0.6, 0.8]])
    np.testing.assert_allclose(truncate(np.array([[3.0, 4.0, 12.0]]), 2, normalize=False), [[3.0, 4.0]])


def test_an_old_manifest_without_prompts_still_reads() -> None:
    spec = EmbeddingSpec.model_validate(
        {"pooling": "mean", "normalize": True, "max_seq_length": 256, "dimension": 384, "pad_token_id": 0})
    assert spec.prompts == {} and spec.default_prompt_name is None and spec.matryoshka is None
    with pytest.raises(ValueError, match="default_prompt_name 'x' is not one of the prompts"):
        _spec(prompts={"q": ""}, default_prompt_name="x")
    assert _spec(default_prompt_name="document").default_prompt_name == "document"  # built into sentence-transformers


def test_what_the_export_reads_from_the_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "config_sentence_transformers.json").write_text(json.dumps(
        {"prompts": PROMPTS, "default_prompt_name": DEFAULT}))
    assert read_prompts(tmp_path) == ({"query": "query: ", "classification": "classify: ", "empty": ""}, DEFAULT)
    (tmp_path / "README.md").write_text(CARD)
    assert read_matryoshka(tmp_path, 32) == Matryoshka(source="README.md: tags loss:MatryoshkaLoss",
                                                       dimensions=[32, 16, 8])
    (tmp_path / "README.md").write_text("---\ntags: [feature-extraction, matryoshka]\n---\n# nomic-style card\n")
    assert read_matryoshka(tmp_path, 32) == Matryoshka(source="README.md: tags matryoshka", dimensions=[])
    (tmp_path / "README.md").write_text("---\ntags:\n- sentence-transformers\n---\nNo truncation here.\n")
    assert read_matryoshka(tmp_path, 32) is None
    (tmp_path / "config.json").write_text(json.dumps({"matryoshka_dimensions": [16, 64, 8]}))
    assert read_matryoshka(tmp_path, 32) == Matryoshka(source="config.json: matryoshka_dimensions", dimensions=[16, 8])


def test_a_pooling_that_leaves_prompts_out_is_refused_at_export(tmp_path: Path) -> None:
    from ortmodels.errors import ExportError

    (tmp_path / "config_sentence_transformers.json").write_text(json.dumps({"prompts": {"query": "q: "}}))
    with pytest.raises(ExportError, match="include_prompt: false"):
        read_prompts(tmp_path, include_prompt=False)
    assert read_prompts(tmp_path, include_prompt=True) == ({"query": "q: "}, None)


# -- on an exported checkpoint, against sentence-transformers ------------------------------------

@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ortmodels.export import export_model
    from ortmodels.store import ModelStore

    root = tmp_path_factory.mktemp("prompted") / "models"
    folder = build_tiny_encoder(root / "tiny-prompted", "bert", "mean", normalize=True)
    (folder / "config_sentence_transformers.json").write_text(json.dumps(
        {"prompts": PROMPTS, "default_prompt_name": DEFAULT}), encoding="utf-8")
    (folder / "README.md").write_text(CARD, encoding="utf-8")
    outcome = export_model(ModelStore(root), "tiny-prompted", ["fp32"])
    spec = outcome.manifest.embedding
    assert spec is not None and spec.prompts == {"query": "query: ", "classification": "classify: ", "empty": ""}
    assert spec.default_prompt_name == DEFAULT
    assert spec.matryoshka == Matryoshka(source="README.md: tags loss:MatryoshkaLoss", dimensions=[32, 16, 8])
    return folder


@pytest.fixture(scope="module")
def reference(exported: Path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(exported), device="cpu")


@pytest.fixture(scope="module")
def onnx(exported: Path) -> Iterator:
    from ortmodels.runtime.embeddings import OnnxEmbeddingModel

    model = OnnxEmbeddingModel(model_path=exported, device="cpu", dtype="fp32").load()
    yield model
    model.unload()


def _close(got: object, expected: np.ndarray) -> None:
    got = np.asarray(got, dtype=np.float32)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=2e-5)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_query_and_document_prompts_match_sentence_transformers(onnx, reference) -> None:
    assert reference.prompts["query"] == "query: " and reference.default_prompt_name == DEFAULT
    _close([onnx.embed_query(t) for t in TEXTS], reference.encode_query(TEXTS))
    _close(onnx.embed_documents(TEXTS), reference.encode_document(TEXTS))  # its empty built-in document prompt
    _close(onnx.embed(TEXTS), reference.encode(TEXTS))
    _close(onnx.embed(TEXTS, input_type="document", prompt_name="query"), reference.encode(TEXTS, prompt_name="query"))
    _close(onnx.embed(TEXTS, prompt_name="empty"), reference.encode(TEXTS, prompt_name="empty"))
    # the prompts really change the vectors, so the comparisons above are not vacuous
    assert not np.allclose(onnx.embed_query(TEXTS[0]), onnx.embed(TEXTS[:1], prompt_name="empty")[0], atol=1e-3)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_matryoshka_dimensions_match_sentence_transformers_truncate_dim(exported: Path, onnx, reference) -> None:
    from ortmodels.runtime.embeddings import OnnxEmbeddingModel

    expected = reference.encode_query(TEXTS, truncate_dim=16, normalize_embeddings=True)
    _close(onnx.embed(TEXTS, input_type="query", dimensions=16), expected)
    cut = OnnxEmbeddingModel(model_path=exported, device="cpu", dtype="fp32", dimensions=16)
    try:
        assert cut.dimension == 16
        _close([cut.embed_query(t) for t in TEXTS], expected)
    finally:
        cut.unload()
    with pytest.raises(EmbeddingOptionError, match="gives 32 dimensions; dimensions must be a whole number from 1 to 32"):
        onnx.embed(TEXTS, dimensions=64)


@pytest.mark.slow
def test_a_model_without_matryoshka_refuses_fewer_dimensions_unless_opted_in(samples_dir: Path) -> None:
    from sentence_transformers import SentenceTransformer

    from ortmodels.runtime.embeddings import OnnxEmbeddingModel

    path = samples_dir / "all-minilm-l6-v2"
    refused = OnnxEmbeddingModel(model_path=path, device="cpu", dtype="fp32", dimensions=128)
    with pytest.raises(EmbeddingOptionError, match="all-minilm-l6-v2 gives 384 dimensions .*matryoshka=True"):
        refused.load()
    opted = OnnxEmbeddingModel(model_path=path, device="cpu", dtype="fp32", dimensions=128, matryoshka=True)
    try:
        got = np.asarray(opted.embed_documents(TEXTS))
    finally:
        opted.unload()
    expected = SentenceTransformer(str(path), device="cpu").encode(TEXTS, truncate_dim=128, normalize_embeddings=True)
    _close(got, expected)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_server_takes_input_type_prompt_name_and_dimensions(exported: Path, onnx, tmp_path: Path) -> None:
    openai = pytest.importorskip("openai")
    import httpx

    from tests.test_serve import _start, _stop

    server = _start(tmp_path, "--models", "tiny-prompted", models_dir=exported.parent)
    try:
        client = openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0, timeout=120)

        def vectors(**extra: object) -> np.ndarray:
            dims = extra.pop("dimensions", None)
            reply = client.embeddings.create(model="tiny-prompted", input=TEXTS, encoding_format="float",
                                             extra_body=extra, **({"dimensions": dims} if dims else {}))
            return np.asarray([d.embedding for d in reply.data], dtype=np.float32)

        _close(vectors(input_type="query"), np.asarray([onnx.embed_query(t) for t in TEXTS], dtype=np.float32))
        _close(vectors(input_type="document"), np.asarray(onnx.embed_documents(TEXTS), dtype=np.float32))
        _close(vectors(), np.asarray(onnx.embed(TEXTS), dtype=np.float32))
        _close(vectors(prompt_name="query", dimensions=8),
               np.asarray(onnx.embed(TEXTS, prompt_name="query", dimensions=8), dtype=np.float32))
        def tokens(**extra: object) -> int:
            return client.embeddings.create(model="tiny-prompted", input=TEXTS, extra_body=extra).usage.prompt_tokens

        assert tokens(input_type="query") == tokens(prompt_name="empty") + 2 * len(TEXTS)  # "query", ":" each
        unknown = httpx.post(f"{server.v1}/embeddings", timeout=60,
                             json={"model": "tiny-prompted", "input": "a", "prompt_name": "passage"})
        assert unknown.status_code == 400, unknown.text
        error = unknown.json()["error"]
        assert error["param"] == "prompt_name" and "'query', 'document' (empty), 'classification'" in error["message"]
        too_many = httpx.post(f"{server.v1}/embeddings", timeout=60,
                              json={"model": "tiny-prompted", "input": "a", "dimensions": 64})
        assert too_many.status_code == 400 and too_many.json()["error"]["param"] == "dimensions"
        assert "gives 32 dimensions" in too_many.json()["error"]["message"]
        bad_role = httpx.post(f"{server.v1}/embeddings", timeout=60,
                              json={"model": "tiny-prompted", "input": "a", "input_type": "question"})
        assert bad_role.status_code == 400 and bad_role.json()["error"]["param"] == "input_type"
    finally:
        _stop(server)

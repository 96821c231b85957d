"""The reranker kind end to end: kind detection, export gated against sentence-transformers'
``CrossEncoder``, the runtime (scores, LangChain compressor, coalesced callers), the CLI and
``/v1/rerank`` on a real server process.

The slow part builds one tiny random cross-encoder per encoder family ortmodels exports
(BERT, XLM-RoBERTa, MPNet; seeded, `tests.tiny_cross_encoders`), exports each once per module
and compares with ``CrossEncoder`` on the checkpoint: scores within 1e-4 and the same order.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ortmodels.errors import ExportError, ModelKindError, RerankInputError
from ortmodels.store import ModelStore

from .conftest import ROOT, manager_on

#: Exports take ~10 s each on 2 cores, several times that beside other work.
EXPORT_TIMEOUT_S = 600

FAMILIES = {"tiny-ce-bert": ("bert", "sigmoid"), "tiny-ce-xlmr": ("xlm-roberta", "sigmoid"),
            "tiny-ce-mpnet": ("mpnet", "identity")}

QUERY = "what is the capital of france"
DOCUMENTS = [
    "Paris is the capital and most populous city of France.",
    "The quick brown fox jumps over the lazy dog.",
    "",
    "ok",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "東京は日本の首都です。 🚀 ✓ €",
    "A man is playing a guitar on a street corner.",
    " ".join(["Long inputs are truncated to the model's limit rather than crashing."] * 12),
    "What is the capital of Japan? Tokyo is.",
    "Short.",
]


def _write_config(folder: Path, **config: object) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


# -- kind detection and refusals (no export) ---------------------------------------------------

def test_a_one_label_sequence_classifier_is_a_reranker_and_a_multi_label_one_is_refused(tmp_path: Path) -> None:
    from ortmodels.export import export_model

    _write_config(tmp_path / "ce", architectures=["BertForSequenceClassification"], id2label={"0": "LABEL_0"})
    _write_config(tmp_path / "ce-num", architectures=["XLMRobertaForSequenceClassification"], num_labels=1)
    nli = _write_config(tmp_path / "nli", architectures=["BertForSequenceClassification"],
                        id2label={"0": "contradiction", "1": "entailment", "2": "neutral"})
    (nli / "modules.json").write_text("[]")  # sentence-transformers files do not make it an embedding model
    _write_config(tmp_path / "enc", architectures=["BertModel"])
    store = ModelStore(tmp_path)
    assert store.info("ce").kind == "reranker"
    assert store.info("ce-num").kind == "reranker"
    assert store.info("enc").kind == "embedding"
    assert store.info("nli").kind == "unknown"
    with pytest.raises(ExportError, match=r"sequence classifier with 3 labels.*only one-label ones"):
        export_model(store, "nli", ["fp32"])


def test_the_activation_is_read_as_sentence_transformers_reads_it(tmp_path: Path) -> None:
    from ortmodels.export.encoder.rerank import read_activation

    assert read_activation(tmp_path, {}) == "sigmoid"  # CrossEncoder's default for one label
    assert read_activation(tmp_path, {"sbert_ce_default_activation_function":
                                      "torch.nn.modules.linear.Identity"}) == "identity"
    assert read_activation(tmp_path, {"sentence_transformers": {"activation_fn":
                                      "torch.nn.modules.activation.Sigmoid"}}) == "sigmoid"
    (tmp_path / "config_sentence_transformers.json").write_text(
        json.dumps({"activation_fn": "torch.nn.modules.linear.Identity"}))
    assert read_activation(tmp_path, {}) == "identity"
    (tmp_path / "config_sentence_transformers.json").write_text(json.dumps({"activation_fn": "torch.nn.Tanh"}))
    with pytest.raises(ExportError, match="torch.nn.Tanh"):
        read_activation(tmp_path, {})


def test_order_kept_counts_queries_whose_top_k_keeps_its_order() -> None:
    from ortmodels.export.encoder.rerank import order_kept

    reference = np.array([0.9, 0.8, 0.1, 0.5, 0.4, 0.3])
    same_top = np.array([0.7, 0.6, 0.0, 0.2, 0.9, 0.1])  # the second query's first two swap
    assert order_kept(reference, reference, [0, 0, 0, 1, 1, 1], k=2) == 1.0
    assert order_kept(reference, same_top, [0, 0, 0, 1, 1, 1], k=2) == 0.5


def test_rerank_documents_are_strings_or_text_objects() -> None:
    from ortmodels.serve.errors import ApiError
    from ortmodels.serve.rerank import RerankRequest, documents_of

    request = RerankRequest.model_validate({"query": "q", "documents": ["a", {"text": "b"}]})
    assert documents_of(request) == ["a", "b"]
    for bad, where in [([], "documents"), (["a", {"text": 3}], "documents[1]"),
                       ([{"text": "a", "title": "t"}], "documents[0]"), ([None], "documents[0]")]:
        with pytest.raises(ApiError) as caught:
            documents_of(RerankRequest.model_validate({"query": "q", "documents": bad}))
        assert caught.value.status == 400 and caught.value.param == where


# -- the tiny families, exported once --------------------------------------------------------

@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    pytest.importorskip("sentence_transformers")
    from ortmodels.export import export_model
    from tests.tiny_cross_encoders import build_tiny_cross_encoder

    root = tmp_path_factory.mktemp("rerank") / "models"
    for name, (family, activation) in FAMILIES.items():
        build_tiny_cross_encoder(root / name, family, activation)
        assert ModelStore(root).info(name).kind == "reranker"
        export_model(ModelStore(root), name, ["fp32", "int8"])
    yield root


@pytest.fixture
def manager(store: Path, monkeypatch: pytest.MonkeyPatch) -> object:
    return manager_on(monkeypatch, store, DEFAULT_RERANK_MODEL="tiny-ce-bert", MODEL_DEVICE="cpu")


def _cross_encoder(folder: Path) -> object:
    from sentence_transformers import CrossEncoder

    return CrossEncoder(str(folder), device="cpu")


@pytest.mark.slow
@pytest.mark.timeout(EXPORT_TIMEOUT_S)
@pytest.mark.parametrize("name", list(FAMILIES))
def test_fp32_scores_and_order_equal_cross_encoders(store: Path, manager: object, name: str) -> None:
    from langchain_core.documents import Document

    from ortmodels import OnnxReranker

    manifest = ModelStore(store).info(name).manifest
    assert manifest is not None and manifest.kind == "reranker" and manifest.reranker is not None
    assert manifest.reranker.activation == FAMILIES[name][1]
    fp32 = manifest.variants["fp32"]
    assert fp32.parity["reference"] == "sentence-transformers CrossEncoder"
    assert fp32.parity["max_abs_diff"] <= 1e-4 and fp32.parity["pairs"] > 400
    int8 = manifest.variants["int8"]  # random weights may miss the bar: then recorded failed, without files
    assert int8.quality is not None and int8.quality.passed is (int8.parity["top5_order_kept"] >= 0.95)
    assert int8.quality.passed or (not int8.files and "top-5 order kept" in int8.quality.failures[0])

    ce = _cross_encoder(store / name)
    assert len(ce.tokenizer(QUERY, DOCUMENTS[7])["input_ids"]) > manifest.reranker.max_seq_length  # truncated
    expected = np.asarray(ce.predict([(QUERY, d) for d in DOCUMENTS]), dtype=np.float32)
    model = manager.get_reranker(f"{name}:fp32")  # type: ignore[attr-defined]
    got = np.asarray(model.score([(QUERY, d) for d in DOCUMENTS]), dtype=np.float32)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)

    expected_order = [hit["corpus_id"] for hit in ce.rank(QUERY, DOCUMENTS)]
    assert [i for i, _ in model.rerank(QUERY, DOCUMENTS)] == expected_order
    docs = [Document(page_content=d, metadata={"n": i}) for i, d in enumerate(DOCUMENTS)]
    kept = OnnxReranker(model=model, top_n=3).compress_documents(docs, QUERY)
    assert [d.metadata["n"] for d in kept] == expected_order[:3]
    assert [d.metadata["relevance_score"] for d in kept] == sorted((d.metadata["relevance_score"] for d in kept),
                                                                   reverse=True)


@pytest.mark.slow
def test_concurrent_callers_get_their_own_scores(manager: object) -> None:
    model = manager.get_reranker()  # type: ignore[attr-defined]  # DEFAULT_RERANK_MODEL
    assert model.model_name == "tiny-ce-bert"
    alone = [model.score([(f"query {n}", d) for d in DOCUMENTS]) for n in range(8)]
    got: dict[int, list[float]] = {}
    start = threading.Barrier(8)

    def call(n: int) -> None:
        start.wait(timeout=30)
        got[n] = model.score([(f"query {n}", d) for d in DOCUMENTS])

    threads = [threading.Thread(target=call, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(got) == 8
    for n in range(8):  # batched with others or not, each caller's rows are its own
        np.testing.assert_allclose(got[n], alone[n], atol=1e-5)


@pytest.mark.slow
def test_bad_calls_are_named(manager: object) -> None:
    model = manager.get_reranker("tiny-ce-bert")  # type: ignore[attr-defined]
    assert model.score([]) == [] and model.rerank("q", []) == []
    with pytest.raises(TypeError, match="single pair"):
        model.score(("q", "d"))
    with pytest.raises(ValueError, match="top_n"):
        model.rerank("q", ["d"], top_n=0)
    with pytest.raises(RerankInputError, match="lone surrogate"):
        model.rerank("q", ["fine", "\ud800"])
    with pytest.raises(ModelKindError, match="kind 'reranker', not 'embedding'"):
        manager.get_embedding_model("tiny-ce-bert")  # type: ignore[attr-defined]


# -- the CLI and the server ----------------------------------------------------------------------

@pytest.mark.slow
def test_cli_rerank(store: Path) -> None:
    env = {**os.environ, "LOCAL_MODELS_DIR": str(store),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "ortmodels", "rerank", "tiny-ce-bert:fp32", QUERY, *DOCUMENTS[:4],
                           "--top-n", "2", "--json"], check=False, capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    expected = [hit["corpus_id"] for hit in _cross_encoder(store / "tiny-ce-bert").rank(QUERY, DOCUMENTS[:4])]
    assert [r["index"] for r in results] == expected[:2]
    assert results[0]["document"] == DOCUMENTS[expected[0]]
    wrong = subprocess.run([sys.executable, "-m", "ortmodels", "rerank", "nope", QUERY, "d"], check=False,
                           capture_output=True,
                           text=True, env=env, timeout=120)
    assert wrong.returncode != 0 and "nope" in wrong.stderr + wrong.stdout


@pytest.fixture(scope="module")
def server(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    pytest.importorskip("fastapi")
    from .test_serve import _start, _stop

    running = _start(tmp_path_factory.mktemp("serve-rerank"), "--models", "tiny-ce-bert,tiny-ce-mpnet",
                     models_dir=store)
    yield running
    _stop(running)


@pytest.mark.slow
def test_v1_rerank_answers_the_jina_and_cohere_shape(server: object, store: Path) -> None:
    httpx = pytest.importorskip("httpx")
    expected = [hit["corpus_id"] for hit in _cross_encoder(store / "tiny-ce-bert").rank(QUERY, DOCUMENTS)]
    body = {"model": "tiny-ce-bert", "query": QUERY, "top_n": 3, "return_documents": True,
            "documents": [d if i % 2 else {"text": d} for i, d in enumerate(DOCUMENTS)]}
    for path in ("/v1/rerank", "/rerank"):  # the OpenAI-style prefix, and where llama-server and TEI serve it
        reply = httpx.post(f"{server.url}{path}", json=body, timeout=60)  # type: ignore[attr-defined]
        assert reply.status_code == 200, reply.text
        answer = reply.json()
        assert answer["model"] == "tiny-ce-bert"
        assert [r["index"] for r in answer["results"]] == expected[:3]
        assert [r["document"]["text"] for r in answer["results"]] == [DOCUMENTS[i] for i in expected[:3]]
        assert answer["usage"]["prompt_tokens"] == answer["usage"]["total_tokens"] > len(DOCUMENTS) * 3
    plain = httpx.post(f"{server.url}/v1/rerank", timeout=60,  # type: ignore[attr-defined]
                       json={"model": "tiny-ce-mpnet", "query": QUERY, "documents": DOCUMENTS[:3]}).json()
    assert len(plain["results"]) == 3 and all("document" not in r for r in plain["results"])
    models = httpx.get(f"{server.url}/v1/models", timeout=30).json()["data"]  # type: ignore[attr-defined]
    assert {m["id"]: m["kind"] for m in models}["tiny-ce-bert"] == "reranker"


@pytest.mark.slow
@pytest.mark.parametrize(("body", "status", "param", "words"), [
    ({"model": "tiny-ce-bert", "documents": ["a"]}, 400, "query", "Missing required parameter"),
    ({"model": "tiny-ce-bert", "query": "q", "documents": []}, 400, "documents", "empty"),
    ({"model": "tiny-ce-bert", "query": "q", "documents": "a"}, 400, "documents", "valid list"),
    ({"model": "tiny-ce-bert", "query": "q", "documents": [{"title": "a"}]}, 400, "documents[0]", "'text'"),
    ({"model": "tiny-ce-bert", "query": "q", "documents": ["a"], "top_n": 0}, 400, "top_n", "greater than"),
    ({"model": "tiny-ce-bert", "query": "q", "documents": ["a"], "rank_fields": ["x"]}, 400, "rank_fields",
     "Unrecognized"),
    ({"model": "tiny-ce-bert", "query": "q", "documents": ["a"] * 1001}, 400, "documents", "at most 1000"),
    ({"model": "tiny-ce-bert", "query": "\ud800", "documents": ["a"]}, 400, None, "lone surrogate"),
    ({"model": "nope", "query": "q", "documents": ["a"]}, 404, "model", "reranker models here: tiny-ce-bert"),
    ({"model": "tiny-ce-bert:int4", "query": "q", "documents": ["a"]}, 404, "model", "does not exist"),
])
def test_bad_rerank_requests_are_4xx_naming_the_problem(server: object, body: dict, status: int,
                                                        param: str | None, words: str) -> None:
    httpx = pytest.importorskip("httpx")
    content = json.dumps(body).encode("utf-8", "surrogatepass")
    reply = httpx.post(f"{server.url}/v1/rerank", content=content, timeout=60,  # type: ignore[attr-defined]
                       headers={"Content-Type": "application/json"})
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert words in error["message"], error
    if param is not None:
        assert error["param"] == param, error


@pytest.mark.slow
def test_fuzz_rerank_never_5xx(server: object) -> None:
    from .test_serve import _fuzz_bodies, fuzz

    bases = {"/rerank": {"model": "tiny-ce-bert", "query": "q", "documents": ["a", {"text": "b"}]}}
    fields = {"/rerank": ["model", "query", "documents", "top_n", "return_documents", "junk"]}
    statuses = fuzz(server, _fuzz_bodies(random.Random(22), 150, bases, fields))  # type: ignore[arg-type]
    assert statuses.get(400, 0) > 50 and statuses.get(200, 0) > 0, statuses


def test_the_readme_renders_the_rerank_benchmark() -> None:
    from benchmarks.readme import rerank_section
    from benchmarks.targets import CROSS_ENCODER, evaluate, rerank_figure

    row = {"q1x20_pairs_per_s": 300.0, "q1x20_p50_ms": 66.7, "q1x100_pairs_per_s": 280.0, "q1x100_p50_ms": 357.1}
    data = {"shape": "cross-encoder/ms-marco-MiniLM-L-6-v2", "queries": 20, "corpus": "docstrings", "rounds": 3,
            "documents": [20, 100], "load_average": {"start": [1.5, 1.0, 1.0], "end": [2.5, 1.0, 1.0]},
            "results": [{"name": "ortmodels fp32", **row}],
            "server": [{"clients": 1, "pairs_per_s": 250.0, "latency_p50_ms": 80.0},
                       {"clients": 8, "pairs_per_s": 400.0, "latency_p50_ms": 400.0}]}
    text = "\n".join(rerank_section(data))
    assert "| ortmodels fp32 | 300 (66.7) | 280 (357.1) |" in text
    assert "1 client 250 pairs/s (p50 80 ms); 8 clients 400 pairs/s" in text and "1.50–2.50" in text
    verdicts = {r["label"]: r["verdict"] for r in evaluate({rerank_figure("fp32", CROSS_ENCODER): 2.5})}
    assert verdicts["rerank 1 × 100 documents, fp32: × sentence-transformers CrossEncoder"] == "pass"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_v1_rerank_on_ray_serve(store: Path, server: object, tmp_path: Path) -> None:
    """``ortmodels serve --ray``: the ingress forwards the ranking to the model's replica and
    answers as the plain server does; a bad request is the same 400."""
    pytest.importorskip("ray")
    httpx = pytest.importorskip("httpx")
    from .ray_serve import serve_on_ray

    with serve_on_ray(tmp_path, store, "--replicas", "1", "--models", "tiny-ce-bert", timeout=300) as running:
        url = running.url
        body = {"model": "tiny-ce-bert", "query": QUERY, "documents": DOCUMENTS, "top_n": 4, "return_documents": True}
        on_ray = httpx.post(f"{url}/v1/rerank", json=body, timeout=120)
        plain = httpx.post(f"{server.url}/v1/rerank", json=body, timeout=120)  # type: ignore[attr-defined]
        assert on_ray.status_code == plain.status_code == 200, on_ray.text
        assert [r["index"] for r in on_ray.json()["results"]] == [r["index"] for r in plain.json()["results"]]
        np.testing.assert_allclose([r["relevance_score"] for r in on_ray.json()["results"]],
                                   [r["relevance_score"] for r in plain.json()["results"]], atol=1e-6)
        assert on_ray.json()["usage"] == plain.json()["usage"]
        bad = httpx.post(f"{url}/rerank", json={"model": "tiny-ce-bert", "query": "q", "documents": [7]}, timeout=60)
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "documents[0]"


@pytest.mark.slow
def test_reranking_through_the_manager_is_light(store: Path) -> None:
    """The runtime path (manager, cross-encoder, LangChain compressor) imports no torch, transformers,
    optimum or Ray."""
    from .test_import_light import _heavy_modules_after

    body = ("from langchain_core.documents import Document\n"
            "from ortmodels import ModelManager, OnnxReranker\n"
            "r = ModelManager().get_reranker('tiny-ce-xlmr')\n"
            "assert len(OnnxReranker(model=r, top_n=1).compress_documents([Document('a'), Document('b')], 'q')) == 1\n")
    assert _heavy_modules_after(body, {"LOCAL_MODELS_DIR": str(store)}) == []

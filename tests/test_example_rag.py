"""examples/rag/app.py: the seed's ``chat_with_ai`` on a real vector database.

The splitter and the Qdrant local store are checked on their own; the slow test ingests the
example's documents with the embedding sample into Qdrant's in-process store and holds a
conversation with the chat sample, checking what the app controls: the passages retrieved
are the right document's, numbered as cited, the answer lists its sources, and the second
turn reuses the first from the prompt cache (not the 135M model's wording). The PostgreSQL
path runs against a real server with pgvector when ``ORTMODELS_TEST_PGVECTOR_URL`` is set
(examples/rag/README.md says how to start one).
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("qdrant_client")

from .conftest import CHAT_SAMPLE, EMBEDDING_SAMPLE, load_example

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "rag"
DOCS = EXAMPLE / "docs"
PG_URL = os.environ.get("ORTMODELS_TEST_PGVECTOR_URL")


@pytest.fixture(scope="module")
def app():
    return load_example("ortmodels_example_rag", EXAMPLE / "app.py")


def test_split_keeps_every_word_in_order_within_the_bound(app) -> None:
    text = (DOCS / "lighthouse-of-varnholm.md").read_text() + "\n\n" + "word " * 400
    pieces = app.split(text, max_chars=200, overlap=40)
    assert all(0 < len(p) <= 200 for p in pieces)
    joined = " ".join(pieces).split()
    words = text.split()
    position = 0
    for word in words:  # every word appears, in order (overlaps may repeat some)
        position = joined.index(word, position) + 1
    with pytest.raises(ValueError, match="more than twice overlap"):
        app.split(text, max_chars=80, overlap=40)


def test_qdrant_local_store_adds_once_and_finds_the_nearest(app, tmp_path: Path) -> None:
    passages = [app.Passage("a.md", 0, "alpha"), app.Passage("b.md", 0, "beta"), app.Passage("b.md", 1, "gamma")]
    vectors = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.6, 0.8]]
    store = app.QdrantStore(3, path=tmp_path / "qdrant")
    store.add(passages, vectors)
    store.add(passages[:1], vectors[:1])  # the same passage again: same id, stored once
    assert store.ids() == {p.id for p in passages} and all(uuid.UUID(i) for i in store.ids())
    (best, score), (second, _) = store.search([0.0, 1.0, 0.1], 2)
    assert best == passages[1] and second == passages[2] and score == pytest.approx(0.995, abs=1e-3)
    store.client.close()
    with pytest.raises(ValueError, match="holds 3-dimension vectors, not 4"):
        app.QdrantStore(4, path=tmp_path / "qdrant")
    with pytest.raises(TypeError, match="conn must be None, a folder, a postgresql:// URL"):
        app.open_store(42, 3)


@pytest.fixture(scope="module")
def models(samples_dir: Path) -> Iterator[tuple]:
    from ortmodels.runtime.chat import OnnxChatModel
    from ortmodels.runtime.embeddings import OnnxEmbeddingModel

    embeddings = OnnxEmbeddingModel(model_path=samples_dir / EMBEDDING_SAMPLE, device="cpu", dtype="fp32").load()
    chat = OnnxChatModel(model_path=samples_dir / CHAT_SAMPLE).load()
    yield embeddings, chat
    chat.unload()
    embeddings.unload()


def _check_answer(app, answer, expected_source: str) -> None:
    assert answer.text
    assert [s.number for s in answer.sources] == list(range(1, len(answer.sources) + 1))
    assert 1 <= len(answer.sources) <= 4
    assert answer.sources[0].source == expected_source, [(s.source, s.score) for s in answer.sources]
    assert set(answer.cited) <= {s.number for s in answer.sources}
    shown = str(answer).split("\n\nSources:\n", 1)[1].splitlines()
    assert shown and all(re.fullmatch(r"\[\d+\] [\w.-]+\.md \(part \d+\)", line) for line in shown)
    assert any(expected_source in line for line in shown)


def _conversation(app, conn, models: tuple, dimension: int) -> None:
    embeddings, chat = models
    conversation = app.Conversation()
    first = app.chat_with_ai(conn, "When was the lighthouse of Varnholm built, and by whom?", dimension, chat,
                             embeddings=embeddings, conversation=conversation)
    _check_answer(app, first, "lighthouse-of-varnholm.md")
    follow_up = app.chat_with_ai(conn, "Who was its last keeper?", dimension, chat, embeddings=embeddings,
                                 conversation=conversation)
    _check_answer(app, follow_up, "lighthouse-of-varnholm.md")  # found through the turn before
    assert follow_up.usage["input_token_details"]["cache_read"] > 0  # the first turn came from the prompt cache
    assert len(conversation.messages) == 5  # system, two questions, two answers
    other = app.chat_with_ai(conn, "How often does a sourdough starter in the refrigerator need feeding?",
                             dimension, chat, embeddings=embeddings)
    _check_answer(app, other, "sourdough-starter.md")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_chat_with_ai_answers_from_the_documents_on_qdrant_local(app, models: tuple, tmp_path: Path) -> None:
    embeddings, _ = models
    dimension = embeddings.dimension
    store = app.open_store(tmp_path / "qdrant", dimension)
    added = app.ingest(store, embeddings, DOCS)
    assert added == len(app.read_folder(DOCS)) >= 6
    assert app.ingest(store, embeddings, DOCS) == 0  # nothing twice
    _conversation(app, store, models, dimension)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_seeds_four_arguments_are_enough_and_keep_is_kept(app, models: tuple, samples_dir: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """``chat_with_ai(conn, user_input, dimension, chat_model)`` as the seed calls it: the
    embeddings are DEFAULT_EMBEDDING_MODEL's; ``keep`` bounds the passages without a reranker."""
    embeddings, chat = models
    monkeypatch.setenv("LOCAL_MODELS_DIR", str(samples_dir))
    monkeypatch.setenv("DEFAULT_EMBEDDING_MODEL", EMBEDDING_SAMPLE)
    store = app.open_store(None, embeddings.dimension)
    app.ingest(store, embeddings, DOCS)
    answer = app.chat_with_ai(store, "When was the lighthouse of Varnholm built?", embeddings.dimension, chat)
    assert answer.sources[0].source == "lighthouse-of-varnholm.md"
    one = app.chat_with_ai(store, "When was the lighthouse of Varnholm built?", embeddings.dimension, chat, keep=1)
    assert [s.source for s in one.sources] == ["lighthouse-of-varnholm.md"]


def test_the_command_says_its_errors_in_one_line(app, samples_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LOCAL_MODELS_DIR", str(samples_dir))
    assert app.main(["--docs", str(DOCS / "missing"), "Q?"]) == 1
    assert capsys.readouterr().err.strip() == f"error: {DOCS / 'missing'} is not a folder of documents."
    with pytest.raises(SystemExit):
        app.main(["--docs", str(DOCS), "--keep", "0", "Q?"])
    assert "keep at least 1" in capsys.readouterr().err


def test_the_command_refuses_an_empty_folder_and_a_file_as_the_store(app, samples_dir: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """An empty folder of documents answered from nothing (exit 0, no sources); a file as --db said
    only "[Errno 17] File exists"."""
    monkeypatch.setenv("LOCAL_MODELS_DIR", str(samples_dir))
    (tmp_path / "empty").mkdir()
    assert app.main(["--docs", str(tmp_path / "empty"), "Q?"]) == 1
    assert "holds no documents" in capsys.readouterr().err
    (tmp_path / "a-file").write_text("x")
    assert app.main(["--docs", str(DOCS), "--db", str(tmp_path / "a-file"), "Q?"]) == 1
    said = capsys.readouterr().err
    assert "is a file: the store is a folder" in said and said.count("\n") == 1, said


def test_a_conversation_goes_on_past_a_line_it_cannot_read_and_ends_at_a_blank_one(
        app, samples_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A line that is not UTF-8 is said and the next one read (it ended the session with exit 1);
    a blank line ends it as an empty one does (it was an error); Ctrl-C in a one-shot answer is 130."""
    monkeypatch.setenv("LOCAL_MODELS_DIR", str(samples_dir))
    lines: Iterator[object] = iter([UnicodeDecodeError("utf-8", b"\xe9", 0, 1, "invalid"), "   "])

    def typed(prompt: str = "") -> str:
        line = next(lines)
        if isinstance(line, BaseException):
            raise line
        return str(line)

    monkeypatch.setattr("builtins.input", typed)
    assert app.main(["--docs", str(DOCS)]) == 0
    assert "not UTF-8 text" in capsys.readouterr().err
    monkeypatch.setattr(app, "chat_with_ai", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert app.main(["--docs", str(DOCS), "Q?"]) == 130


def test_chat_with_ai_names_a_question_or_a_dimension_it_cannot_use(app, models: tuple) -> None:
    embeddings, chat = models
    for question in (None, "  "):
        with pytest.raises(ValueError, match="ask a question"):
            app.chat_with_ai(None, question, embeddings.dimension, chat, embeddings=embeddings)
    with pytest.raises(ValueError, match=f"gives {embeddings.dimension}-dimension vectors and the store holds "
                                         "128-dimension ones"):
        app.chat_with_ai(None, "What is a lighthouse?", 128, chat, embeddings=embeddings)


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.skipif(PG_URL is None, reason="ORTMODELS_TEST_PGVECTOR_URL is not set: no PostgreSQL with pgvector to "
                                            "test against (examples/rag/README.md starts one)")
def test_chat_with_ai_on_postgresql_with_pgvector(app, models: tuple) -> None:
    import psycopg

    embeddings, _ = models
    table = f"rag_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_URL) as conn:  # the seed's conn: a psycopg connection
        try:
            store = app.PgVectorStore(embeddings.dimension, conn, table)
            assert app.ingest(store, embeddings, DOCS) == len(app.read_folder(DOCS))
            assert app.ingest(store, embeddings, DOCS) == 0
            _conversation(app, store, models, embeddings.dimension)
            with pytest.raises(ValueError, match=f"holds {embeddings.dimension}-dimension vectors, not 8"):
                app.PgVectorStore(8, conn, table)
        finally:
            conn.rollback()
            conn.execute(f"DROP TABLE IF EXISTS {table}")
            conn.commit()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_retrieve_keeps_the_passages_a_cross_encoder_ranks_best(app, models: tuple, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The reranking step on a real exported cross-encoder (a tiny random one: its order is
    checked against its own scores, not against relevance)."""
    pytest.importorskip("sentence_transformers")
    from ortmodels.export import export_model
    from ortmodels.store import ModelStore
    from tests.conftest import manager_on
    from tests.tiny_cross_encoders import build_tiny_cross_encoder

    embeddings, _ = models
    root = tmp_path / "models"
    build_tiny_cross_encoder(root / "tiny-ce", "bert", "sigmoid")
    export_model(ModelStore(root), "tiny-ce", ["fp32"])
    manager = manager_on(monkeypatch, root, DEFAULT_RERANK_MODEL="tiny-ce", MODEL_DEVICE="cpu")
    reranker = app.open_reranker(manager, None, keep=3)
    assert reranker is not None and reranker.top_n == 3
    store = app.open_store(None, embeddings.dimension)
    app.ingest(store, embeddings, DOCS)
    query = "When was the lighthouse of Varnholm built?"
    sources = app.retrieve(store, embeddings, query, reranker)
    candidates = [p.text for p, _ in store.search(embeddings.embed_query(query), 20)]
    scores = manager.get_reranker("tiny-ce").score([(query, text) for text in candidates])
    best = sorted(range(len(candidates)), key=lambda i: -scores[i])[:3]
    assert [s.text for s in sources] == [candidates[i] for i in best]
    assert [s.score for s in sources] == pytest.approx([scores[i] for i in best], abs=1e-6)
    assert app.open_reranker(manager_on(monkeypatch, root, DEFAULT_RERANK_MODEL="absent"), None, 3) is None

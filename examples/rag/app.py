"""Answer questions from a folder of documents: the seed's ``chat_with_ai`` made real.

``chat_with_ai(conn, user_input, dimension, chat_model)`` retrieves the passages nearest the
question from a vector database, keeps the best few (a cross-encoder reranker when one is
given), and asks a local chat model to answer from them, citing each passage as ``[n]``.
ortmodels gives it the embeddings (documents embedded with the model's document prompt, the
question with its query prompt) and the chat model; the database is either:

- Qdrant's local mode (the default): ``qdrant-client`` runs the store in-process, in pure
  Python, in memory or in a folder, with the same API as a Qdrant server - no service to run;
- PostgreSQL with pgvector, given a connection URL (or the seed's own psycopg connection).

Run it (``pip install 'ortmodels[rag]'`` and ``ortmodels samples`` first)::

    python examples/rag/app.py --docs examples/rag/docs "When was the lighthouse built?"
    python examples/rag/app.py --docs examples/rag/docs            # a conversation
    python examples/rag/app.py --docs examples/rag/docs --db postgresql://user:pw@localhost/rag

A multi-turn conversation keeps every earlier turn word for word at the start of the prompt,
with each turn's passages inside its own question, so the chat model's prompt cache reuses
the earlier turns' tokens instead of computing them again.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import re
import sys
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from langchain_core.documents import Document
from langchain_core.documents.compressor import BaseDocumentCompressor
from langchain_core.embeddings import Embeddings
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from ortmodels.errors import MissingDependencyError, OrtModelsError

logger = logging.getLogger(__name__)

INSTALL = "pip install 'ortmodels[rag]'"
DOCUMENT_SUFFIXES = (".md", ".txt", ".rst")
COLLECTION = "rag_passages"
SYSTEM_PROMPT = (
    "You answer questions using only the numbered passages given with each question. "
    "After each fact, cite the passage it comes from as [1], [2], ... "
    "If the passages do not contain the answer, say that you do not know."
)


# -- documents -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Passage:
    """One piece of a document: what is embedded, stored and cited."""

    source: str
    """The document's file name, relative to the ingested folder."""
    chunk: int
    text: str

    @property
    def id(self) -> str:
        """A stable id (same file, piece and text: same id), so ingesting twice stores nothing twice."""
        digest = hashlib.sha256(f"{self.source}\0{self.chunk}\0{self.text}".encode()).hexdigest()
        return str(uuid.UUID(digest[:32]))


def _cut(paragraph: str, max_chars: int) -> int:
    """Where to cut a paragraph longer than ``max_chars``: after a sentence that ends in the
    second half, else at the last space, else at ``max_chars``."""
    end = paragraph.rfind(". ", max_chars // 2, max_chars)
    if end > 0:
        return end + 1
    space = paragraph.rfind(" ", 0, max_chars)
    return space if space > 0 else max_chars


def split(text: str, max_chars: int = 500, overlap: int = 80) -> list[str]:
    """Pieces of at most ``max_chars``: whole paragraphs joined while they fit; a longer paragraph
    cut at sentences or words, each piece after a cut starting up to ``overlap`` characters back."""
    if max_chars <= 2 * overlap:
        raise ValueError(f"max_chars ({max_chars}) must be more than twice overlap ({overlap}).")
    pieces: list[str] = []
    current = ""
    for paragraph in (" ".join(p.split()) for p in re.split(r"\n\s*\n", text)):
        if not paragraph:
            continue
        if len(current) + len(paragraph) + 2 <= max_chars:
            current = f"{current}\n\n{paragraph}" if current else paragraph
            continue
        if current:
            pieces.append(current)
        while len(paragraph) > max_chars:
            cut = _cut(paragraph, max_chars)
            pieces.append(paragraph[:cut].strip())
            back = paragraph.find(" ", cut - overlap, cut)  # the next piece starts at a word
            paragraph = paragraph[max(back + 1 if back >= 0 else cut, 1):].strip()
        current = paragraph
    if current:
        pieces.append(current)
    return pieces


def read_folder(folder: Path, max_chars: int = 500) -> list[Passage]:
    """Every document under ``folder`` (``.md``, ``.txt``, ``.rst``), split into passages."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder of documents.")
    passages = []
    for path in sorted(p for p in folder.rglob("*") if p.suffix in DOCUMENT_SUFFIXES and p.is_file()):
        text = path.read_text(encoding="utf-8", errors="replace")
        source = path.relative_to(folder).as_posix()
        passages += [Passage(source, i, piece) for i, piece in enumerate(split(text, max_chars))]
    if not passages:
        raise FileNotFoundError(f"{folder} holds no documents ({', '.join(sorted(DOCUMENT_SUFFIXES))} files "
                                "with text): put the documents to answer from there.")
    return passages


# -- stores --------------------------------------------------------------------------------------

class VectorStore(Protocol):
    """What the app needs of a vector database."""

    dimension: int

    def add(self, passages: Sequence[Passage], vectors: Sequence[Sequence[float]]) -> None: ...

    def search(self, vector: Sequence[float], limit: int) -> list[tuple[Passage, float]]: ...

    def ids(self) -> set[str]: ...


class QdrantStore:
    """Qdrant's local mode: in memory (``path=None``) or kept in a folder; cosine distance."""

    def __init__(self, dimension: int, path: str | Path | None = None, client: Any = None,
                 collection: str = COLLECTION) -> None:
        try:
            from qdrant_client import QdrantClient, models
        except ImportError as exc:
            raise MissingDependencyError(f"The RAG example's default store needs qdrant-client: {INSTALL}") from exc
        self._models = models
        self.client = client if client is not None else QdrantClient(path=str(path)) if path else QdrantClient(
            ":memory:")
        self.dimension, self.collection = dimension, collection
        if not self.client.collection_exists(collection):
            self.client.create_collection(
                collection, vectors_config=models.VectorParams(size=dimension, distance=models.Distance.COSINE))
        size = self.client.get_collection(collection).config.params.vectors.size
        if size != dimension:
            raise ValueError(f"The collection {collection!r} holds {size}-dimension vectors, not {dimension}; "
                             "use another collection or path for another embedding model or dimension.")

    def add(self, passages: Sequence[Passage], vectors: Sequence[Sequence[float]]) -> None:
        points = [self._models.PointStruct(id=p.id, vector=list(v),
                                           payload={"source": p.source, "chunk": p.chunk, "text": p.text})
                  for p, v in zip(passages, vectors, strict=True)]
        if points:
            self.client.upsert(self.collection, points=points)

    def search(self, vector: Sequence[float], limit: int) -> list[tuple[Passage, float]]:
        found = self.client.query_points(self.collection, query=list(vector), limit=limit, with_payload=True).points
        return [(Passage(h.payload["source"], h.payload["chunk"], h.payload["text"]), float(h.score)) for h in found]

    def ids(self) -> set[str]:
        seen, offset = set(), None
        while True:
            records, offset = self.client.scroll(self.collection, limit=256, offset=offset, with_payload=False)
            seen |= {str(r.id) for r in records}
            if offset is None:
                return seen


class PgVectorStore:
    """PostgreSQL with the pgvector extension: one table, an HNSW cosine index."""

    def __init__(self, dimension: int, conn: Any, table: str = COLLECTION) -> None:
        try:
            from pgvector.psycopg import register_vector
        except ImportError as exc:
            raise MissingDependencyError(f"The RAG example's PostgreSQL store needs psycopg and pgvector: {INSTALL}") \
                from exc
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", table):
            raise ValueError(f"table must be a plain lower-case SQL name, got {table!r}.")
        from psycopg.errors import FeatureNotSupported

        self.conn, self.dimension, self.table = conn, dimension, table
        try:
            with conn.cursor() as cur:
                cur.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except FeatureNotSupported as exc:
            conn.rollback()
            raise RuntimeError(
                f"This PostgreSQL server has no pgvector ({str(exc).splitlines()[0]}): install it where the server "
                "runs (Debian: apt-get install postgresql-15-pgvector) or start the pgvector/pgvector Docker "
                "image, as examples/rag/README.md shows.") from None
        register_vector(conn)
        with conn.cursor() as cur:
            cur.execute(f"CREATE TABLE IF NOT EXISTS {table} (id uuid PRIMARY KEY, source text NOT NULL, "
                        f"chunk integer NOT NULL, text text NOT NULL, embedding vector({dimension}) NOT NULL)")
            cur.execute(f"CREATE INDEX IF NOT EXISTS {table}_embedding ON {table} "
                        "USING hnsw (embedding vector_cosine_ops)")
            cur.execute("SELECT atttypmod FROM pg_attribute WHERE attrelid = %s::regclass AND attname = 'embedding'",
                        (table,))
            size = cur.fetchone()[0]
        conn.commit()
        if size != dimension:
            raise ValueError(f"The table {table!r} holds {size}-dimension vectors, not {dimension}; "
                             "use another table for another embedding model or dimension.")

    @classmethod
    def connect(cls, url: str, dimension: int, table: str = COLLECTION) -> PgVectorStore:
        try:
            import psycopg
        except ImportError as exc:
            raise MissingDependencyError(f"The RAG example's PostgreSQL store needs psycopg: {INSTALL}") from exc
        return cls(dimension, psycopg.connect(url), table)

    def add(self, passages: Sequence[Passage], vectors: Sequence[Sequence[float]]) -> None:
        import numpy as np

        rows = [(uuid.UUID(p.id), p.source, p.chunk, p.text, np.asarray(v, dtype=np.float32))
                for p, v in zip(passages, vectors, strict=True)]
        with self.conn.cursor() as cur:
            cur.executemany(f"INSERT INTO {self.table} (id, source, chunk, text, embedding) "
                            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING", rows)
        self.conn.commit()

    def search(self, vector: Sequence[float], limit: int) -> list[tuple[Passage, float]]:
        import numpy as np

        query = np.asarray(vector, dtype=np.float32)
        with self.conn.cursor() as cur:
            cur.execute(f"SELECT source, chunk, text, 1 - (embedding <=> %s) FROM {self.table} "
                        "ORDER BY embedding <=> %s LIMIT %s", (query, query, limit))
            return [(Passage(source, chunk, text), float(score)) for source, chunk, text, score in cur.fetchall()]

    def ids(self) -> set[str]:
        with self.conn.cursor() as cur:
            cur.execute(f"SELECT id::text FROM {self.table}")
            return {row[0] for row in cur.fetchall()}


def open_store(conn: Any, dimension: int) -> VectorStore:
    """The store for ``conn``: ``None`` (Qdrant in memory), a folder path (Qdrant kept there), a
    ``postgresql://`` URL, a psycopg connection (the seed's ``conn``), a ``QdrantClient``, or a
    store already open."""
    if conn is None:
        return QdrantStore(dimension)
    if isinstance(conn, (QdrantStore, PgVectorStore)):
        if conn.dimension != dimension:
            raise ValueError(f"The store holds {conn.dimension}-dimension vectors; chat_with_ai was given {dimension}.")
        return conn
    if isinstance(conn, str) and conn.startswith(("postgresql://", "postgres://")):
        return PgVectorStore.connect(conn, dimension)
    if isinstance(conn, (str, Path)):
        if Path(conn).exists() and not Path(conn).is_dir():
            raise ValueError(f"{conn} is a file: the store is a folder for Qdrant's local store (made if new) "
                             "or a postgresql:// URL.")
        return QdrantStore(dimension, path=conn)
    module = type(conn).__module__
    if module.startswith("psycopg"):
        return PgVectorStore(dimension, conn)
    if module.startswith("qdrant_client"):
        return QdrantStore(dimension, client=conn)
    raise TypeError(f"conn must be None, a folder, a postgresql:// URL, a psycopg connection or a QdrantClient; "
                    f"got {type(conn).__name__}.")


# -- the app -------------------------------------------------------------------------------------

def ingest(store: VectorStore, embeddings: Embeddings, folder: Path, max_chars: int = 500,
           batch: int = 64) -> int:
    """Split, embed (with the document prompt: ``embed_documents``) and store every passage under
    ``folder`` not stored yet; returns how many were added."""
    known = store.ids()
    passages = [p for p in read_folder(folder, max_chars) if p.id not in known]
    for start in range(0, len(passages), batch):
        piece = passages[start:start + batch]
        store.add(piece, embeddings.embed_documents([p.text for p in piece]))
    logger.info("Ingested %d new passages from %s", len(passages), folder)
    return len(passages)


@dataclass(frozen=True)
class Source:
    """A passage the answer was given, as it is numbered in the prompt."""

    number: int
    source: str
    chunk: int
    text: str
    score: float
    """The reranker's relevance score when one ranked the passages, else the cosine similarity."""


@dataclass
class Answer:
    text: str
    sources: list[Source]
    """The passages the model was given, numbered as it was told to cite them."""
    cited: list[int]
    """The numbers the answer cites (``[n]``) that are passages it was given."""
    usage: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        shown = [s for s in self.sources if s.number in self.cited] or self.sources
        listed = "\n".join(f"[{s.number}] {s.source} (part {s.chunk + 1})" for s in shown)
        return f"{self.text}\n\nSources:\n{listed}"


@dataclass
class Conversation:
    """The turns so far, kept word for word so each new prompt starts with the previous one."""

    messages: list[BaseMessage] = field(default_factory=lambda: [SystemMessage(SYSTEM_PROMPT)])
    max_turns: int = 4
    """Older turns are dropped beyond this (which costs the prompt cache one recomputation)."""

    def last_question(self) -> str | None:
        return next((str(m.additional_kwargs.get("question", "")) for m in reversed(self.messages)
                     if isinstance(m, HumanMessage)), None)

    def add(self, question: HumanMessage, answer: AIMessage) -> None:
        self.messages += [question, answer]
        turns = (len(self.messages) - 1) // 2
        if turns > self.max_turns:
            self.messages = [self.messages[0], *self.messages[1 + 2 * (turns - self.max_turns):]]


def retrieve(store: VectorStore, embeddings: Embeddings, query: str, reranker: BaseDocumentCompressor | None,
             candidates: int = 20, keep: int = 4) -> list[Source]:
    """The ``candidates`` nearest passages (the query embedded with the query prompt:
    ``embed_query``), reranked by ``reranker`` (its ``top_n`` decides how many stay) or cut to ``keep``."""
    vector = embeddings.embed_query(query)
    if len(vector) != store.dimension:
        raise ValueError(f"The embedding model gives {len(vector)}-dimension vectors and the store holds "
                         f"{store.dimension}-dimension ones: give chat_with_ai the embeddings' dimension, or "
                         "embeddings that give the store's.")
    found = store.search(vector, candidates)
    documents = [Document(p.text, metadata={"source": p.source, "chunk": p.chunk, "score": score})
                 for p, score in found]
    if reranker is not None and documents:
        documents = list(reranker.compress_documents(documents, query))
    else:
        documents = documents[:keep]
    return [Source(i, d.metadata["source"], d.metadata["chunk"], d.page_content,
                   float(d.metadata.get("relevance_score", d.metadata["score"])))
            for i, d in enumerate(documents, start=1)]


def _question(user_input: str, sources: list[Source]) -> HumanMessage:
    passages = "\n\n".join(f"[{s.number}] ({s.source}) {s.text}" for s in sources)
    return HumanMessage(f"Passages:\n{passages}\n\nQuestion: {user_input}", additional_kwargs={"question": user_input})


def chat_with_ai(conn: Any, user_input: str, dimension: int, chat_model: BaseChatModel, *,
                 embeddings: Embeddings | None = None, reranker: BaseDocumentCompressor | None = None,
                 conversation: Conversation | None = None, candidates: int = 20, keep: int = 4,
                 max_tokens: int = 200) -> Answer:
    """Answer ``user_input`` from the documents in ``conn`` (see `open_store`), whose vectors have
    ``dimension`` numbers (``embeddings``, by default the store's ``DEFAULT_EMBEDDING_MODEL``,
    must give that many), with ``chat_model``: the seed's four arguments are enough.

    A follow-up question is searched together with the one before it, so "and when was it
    automated?" still finds the lighthouse. Give the same ``conversation`` to each turn.
    """
    if not isinstance(user_input, str) or not user_input.strip():
        raise ValueError(f"user_input is {'empty' if isinstance(user_input, str) else type(user_input).__name__}; "
                         "ask a question (a non-empty string).")
    if embeddings is None:
        from ortmodels import ModelManager

        embeddings = ModelManager().get_embedding_model()
    store = open_store(conn, dimension)
    conversation = conversation if conversation is not None else Conversation()
    previous = conversation.last_question()
    sources = retrieve(store, embeddings, f"{previous} {user_input}" if previous else user_input, reranker,
                       candidates, keep)
    question = _question(user_input, sources)
    reply = chat_model.invoke([*conversation.messages, question], max_tokens=max_tokens, temperature=0)
    text = str(reply.content).strip()
    numbers = {s.number for s in sources}
    cited = sorted({int(n) for n in re.findall(r"\[(\d{1,3})\]", text)} & numbers)
    conversation.add(question, AIMessage(text))
    usage = dict(getattr(reply, "usage_metadata", None) or {})
    return Answer(text, sources, cited, usage)


# -- command line --------------------------------------------------------------------------------

def open_reranker(manager: Any, name: str | None, keep: int) -> BaseDocumentCompressor | None:
    """``name``'s cross-encoder as a compressor keeping ``keep`` passages; with no name, the
    store's default reranker if one is exported (a missing named one is an error, not a silence)."""
    from ortmodels import OnnxReranker

    if name is None:
        name = manager.settings.default_rerank_model
        if name not in {m.name for m in manager.list_available_models() if m.kind == "reranker" and m.usable_variants}:
            logger.info("No reranker exported (DEFAULT_RERANK_MODEL=%s): passages ranked by similarity.", name)
            return None
    return OnnxReranker(model=manager.get_reranker(name), top_n=keep)


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("question", nargs="?", help="ask one question and exit (else: a conversation)")
    parser.add_argument("--docs", type=Path, required=True, help="the folder of documents to ingest")
    parser.add_argument("--db", help="a postgresql:// URL, or a folder for Qdrant's local store "
                                     "(default: Qdrant in memory)")
    parser.add_argument("--embedding-model", default=None, help="default: DEFAULT_EMBEDDING_MODEL")
    parser.add_argument("--chat-model", default=None, help="default: DEFAULT_CHAT_MODEL")
    parser.add_argument("--dimensions", type=int, default=None,
                        help="fewer dimensions than the embedding model's (a Matryoshka-trained model)")
    parser.add_argument("--matryoshka", action="store_true",
                        help="allow --dimensions on a model whose card declares no Matryoshka training")
    parser.add_argument("--rerank-model", default=None,
                        help="a cross-encoder exported in the store (default: DEFAULT_RERANK_MODEL when it is "
                             "exported, else no reranking)")
    parser.add_argument("--keep", type=_at_least_one, default=4, help="passages kept for the answer")
    args = parser.parse_args(list(argv) if argv is not None else None)
    logging.basicConfig(level=logging.WARNING)
    try:
        return _run(args)
    except KeyboardInterrupt:  # a question not answered: not a success (as a shell's 128 + SIGINT)
        print("Aborted.", file=sys.stderr)
        return 130
    except _failures() as exc:  # one line, as the ortmodels command says its errors
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)
        return 1


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} passages: keep at least 1")
    return value


def _failures() -> tuple[type[BaseException], ...]:
    """What the app says in one line: ortmodels' errors, a missing folder, a value it cannot
    use, and the database's own errors (a server that is not there)."""
    kinds: list[type[BaseException]] = [OrtModelsError, OSError, ValueError]
    if "qdrant_client" in sys.modules:  # a local store another process has open is its RuntimeError
        kinds.append(RuntimeError)
    try:
        import psycopg

        kinds.append(psycopg.Error)
    except ImportError:
        pass
    return tuple(kinds)


def _run(args: argparse.Namespace) -> int:
    from ortmodels import ModelManager
    from ortmodels.runtime.embeddings import OnnxEmbeddingModel

    manager = ModelManager()
    embeddings = (manager.get_embedding_model(args.embedding_model) if args.dimensions is None
                  else OnnxEmbeddingModel(args.embedding_model, dimensions=args.dimensions,
                                          matryoshka=args.matryoshka))
    chat_model = manager.get_chat_model(args.chat_model)
    reranker = open_reranker(manager, args.rerank_model, args.keep)
    dimension = len(embeddings.embed_query("dimension"))
    store = open_store(args.db, dimension)
    ingest(store, embeddings, args.docs)
    conversation = Conversation()
    if args.question:
        print(chat_with_ai(store, args.question, dimension, chat_model, embeddings=embeddings,
                           reranker=reranker, conversation=conversation, keep=args.keep))
        return 0
    while True:  # a conversation: an empty (or blank) line or the end of input ends it
        try:
            question = input("\n> ").strip()
        except (EOFError, KeyboardInterrupt):
            return 0
        except UnicodeDecodeError:  # a line that is not text: said, and the next is read
            print("error: that line is not UTF-8 text; type the question again.", file=sys.stderr)
            continue
        if not question:
            return 0
        try:
            print(chat_with_ai(store, question, dimension, chat_model, embeddings=embeddings,
                               reranker=reranker, conversation=conversation, keep=args.keep))
        except (OrtModelsError, ValueError) as exc:  # this question's problem: said, and the next is asked
            print("error: " + " ".join(str(exc).split()), file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())

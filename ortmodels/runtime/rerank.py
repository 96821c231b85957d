"""Rerankers: `OnnxCrossEncoder` scores (query, document) pairs; `OnnxReranker` is LangChain's compressor.

`OnnxCrossEncoder` is the LangChain face of a `RerankRuntime` (``rerank_runtime.py``), which
runs an exported cross-encoder through the engine's `CrossEncoderRunner` (pairs tokenized
together, length-sorted batches, the manifest's activation) and the encoders'
`CoalescingBatcher` (concurrent callers share batches); the server and Ray's replicas use
the runtime alone, without LangChain. `OnnxReranker` is a
LangChain `BaseDocumentCompressor`, as LangChain's ``CrossEncoderReranker`` is: it keeps
the ``top_n`` documents, best first, each with its score in ``metadata["relevance_score"]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from langchain_core.documents import BaseDocumentCompressor, Document
from pydantic import ConfigDict, Field

from ..base import BaseRerankModel
from ..config import Settings
from ..engine.cross_encoder import CrossEncoderRunner
from .encoder_face import EncoderFace
from .rerank_runtime import RerankRuntime

if TYPE_CHECKING:
    from langchain_core.callbacks import Callbacks



class OnnxCrossEncoder(EncoderFace, BaseRerankModel):
    """Relevance scores from a cross-encoder exported by ``ortmodels export``, on ONNX Runtime.

    Setup:
        put a one-label ``*ForSequenceClassification`` checkpoint (ms-marco MiniLM, bge-reranker)
        in ``models/<name>/`` and run ``ortmodels export <name>``.

    Instantiate:
        ``ModelManager().get_reranker("<name>")`` (``DEFAULT_RERANK_MODEL`` without a name), or
        ``OnnxCrossEncoder(model_path="models/<name>")``.

    Score:
        ``model.score([(query, doc), ...])``, ``model.rerank(query, docs, top_n=3)``, or as a
        LangChain compressor: ``OnnxReranker(model=model, top_n=3).compress_documents(docs, query)``.
    """

    def __init__(
        self,
        model_name: str | None = None,
        *,
        model_path: str | Path | None = None,
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int | None = None,
        settings: Settings | None = None,
        runtime: RerankRuntime | None = None,
    ) -> None:
        super().__init__(RerankRuntime, runtime, batch_size, model_name, model_path=model_path, device=device,
                         dtype=dtype, settings=settings)

    @classmethod
    def over(cls, runtime: RerankRuntime) -> OnnxCrossEncoder:
        """The LangChain face of a runtime the manager caches: one life cycle, one runner."""
        return cls(runtime=runtime)

    @property
    def runtime(self) -> RerankRuntime:
        """The LangChain-free model under this adapter (what the server uses)."""
        return self._runtime

    @property
    def runner(self) -> CrossEncoderRunner:
        """The loaded session, tokenizer and activation; raises if the model is not loaded."""
        return self._runtime.runner

    def _score(self, pairs: list[tuple[str, str]]) -> list[float]:
        """Concurrent callers share length-sorted batches (`CoalescingBatcher`); each gets its own rows."""
        return [float(np.float32(s)) for s in self._runtime.score_rows(pairs)[:, 0]]

    def rerank_counted(self, query: str, documents: list[str],
                       top_n: int | None = None) -> tuple[list[tuple[int, float]], int]:
        """`rerank`, and the tokens the model read (every pair's, as the server's ``usage`` counts them)."""
        return self._runtime.rerank_counted(query, documents, top_n)


class OnnxReranker(BaseDocumentCompressor):
    """A LangChain document compressor that keeps the ``top_n`` documents a cross-encoder ranks best.

    As LangChain's ``CrossEncoderReranker`` (``model``, ``top_n``); each kept document is a copy
    with its score in ``metadata["relevance_score"]``. Use it in a
    ``ContextualCompressionRetriever`` or call `compress_documents` directly.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    model: BaseRerankModel
    """The cross-encoder that scores each (query, document) pair."""
    top_n: int = Field(default=3, ge=1)
    """How many documents to keep."""

    def compress_documents(self, documents: Sequence[Document], query: str,
                           callbacks: Callbacks | None = None) -> Sequence[Document]:
        """The ``top_n`` best of ``documents`` for ``query``, best first."""
        documents = list(documents)
        if not documents:
            return []
        ranked = self.model.rerank(query, [d.page_content for d in documents], self.top_n)
        return [Document(page_content=documents[i].page_content, id=documents[i].id,
                         metadata={**documents[i].metadata, "relevance_score": score})
                for i, score in ranked]

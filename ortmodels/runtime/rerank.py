"""Rerankers: `OnnxCrossEncoder` scores (query, document) pairs; `OnnxReranker` is LangChain's compressor.

`OnnxCrossEncoder` runs an exported cross-encoder through the engine's `CrossEncoderRunner`
(pairs tokenized together, length-sorted batches, the manifest's activation) and the
encoders' `CoalescingBatcher` (concurrent callers share batches). `OnnxReranker` is a
LangChain `BaseDocumentCompressor`, as LangChain's ``CrossEncoderReranker`` is: it keeps
the ``top_n`` documents, best first, each with its score in ``metadata["relevance_score"]``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from langchain_core.documents import BaseDocumentCompressor, Document
from pydantic import ConfigDict, Field

from ..base import BaseRerankModel, ranked, rerank_pairs
from ..config import Settings, load_settings
from ..engine.cross_encoder import CrossEncoderRunner
from ..engine.encoder_batching import CoalescingBatcher
from ..engine.tokenizer import load_tokenizer
from ..errors import ModelNotLoadedError
from ..store.names import validate_model_name
from .variant import open_variant

if TYPE_CHECKING:
    from langchain_core.callbacks import Callbacks

logger = logging.getLogger(__name__)


class OnnxCrossEncoder(BaseRerankModel):
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

    batch_size: int = 32

    def __init__(
        self,
        model_name: str | None = None,
        *,
        model_path: str | Path | None = None,
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int | None = None,
        settings: Settings | None = None,
    ) -> None:
        if model_path is None:  # found by name in LOCAL_MODELS_DIR
            settings = settings or load_settings()
            model_name = validate_model_name(model_name or settings.default_rerank_model)
            model_path = settings.local_models_dir / model_name
        elif model_name is None:
            model_name = Path(model_path).name
        super().__init__(model_name, model_path=model_path, device=device, dtype=dtype)
        if batch_size is not None:
            if batch_size < 1:
                raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
            self.batch_size = batch_size
        self._settings = settings
        self._runner: CrossEncoderRunner | None = None
        self._batcher: CoalescingBatcher | None = None
        self.variant: str | None = None
        """The precision loaded (``fp32``, ``int8``), once loaded."""
        self.resolved_device: str | None = None

    def _load(self) -> None:
        settings = self._settings or load_settings()
        opened = open_variant(Path(self._model_path), "reranker", self.device, self.dtype, settings)  # type: ignore[arg-type]
        spec = opened.info.manifest.reranker  # type: ignore[union-attr]  # checked by open_variant
        runner = CrossEncoderRunner(opened.session, load_tokenizer(opened.folder / "tokenizer.json",
                                                                   spec.max_seq_length), spec)
        runner.check(opened.folder)
        self._runner = runner

        def run(pairs: list[Any]) -> np.ndarray:
            # One row per pair, (score, tokens): the batcher hands each caller its own rows.
            scores, tokens = runner.score_counted(pairs, self.batch_size)
            return np.stack([scores.astype(np.float64), tokens.astype(np.float64)], axis=1)

        self._batcher = CoalescingBatcher(cast(Any, run))
        self.variant, self.resolved_device = opened.variant, opened.device
        logger.info("Loaded reranker %s (%s on %s)", opened.info.name, opened.variant, opened.device)

    def _unload(self) -> None:
        self._runner = None
        self._batcher = None

    @property
    def runner(self) -> CrossEncoderRunner:
        """The loaded session, tokenizer and activation; raises if the model is not loaded."""
        runner = self._runner
        if runner is None:
            raise ModelNotLoadedError(f"{self!r} is not loaded; call load() first.")
        return runner

    def _score_rows(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        batcher = self._batcher
        if batcher is None:
            raise ModelNotLoadedError(f"{self!r} is not loaded; call load() first.")
        return batcher(cast(Any, pairs))

    def _score(self, pairs: list[tuple[str, str]]) -> list[float]:
        """Concurrent callers share length-sorted batches (`CoalescingBatcher`); each gets its own rows."""
        return [float(np.float32(s)) for s in self._score_rows(pairs)[:, 0]]

    def rerank_counted(self, query: str, documents: list[str],
                       top_n: int | None = None) -> tuple[list[tuple[int, float]], int]:
        """`rerank`, and the tokens the model read (every pair's, as the server's ``usage`` counts them)."""
        pairs = rerank_pairs(query, documents, top_n)
        if not pairs:
            return [], 0
        with self._use("rerank") as record:
            rows = self._score_rows(pairs)
            if record is not None:
                record.items = len(pairs)
        return ranked([float(np.float32(s)) for s in rows[:, 0]], top_n), int(rows[:, 1].sum())


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

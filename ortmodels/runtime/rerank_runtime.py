"""`RerankRuntime`: one cross-encoder of the store, LangChain-free: its life cycle and, while
loaded, its `CrossEncoderRunner` and the batcher concurrent callers share.

What the manager caches for ortmodels' own reranker class and what the server and Ray's
replicas call (`arerank_counted`), so neither imports LangChain. `OnnxCrossEncoder`
(``rerank.py``) is the LangChain face of one, sharing its life cycle.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, cast

import numpy as np

from ..config import Settings, load_settings
from ..engine.cross_encoder import CrossEncoderRunner
from ..engine.encoder_batching import CoalescingBatcher
from ..engine.tokenizer import load_tokenizer
from ..errors import ModelNotLoadedError
from ..inputs import ranked, rerank_pairs
from ..lifecycle import LifeCycle, Managed
from .variant import ChoosesVariant, open_variant

logger = logging.getLogger(__name__)


class RerankRuntime(ChoosesVariant, Managed):
    """A cross-encoder's life cycle, runner and batcher, without LangChain; thread-safe."""

    kind = "reranker"
    default_setting = "default_rerank_model"

    def __init__(self, model_name: str | None = None, *, model_path: str | Path | None = None,
                 device: str | None = None, dtype: str | None = None, version: str | None = None,
                 batch_size: int = 32, settings: Settings | None = None, owner: Any = None) -> None:
        self._place(model_name, model_path, device, dtype, version, settings)
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
        self.batch_size = batch_size
        self.front: Any = None
        """The LangChain face (`OnnxCrossEncoder`) whose fields this runtime loads with, if any."""
        self._runner: CrossEncoderRunner | None = None
        self._batcher: CoalescingBatcher[np.ndarray] | None = None
        self._life = LifeCycle(owner or self)

    # -- life cycle -------------------------------------------------------------------------

    def _load(self) -> None:
        if self.front is not None:
            self._follow_front()
        settings = self.settings or load_settings()
        opened = open_variant(self.model_path, "reranker", self.device, self.dtype, settings)
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
        logger.info("Loaded reranker %s (%s on %s)", opened.info.name, opened.variant, opened.device)

    def _unload(self) -> None:
        self._runner = None
        self._batcher = None

    @property
    def runner(self) -> CrossEncoderRunner:
        """The loaded session, tokenizer and activation; raises if the model is not loaded."""
        runner = self._runner
        if runner is None:
            raise ModelNotLoadedError(f"{self.model_name} is not loaded; call load() first.")
        return runner

    # -- inference --------------------------------------------------------------------------

    def score_rows(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        """``(score, tokens)`` per checked pair (no call guard: the caller's). Concurrent callers
        share length-sorted batches (`CoalescingBatcher`); each gets its own rows."""
        batcher = self._batcher
        if batcher is None:
            raise ModelNotLoadedError(f"{self.model_name} is not loaded; call load() first.")
        return batcher(cast(Any, pairs))

    def rerank_counted(self, query: str, documents: list[str],
                       top_n: int | None = None) -> tuple[list[tuple[int, float]], int]:
        """``(index, score)`` of the ``top_n`` best documents, best first, and the tokens the model
        read (every pair's, as the server's ``usage`` counts them), under the call guard."""
        pairs = rerank_pairs(query, documents, top_n)
        if not pairs:
            return [], 0
        with self._use("rerank") as record:
            rows = self.score_rows(pairs)
            if record is not None:
                record.items = len(pairs)
        return ranked([float(np.float32(s)) for s in rows[:, 0]], top_n), int(rows[:, 1].sum())

    async def arerank_counted(self, query: str, documents: list[str],
                              top_n: int | None = None) -> tuple[list[tuple[int, float]], int]:
        """`rerank_counted` off the event loop."""
        return await asyncio.to_thread(self.rerank_counted, query, documents, top_n)

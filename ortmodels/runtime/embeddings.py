"""`OnnxEmbeddingModel`: sentence embeddings from an exported encoder on ONNX Runtime.

A LangChain `Embeddings` over the engine's `EncoderRunner` (length-sorted batches,
pooling and normalisation as the export manifest says) and `CoalescingBatcher`
(concurrent callers share batches).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from ..base import BaseEmbeddingModel
from ..config import Settings, load_settings
from ..engine.encoder import Encoded, EncoderRunner
from ..engine.encoder_batching import CoalescingBatcher
from ..engine.tokenizer import load_tokenizer
from ..errors import ModelNotLoadedError
from ..store.names import validate_model_name
from .variant import open_variant

if TYPE_CHECKING:
    import onnxruntime as ort


logger = logging.getLogger(__name__)


class OnnxEmbeddingModel(BaseEmbeddingModel):
    """Text embeddings computed by ONNX Runtime from a model exported by ``ortmodels export``.

    Setup:
        ``ortmodels samples && ortmodels export all-minilm-l6-v2 --dtype fp32``

    Instantiate:
        ``OnnxEmbeddingModel("all-minilm-l6-v2")`` (found in ``LOCAL_MODELS_DIR``), or
        ``OnnxEmbeddingModel(model_path="models/all-minilm-l6-v2")``; usually through
        ``ModelManager().get_embedding_model()``.

    Embed:
        ``emb.embed_documents(["a", "b"])``, ``emb.embed_query("c")`` and their ``a``-twins.
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
            model_name = validate_model_name(model_name or settings.default_embedding_model)
            model_path = settings.local_models_dir / model_name
        elif model_name is None:
            model_name = Path(model_path).name
        super().__init__(model_name, model_path=model_path, device=device, dtype=dtype)
        if batch_size is not None:
            if batch_size < 1:
                raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
            self.batch_size = batch_size
        self._settings = settings
        self._runner: EncoderRunner | None = None
        self._batcher: CoalescingBatcher[Encoded] | None = None
        self.variant: str | None = None
        """The precision loaded (``fp32``, ``int8``, ...), once loaded."""
        self.resolved_device: str | None = None
        """The device the session runs on, once loaded."""

    # -- life cycle -------------------------------------------------------------------------

    def _load(self) -> None:
        settings = self._settings or load_settings()
        opened = open_variant(Path(self._model_path), "embedding", self.device, self.dtype, settings)  # type: ignore[arg-type]
        spec = opened.info.manifest.embedding  # type: ignore[union-attr]  # checked by open_variant
        tokenizer = load_tokenizer(opened.folder / "tokenizer.json", spec.max_seq_length)
        runner = EncoderRunner(opened.session, tokenizer, spec)
        runner.check(opened.folder)
        self._runner = runner
        self._batcher = CoalescingBatcher(lambda texts: runner.encode(texts, self.batch_size))
        self.variant, self.resolved_device = opened.variant, opened.device
        logger.info("Loaded embedding model %s (%s on %s)", opened.info.name, opened.variant, opened.device)

    def _unload(self) -> None:
        self._runner = None
        self._batcher = None

    @property
    def runner(self) -> EncoderRunner:
        """The loaded session, tokenizer and pooling; raises if the model is not loaded."""
        runner = self._runner
        if runner is None:
            raise ModelNotLoadedError(f"{self!r} is not loaded; call load() first.")
        return runner

    @property
    def session(self) -> ort.InferenceSession:
        return self.runner.session

    @property
    def dimension(self) -> int:
        """Length of each embedding vector."""
        self._ensure_loaded()
        return self.runner.spec.dimension

    # -- inference --------------------------------------------------------------------------

    def _embed(self, texts: list[str]) -> list[list[float]]:
        return self._embed_counted(texts)[0]

    def _embed_counted(self, texts: list[str]) -> tuple[list[list[float]], int]:
        """Concurrent callers share batches (`CoalescingBatcher`); each gets its own rows, and
        the tokens its texts were read as."""
        batcher = self._batcher
        if batcher is None:
            raise ModelNotLoadedError(f"{self!r} is not loaded; call load() first.")
        encoded = batcher(texts)
        return encoded.vectors.tolist(), int(encoded.tokens.sum())

"""`OnnxEmbeddingModel`: sentence embeddings from an exported encoder on ONNX Runtime.

A LangChain `Embeddings` over the engine's `EncoderRunner` (length-sorted batches,
pooling and normalisation as the export manifest says) and `CoalescingBatcher`
(concurrent callers share batches). Queries and documents get the model's prompts and
vectors may be cut to fewer dimensions, by sentence-transformers' rules
(`embedding_options`).
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
from .embedding_options import output_size, prompt_for, truncate
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
        ``emb.embed_documents(["a", "b"])``, ``emb.embed_query("c")`` and their ``a``-twins: each
        with the model's document or query prompt when its ``config_sentence_transformers.json``
        has them (as sentence-transformers' ``encode_document`` / ``encode_query``);
        ``emb.embed(texts, prompt_name=..., dimensions=...)`` for the rest.

    Fewer dimensions:
        ``OnnxEmbeddingModel("nomic-embed", dimensions=256)``: every vector cut to its first 256
        numbers and renormalised, for a model whose card declares Matryoshka training; any
        other model refuses unless ``matryoshka=True`` says the caller knows it was trained so.
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
        dimensions: int | None = None,
        matryoshka: bool = False,
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
        if dimensions is not None and (isinstance(dimensions, bool) or not isinstance(dimensions, int)
                                       or dimensions < 1):
            raise ValueError(f"dimensions must be a positive whole number, got {dimensions!r}.")
        self.dimensions = dimensions
        """The length every vector is cut to (``None``: the model's own); checked at load."""
        self.matryoshka = matryoshka
        """True: cut to ``dimensions`` even though the model's card declares no Matryoshka training."""
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
        output_size(spec, opened.info.name, self.dimensions, self.matryoshka)  # refused at load, not at first use
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
        """Length of each embedding vector (``dimensions`` when given)."""
        self._ensure_loaded()
        return self.dimensions or self.runner.spec.dimension

    def prompt_for(self, input_type: str | None = None, prompt_name: str | None = None) -> str:
        """The text put before each input for this role or prompt name ("" for none)."""
        self._ensure_loaded()
        return prompt_for(self.runner.spec, self._name, input_type, prompt_name)

    @property
    def _name(self) -> str:
        return self.model_name or Path(self._model_path or "").name

    # -- inference --------------------------------------------------------------------------

    def _embed(self, texts: list[str]) -> list[list[float]]:
        return self._embed_as(texts, None, None, None, False)[0]

    def _embed_as(self, texts: list[str], input_type: str | None, prompt_name: str | None,
                  dimensions: int | None, matryoshka: bool) -> tuple[list[list[float]], int]:
        """Concurrent callers share batches (`CoalescingBatcher`), whatever their prompts; each gets
        its own rows, and the tokens its texts were read as (prompts included)."""
        batcher, runner = self._batcher, self._runner
        if batcher is None or runner is None:
            raise ModelNotLoadedError(f"{self!r} is not loaded; call load() first.")
        spec = runner.spec
        prompt = prompt_for(spec, self._name, input_type, prompt_name)
        size = output_size(spec, self._name, dimensions if dimensions is not None else self.dimensions,
                           matryoshka or self.matryoshka)
        encoded = batcher([prompt + text for text in texts] if prompt else texts)
        return truncate(encoded.vectors, size, spec.normalize).tolist(), int(encoded.tokens.sum())

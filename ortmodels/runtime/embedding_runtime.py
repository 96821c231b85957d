"""`EmbeddingRuntime`: one embedding model of the store, LangChain-free: its life cycle and,
while loaded, its encoder (`EncoderRunner`) and the batcher concurrent callers share.

What the manager caches for ortmodels' own embedding class and what the server and Ray's
replicas call (`aembed_counted`, `dimension`), so neither imports LangChain. Prompts and
Matryoshka cuts follow sentence-transformers' rules (`embedding_options`). `OnnxEmbeddingModel` is the LangChain face of one, sharing its life cycle.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import Settings, load_settings
from ..engine.encoder import Encoded, EncoderRunner
from ..engine.encoder_batching import CoalescingBatcher
from ..engine.tokenizer import load_tokenizer
from ..errors import ModelNotLoadedError
from ..lifecycle import LifeCycle, ManagedEmbedding
from .embedding_options import output_size, prompt_for, truncate
from .variant import ChoosesVariant, open_variant

if TYPE_CHECKING:
    import onnxruntime as ort

logger = logging.getLogger(__name__)


class EmbeddingRuntime(ChoosesVariant, ManagedEmbedding):
    """An embedding model's life cycle and encoder, without LangChain; thread-safe."""

    kind = "embedding"
    default_setting = "default_embedding_model"

    def __init__(self, model_name: str | None = None, *, model_path: str | Path | None = None,
                 device: str | None = None, dtype: str | None = None, version: str | None = None,
                 batch_size: int = 32, settings: Settings | None = None, owner: Any = None,
                 dimensions: int | None = None, matryoshka: bool = False) -> None:
        self._place(model_name, model_path, device, dtype, version, settings)
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
        if dimensions is not None and (isinstance(dimensions, bool) or not isinstance(dimensions, int)
                                       or dimensions < 1):
            raise ValueError(f"dimensions must be a positive whole number, got {dimensions!r}.")
        self.dimensions = dimensions
        """The length every vector is cut to (``None``: the model's own); checked at load."""
        self.matryoshka = matryoshka
        """True: cut to ``dimensions`` even though the model's card declares no Matryoshka training."""
        self.batch_size = batch_size
        self.front: Any = None
        """The LangChain face (`OnnxEmbeddingModel`) whose fields this runtime loads with, if any."""
        self._runner: EncoderRunner | None = None
        self._batcher: CoalescingBatcher[Encoded] | None = None
        self._life = LifeCycle(owner or self)
        """Its own, or (``owner``: a LangChain face made on its own, a user's subclass perhaps) the
        face's, whose ``_load`` runs this runtime's."""

    # -- life cycle -------------------------------------------------------------------------

    def _load(self) -> None:
        if self.front is not None:
            self._follow_front()
        settings = self.settings or load_settings()
        opened = open_variant(self.model_path, "embedding", self.device, self.dtype, settings)
        spec = opened.embedding_spec
        tokenizer = load_tokenizer(opened.folder / "tokenizer.json", spec.max_seq_length)
        runner = EncoderRunner(opened.session, tokenizer, spec)
        runner.check(opened.folder)
        output_size(spec, opened.info.name, self.dimensions, self.matryoshka)  # refused at load, not at first use
        self._runner = runner
        self._batcher = CoalescingBatcher(lambda texts: runner.encode(texts, self.batch_size))
        logger.info("Loaded embedding model %s (%s on %s)", opened.info.name, opened.variant, opened.device)

    def _unload(self) -> None:
        self._runner = None
        self._batcher = None

    @property
    def runner(self) -> EncoderRunner:
        """The loaded session, tokenizer and pooling; raises if the model is not loaded."""
        runner = self._runner
        if runner is None:
            raise ModelNotLoadedError(f"{self.model_name} is not loaded; call load() first.")
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
        return prompt_for(self.runner.spec, str(self.model_name), input_type, prompt_name)

    # -- inference --------------------------------------------------------------------------

    def _embed_as(self, texts: list[str], input_type: str | None = None, prompt_name: str | None = None,
                  dimensions: int | None = None, matryoshka: bool = False) -> tuple[list[list[float]], int]:
        """Embed non-empty, checked texts for a role, prompt or size (no call guard: the caller's),
        with the tokens they were read as (prompts included). Concurrent callers share batches
        (`CoalescingBatcher`), whatever their prompts; each gets its own rows."""
        batcher, runner = self._batcher, self._runner
        if batcher is None or runner is None:
            raise ModelNotLoadedError(f"{self.model_name} is not loaded; call load() first.")
        spec, name = runner.spec, str(self.model_name)
        prompt = prompt_for(spec, name, input_type, prompt_name)
        size = output_size(spec, name, dimensions if dimensions is not None else self.dimensions,
                           matryoshka or self.matryoshka)
        encoded = batcher([prompt + text for text in texts] if prompt else texts)
        return truncate(encoded.vectors, size, spec.normalize).tolist(), int(encoded.tokens.sum())


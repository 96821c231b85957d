"""`EmbeddingRuntime`: one embedding model of the store, LangChain-free: its life cycle and,
while loaded, its encoder (`EncoderRunner`) and the batcher concurrent callers share.

What the manager caches for ortmodels' own embedding class and what the server and Ray's
replicas call (`embed_documents`, `aembed_documents`, `runner`, `dimension`), so neither
imports LangChain. `OnnxEmbeddingModel` is the LangChain face of one, sharing its life cycle.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import Settings, load_settings
from ..engine.encoder import EncoderRunner
from ..engine.encoder_batching import CoalescingBatcher
from ..engine.tokenizer import load_tokenizer
from ..errors import ModelNotLoadedError
from ..inputs import check_texts
from ..lifecycle import LifeCycle, Managed, VariantChoice
from ..store import ModelStore
from ..store.names import validate_model_name
from .variant import choose_variant, open_variant

if TYPE_CHECKING:
    import onnxruntime as ort

logger = logging.getLogger(__name__)


class EmbeddingRuntime(Managed):
    """An embedding model's life cycle and encoder, without LangChain; thread-safe."""

    kind = "embedding"

    def __init__(self, model_name: str | None = None, *, model_path: str | Path | None = None,
                 device: str | None = None, dtype: str | None = None, version: str | None = None,
                 batch_size: int = 32, settings: Settings | None = None, owner: Any = None) -> None:
        if model_path is None:  # found by name in LOCAL_MODELS_DIR
            given = settings or load_settings()
            model_name = validate_model_name(model_name or given.default_embedding_model)
            model_path = given.local_models_dir / model_name
        elif model_name is None:
            model_name = Path(model_path).name
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
        self.model_name: str | None = model_name
        self.model_path = Path(model_path)
        self.device, self.dtype, self.version, self.settings = device, dtype, version, settings
        self.batch_size = batch_size
        self.front: Any = None
        """The LangChain face (`OnnxEmbeddingModel`) whose fields this runtime loads with, if any."""
        self._runner: EncoderRunner | None = None
        self._batcher: CoalescingBatcher | None = None
        self._life = LifeCycle(owner or self)
        """Its own, or (``owner``: a LangChain face made on its own, a user's subclass perhaps) the
        face's, whose ``_load`` runs this runtime's."""

    def __repr__(self) -> str:
        return f"EmbeddingRuntime(model_name={self.model_name!r}, {'loaded' if self.is_loaded else 'not loaded'})"

    # -- life cycle -------------------------------------------------------------------------

    def choice(self, store: ModelStore) -> VariantChoice:
        """What the next load opens, chosen from ``store`` with this model's fields (the loader's
        chooser: the manifest read, the variant chosen and the version leased once per load)."""
        if self.front is not None:
            self._follow_front()
        return choose_variant(store, self.model_path.name, self.kind, self.version, self.device, self.dtype,
                              self.settings or load_settings())


    def _follow_front(self) -> None:
        """Fields a user may have set on the LangChain face since it was made."""
        self.device, self.dtype, self.version = self.front.device, self.front.dtype, self.front.version

    def _load(self) -> None:
        if self.front is not None:
            self._follow_front()
        settings = self.settings or load_settings()
        opened = open_variant(self.model_path, "embedding", self.device, self.dtype, settings)
        spec = opened.embedding_spec
        tokenizer = load_tokenizer(opened.folder / "tokenizer.json", spec.max_seq_length)
        runner = EncoderRunner(opened.session, tokenizer, spec)
        runner.check(opened.folder)
        self._runner = runner
        self._batcher = CoalescingBatcher(lambda texts: runner.embed(texts, self.batch_size))
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
        """Length of each embedding vector."""
        self._ensure_loaded()
        return self.runner.spec.dimension

    # -- inference --------------------------------------------------------------------------

    def embed(self, texts: list[str]) -> list[list[float]]:
        """Embed non-empty, checked texts, in order (no call guard: the caller's). Concurrent
        callers share batches (`CoalescingBatcher`); each gets its own rows."""
        batcher = self._batcher
        if batcher is None:
            raise ModelNotLoadedError(f"{self.model_name} is not loaded; call load() first.")
        return batcher(texts).tolist()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed texts under the call guard; ``[]`` gives ``[]``."""
        texts = check_texts(texts)
        if not texts:
            return []
        with self._use("embed_documents") as record:
            vectors = self.embed(texts)
            if record is not None:
                record.items = len(texts)
            return vectors

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """`embed_documents` off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(None, self.embed_documents, texts)

"""`OnnxEmbeddingModel`: sentence embeddings from an exported encoder on ONNX Runtime.

A LangChain `Embeddings` over an `EmbeddingRuntime` (which loads the model and owns its
encoder, batcher and life cycle): the engine's `EncoderRunner` (length-sorted batches,
pooling and normalisation as the export manifest says) and `CoalescingBatcher` (concurrent
callers share batches). Queries and documents get the model's prompts and vectors may be cut
to fewer dimensions, by sentence-transformers' rules (`embedding_options`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..base import BaseEmbeddingModel
from ..config import Settings
from ..engine.encoder import EncoderRunner
from .embedding_runtime import EmbeddingRuntime
from .encoder_face import EncoderFace

if TYPE_CHECKING:
    import onnxruntime as ort


class OnnxEmbeddingModel(EncoderFace, BaseEmbeddingModel):
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
        runtime: EmbeddingRuntime | None = None,
    ) -> None:
        super().__init__(EmbeddingRuntime, runtime, batch_size, model_name, model_path=model_path, device=device,
                         dtype=dtype, settings=settings, dimensions=dimensions, matryoshka=matryoshka)

    @classmethod
    def over(cls, runtime: EmbeddingRuntime) -> OnnxEmbeddingModel:
        """The LangChain face of a runtime the manager caches: one life cycle, one encoder."""
        return cls(runtime=runtime)

    @property
    def runtime(self) -> EmbeddingRuntime:
        """The LangChain-free model under this adapter (what the server uses)."""
        return self._runtime

    @property
    def runner(self) -> EncoderRunner:
        """The loaded session, tokenizer and pooling; raises if the model is not loaded."""
        return self._runtime.runner

    @property
    def session(self) -> ort.InferenceSession:
        return self._runtime.session

    @property
    def dimension(self) -> int:
        """Length of each embedding vector (``dimensions`` when given)."""
        return self._runtime.dimension

    @property
    def dimensions(self) -> int | None:
        """The length every vector is cut to (``None``: the model's own); checked at load."""
        return self._runtime.dimensions

    @property
    def matryoshka(self) -> bool:
        """True: cut to ``dimensions`` even though the model's card declares no Matryoshka training."""
        return self._runtime.matryoshka

    def prompt_for(self, input_type: str | None = None, prompt_name: str | None = None) -> str:
        """The text put before each input for this role or prompt name ("" for none)."""
        return self._runtime.prompt_for(input_type, prompt_name)

    def _embed(self, texts: list[str]) -> list[list[float]]:
        return self._runtime._embed_as(texts)[0]

    def _embed_as(self, texts: list[str], input_type: str | None, prompt_name: str | None,
                  dimensions: int | None, matryoshka: bool) -> tuple[list[list[float]], int]:
        return self._runtime._embed_as(texts, input_type, prompt_name, dimensions, matryoshka)

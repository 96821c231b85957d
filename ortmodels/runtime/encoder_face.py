"""What the LangChain faces of the encoder runtimes share (`OnnxEmbeddingModel` over an
`EmbeddingRuntime`, `OnnxCrossEncoder` over a `RerankRuntime`): how a face is built over its
runtime, one life cycle with it (whose ``_load`` runs the runtime's), its batch size, and what
it loaded."""

from __future__ import annotations

from typing import Any

from ..lifecycle import LifeCycle


class EncoderFace:
    """Forwards to ``self._runtime`` (set by the face's constructor before its base's)."""

    _runtime: Any
    loaded_variant: str | None
    loaded_device: str | None
    version: str | None

    def __init__(self, runtime_class: type, runtime: Any, batch_size: int | None, model_name: str | None,
                 **opening: Any) -> None:
        """Over ``runtime`` (a cached one; ``batch_size``, if given, becomes its batch size), or over
        a ``runtime_class`` opened from ``model_name`` and ``opening`` with this face as the owner of
        its life cycle; the base's fields are what the runtime resolved."""
        if runtime is None:
            runtime = runtime_class(model_name, batch_size=batch_size or 32, owner=self, **opening)
        elif batch_size is not None:
            runtime.batch_size = batch_size
        self._runtime = runtime
        super().__init__(runtime.model_name, model_path=runtime.model_path,  # type: ignore[call-arg]
                         device=runtime.device, dtype=runtime.dtype)
        self.version = runtime.version
        runtime.front = self

    def _new_life_cycle(self) -> LifeCycle:
        """The runtime's: made on its own (a user's subclass too), its ``_load`` runs the runtime's."""
        return self._runtime.life_cycle  # type: ignore[no-any-return]

    def _load(self) -> None:
        self._runtime._load()

    def _unload(self) -> None:
        self._runtime._unload()

    @property
    def batch_size(self) -> int:
        """Texts (or pairs) per batch."""
        return self._runtime.batch_size  # type: ignore[no-any-return]

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        if value < 1:
            raise ValueError(f"batch_size must be at least 1, got {value}.")
        self._runtime.batch_size = value

    @property
    def named_by(self) -> str | None:
        """The setting the model's name came from (``DEFAULT_EMBEDDING_MODEL``, ...), when none was given."""
        return self._runtime.named_by  # type: ignore[no-any-return]

    @property
    def variant(self) -> str | None:
        """The precision loaded (``fp32``, ``int8``, ...), once loaded."""
        return self.loaded_variant

    @property
    def resolved_device(self) -> str | None:
        """The device the session runs on, once loaded."""
        return self.loaded_device

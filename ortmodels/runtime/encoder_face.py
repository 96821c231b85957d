"""What the LangChain faces of the encoder runtimes share (`OnnxEmbeddingModel` over an
`EmbeddingRuntime`, `OnnxCrossEncoder` over a `RerankRuntime`): one life cycle with the runtime,
whose ``_load`` runs the runtime's, its batch size, and what it loaded."""

from __future__ import annotations

from typing import Any

from ..lifecycle import LifeCycle


class EncoderFace:
    """Forwards to ``self._runtime`` (set by the face's constructor before its base's)."""

    _runtime: Any
    loaded_variant: str | None
    loaded_device: str | None

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
    def variant(self) -> str | None:
        """The precision loaded (``fp32``, ``int8``, ...), once loaded."""
        return self.loaded_variant

    @property
    def resolved_device(self) -> str | None:
        """The device the session runs on, once loaded."""
        return self.loaded_device

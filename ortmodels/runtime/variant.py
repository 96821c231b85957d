"""Opening one exported precision of a model: the steps every ONNX model class shares."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import Settings
from ..errors import ModelFileError
from ..precision import select_variant
from ..store import ModelInfo, ModelKind, ModelStore
from .session import create_session, resolve_device

if TYPE_CHECKING:
    import onnxruntime as ort


@dataclass(frozen=True)
class OpenVariant:
    info: ModelInfo
    variant: str
    folder: Path
    device: str
    session: ort.InferenceSession


def open_variant(
    model_dir: Path, kind: ModelKind, device: str | None, dtype: str | None, settings: Settings
) -> OpenVariant:
    """Check the model's kind and export, pick device and precision, and open its session."""
    info = ModelStore(model_dir.parent).require(model_dir.name, kind)
    if info.manifest is None or getattr(info.manifest, kind) is None:
        raise ModelFileError(
            info.onnx_path / "manifest.json", "No ONNX export found", f"Run 'ortmodels export {info.name}'."
        )
    resolved = resolve_device(device or settings.model_device)
    variant = select_variant(dtype or settings.model_dtype, list(info.variants), kind, resolved)
    folder = info.variant_path(variant)
    session = create_session(folder / "model.onnx", resolved, settings.model_threads)
    return OpenVariant(info, variant, folder, resolved, session)

"""The local model store: one folder per model under ``LOCAL_MODELS_DIR``.

A model folder holds a Hugging Face checkpoint and, once exported, ``onnx/`` with one
sub-folder per precision and a ``manifest.json``. Names are validated before any path
is built from them, so a name can never reach outside the store.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .errors import (
    ModelFileError,
    ModelKindError,
    ModelNotExportedError,
    UnknownModelError,
)
from .manifest import Manifest, VariantEntry, read_manifest
from .names import validate_model_name

logger = logging.getLogger(__name__)

ModelKind = Literal["embedding", "chat", "unknown"]

ONNX_DIR = "onnx"
_SENTENCE_TRANSFORMERS_FILES = ("modules.json", "sentence_bert_config.json")
_CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")


@dataclass(frozen=True)
class ModelInfo:
    """What the store knows of one model folder, without loading anything."""

    name: str
    path: Path
    kind: ModelKind
    architecture: str | None
    manifest: Manifest | None = field(default=None, compare=False, repr=False)

    @property
    def onnx_path(self) -> Path:
        return self.path / ONNX_DIR

    @property
    def variants(self) -> dict[str, VariantEntry]:
        return dict(self.manifest.variants) if self.manifest else {}

    @property
    def has_checkpoint(self) -> bool:
        return (self.path / "config.json").is_file()

    def size_bytes(self) -> int:
        """Bytes of all exported variants, as the manifest records them."""
        return sum(v.size for v in self.variants.values())

    def variant_path(self, dtype: str) -> Path:
        """Folder of one exported precision, or a `ModelNotExportedError` that says how to make it."""
        entry = self.variants.get(dtype)
        if entry is None:
            have = ", ".join(self.variants) or "none"
            raise ModelNotExportedError(
                f"Model {self.name!r} has no {dtype} export (exported: {have}). "
                f"Run 'ortmodels export {self.name} --dtype {dtype}'."
            )
        return self.onnx_path / entry.path


def read_json(path: Path) -> dict:
    """Read a JSON object, or raise a `ModelFileError` naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFileError(path, "Missing file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(path, f"Corrupt JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ModelFileError(path, "Expected a JSON object")
    return data


def detect_kind(folder: Path, manifest: Manifest | None = None) -> tuple[ModelKind, str | None]:
    """Tell a chat model from an embedding model by its files (the manifest wins if present)."""
    architecture: str | None = None
    config_path = folder / "config.json"
    if config_path.is_file():
        try:
            archs = read_json(config_path).get("architectures") or []
            architecture = archs[0] if archs else None
        except ModelFileError as exc:
            logger.warning("%s", exc)
    if manifest is not None:
        return manifest.kind, manifest.architecture or architecture
    if any((folder / f).is_file() for f in _SENTENCE_TRANSFORMERS_FILES):
        return "embedding", architecture
    if architecture:
        if architecture.endswith(_CAUSAL_SUFFIXES):
            return "chat", architecture
        return "embedding", architecture
    return "unknown", architecture


class ModelStore:
    """Finds and describes the models in one folder."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def model_dir(self, name: str) -> Path:
        """The folder for ``name``, after checking that the name is a plain folder name."""
        return self.root / validate_model_name(name)

    def names(self) -> list[str]:
        """Model folder names, sorted; folders that are neither checkpoint nor export are skipped."""
        if not self.root.is_dir():
            return []
        found = []
        for child in sorted(self.root.iterdir()):
            if child.name.startswith(".") or not child.is_dir():
                continue
            if (child / "config.json").is_file() or (child / ONNX_DIR / "manifest.json").is_file():
                found.append(child.name)
        return found

    def info(self, name: str) -> ModelInfo:
        """Describe one model, or raise `UnknownModelError` listing the known ones."""
        folder = self.model_dir(name)
        if name not in self.names():
            raise UnknownModelError(name, self.names(), self.root)
        manifest = read_manifest(folder / ONNX_DIR)
        kind, architecture = detect_kind(folder, manifest)
        return ModelInfo(name, folder, kind, architecture, manifest)

    def list(self) -> list[ModelInfo]:
        """Every model in the store; one with a corrupt manifest is logged and listed as unknown."""
        infos = []
        for name in self.names():
            try:
                infos.append(self.info(name))
            except ModelFileError as exc:
                logger.warning("%s", exc)
                folder = self.root / name
                infos.append(ModelInfo(name, folder, "unknown", None, None))
        return infos

    def require(self, name: str, kind: ModelKind) -> ModelInfo:
        """Describe ``name`` and check that it is of ``kind``."""
        info = self.info(name)
        if info.kind != kind:
            same_kind = [i.name for i in self.list() if i.kind == kind]
            raise ModelKindError(
                f"Model {name!r} is of kind '{info.kind}', not '{kind}'. "
                f"{kind.capitalize()} models here: {', '.join(same_kind) or 'none'}."
            )
        return info

"""The local model store: one folder per model under ``LOCAL_MODELS_DIR``.

A model folder holds a Hugging Face checkpoint and, once exported, ``onnx/`` with one
sub-folder per precision and a ``manifest.json``. Names are validated before any path
is built from them, so a name can never reach outside the store.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from ..errors import (
    ConfigurationError,
    FailedVariantError,
    InvalidModelNameError,
    ModelFileError,
    ModelKindError,
    ModelNotExportedError,
    OrtModelsError,
    UnknownModelError,
)
from ..precision import select_variant
from .integrity import resolve_inside
from .manifest import Manifest, VariantEntry, read_manifest
from .model_card import count_parameters, read_card
from .names import validate_model_name
from .versions import ONNX_DIR, active_version, exports_root, read_version_manifest, version_dir

logger = logging.getLogger(__name__)

ModelKind = Literal["embedding", "chat", "reranker", "unknown"]

_SENTENCE_TRANSFORMERS_FILES = ("modules.json", "sentence_bert_config.json")
_CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")
_CLASSIFIER_SUFFIX = "ForSequenceClassification"


@dataclass(frozen=True)
class ModelInfo:
    """What the store knows of one model folder, without loading anything."""

    name: str
    path: Path
    kind: ModelKind
    architecture: str | None
    manifest: Manifest | None = field(default=None, compare=False, repr=False)
    export_dir: Path | None = None
    """The export version this info describes, resolved once so a concurrent export or
    rollback cannot switch it between reading the manifest and opening the files."""

    @property
    def onnx_path(self) -> Path:
        return self.export_dir or self.path / ONNX_DIR

    @property
    def version(self) -> str | None:
        """The export version described (``None`` for an unexported or pre-versioning export):
        its folder's name, which `read_version_manifest` made sure the manifest agrees with."""
        if self.export_dir is not None:
            return self.export_dir.name
        return self.manifest.version if self.manifest is not None else None

    @property
    def variants(self) -> dict[str, VariantEntry]:
        """Every exported precision, including ones that failed their quality gates."""
        return dict(self.manifest.variants) if self.manifest else {}

    @property
    def usable_variants(self) -> list[str]:
        """The precisions that can be loaded: exported, and passed (or predate) the gates."""
        return [dtype for dtype, entry in self.variants.items() if entry.usable]

    def failed_variants(self) -> dict[str, str]:
        """Precisions that failed their quality gates, each with the figures that failed."""
        return {
            dtype: "; ".join(entry.quality.failures) if entry.quality else ""
            for dtype, entry in self.variants.items() if not entry.usable
        }

    def variant_for(self, kind: str, device: str, dtype: str | None, setting: str) -> str:
        """The precision a load takes on ``device``: ``dtype`` if the model was asked for with one
        (a tag, ``dtype=``), else the ``MODEL_DTYPE`` ``setting``; the manager's cache asks it
        too, so that a name and the tag it chose share one instance."""
        return select_variant(dtype or setting, list(self.variants), kind, device, failed=self.failed_variants(),
                              asked=dtype not in (None, "auto", setting))  # a tag, not the setting

    def verdict(self, dtype: str) -> str:
        """``passed``, ``failed``, ``not judged`` (``--skip-gates``) or ``not gated`` (exported
        before the gates), for listings."""
        quality = self.variants[dtype].quality
        if quality is None:
            return "not gated"
        if not quality.judged:
            return "not judged"
        return "passed" if quality.passed else "failed"

    @property
    def has_checkpoint(self) -> bool:
        return (self.path / "config.json").is_file()

    # -- metadata, read from the checkpoint and the manifest without loading anything ----------

    @cached_property
    def config(self) -> dict[str, Any]:
        """The checkpoint's ``config.json`` (or the exported copy), ``{}`` if neither is readable."""
        for candidate in [self.path / "config.json"] + [
            self.onnx_path / v.path / "config.json" for v in self.variants.values()
        ]:
            if candidate.is_file():
                try:
                    return read_json(candidate)
                except ModelFileError:
                    continue
        return {}

    @cached_property
    def parameters(self) -> int | None:
        """Weights in the checkpoint, counted from the safetensors headers."""
        return count_parameters(self.path)

    @property
    def context_length(self) -> int | None:
        if self.manifest is not None and self.manifest.chat is not None:
            return self.manifest.chat.context_length
        if self.manifest is not None and self.manifest.embedding is not None:
            return self.manifest.embedding.max_seq_length
        if self.manifest is not None and self.manifest.reranker is not None:
            return self.manifest.reranker.max_seq_length
        return self._config_count("max_position_embeddings")

    @property
    def embedding_size(self) -> int | None:
        """Length of an embedding vector (embedding models) or of the hidden state (chat models)."""
        if self.manifest is not None and self.manifest.embedding is not None:
            return self.manifest.embedding.dimension
        return self._config_count("hidden_size") or self._config_count("d_model")

    @property
    def vocab_size(self) -> int | None:
        return self._config_count("vocab_size")

    def _config_count(self, key: str) -> int | None:
        """A positive whole number from ``config.json``; anything else is reported once and ignored."""
        value = self.config.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            warn_once(self.name, f"config.json's {key} is {value!r:.40}, not a positive whole number; ignored")
            return None
        return value

    @cached_property
    def has_chat_template(self) -> bool | None:
        """Whether a chat model has a chat template (in its checkpoint or its export); ``None``
        for other kinds. Without one it can only continue plain text."""
        if self.kind != "chat":
            return None
        for folder in [self.path] + [self.onnx_path / v.path for v in self.variants.values()]:
            if (folder / "chat_template.jinja").is_file():
                return True
            if (folder / "tokenizer_config.json").is_file():
                try:
                    if read_json(folder / "tokenizer_config.json").get("chat_template"):
                        return True
                except ModelFileError:
                    continue
        return False

    @property
    def kind_label(self) -> str:
        """The kind as ``ortmodels list`` shows it: ``chat (no template)`` for a chat model without one."""
        return "chat (no template)" if self.has_chat_template is False else self.kind

    @cached_property
    def _card(self) -> tuple[str | None, str | None]:
        return read_card(self.path)

    @property
    def license(self) -> str | None:
        return self._card[0]

    @property
    def description(self) -> str | None:
        return self._card[1]

    def to_dict(self) -> dict[str, Any]:
        """Everything ``ortmodels info`` and ``list --json`` show, JSON-ready."""
        manifest = self.manifest
        return {
            "name": self.name,
            "kind": self.kind,
            "chat_template": self.has_chat_template,
            "architecture": self.architecture,
            "model_type": self.config.get("model_type"),
            "parameters": self.parameters,
            "context_length": self.context_length,
            "embedding_size": self.embedding_size,
            "vocab_size": self.vocab_size,
            "license": self.license,
            "description": self.description,
            "path": str(self.path),
            "version": self.version,
            "exported_at": manifest.created_at if manifest else None,
            "source_sha256": manifest.source_sha256 if manifest else None,
            "size": self.size_bytes(),
            "variants": {
                dtype: {"size": v.size, "files": len(v.files), "parity": v.parity,
                        "quantization": v.quantization, "verdict": self.verdict(dtype),
                        "failures": v.quality.failures if v.quality else [],
                        "kv": {k: e.model_dump(mode="json") for k, e in (v.kv or {}).items()}}
                for dtype, v in self.variants.items()
            },
        }

    def size_bytes(self) -> int:
        """Bytes of all exported variants, as the manifest records them."""
        return sum(v.size for v in self.variants.values())

    def variant_path(self, dtype: str) -> Path:
        """Folder of one exported precision, or a `ModelNotExportedError` that says how to make it."""
        entry = self.variants.get(dtype)
        if entry is not None and not entry.usable:
            raise FailedVariantError(failed_variant_message(self, dtype))
        if entry is None:
            have = ", ".join(self.variants) or "none"
            raise ModelNotExportedError(
                f"Model {self.name!r} has no {dtype} export (exported: {have}). "
                f"Run 'ortmodels export {self.name} --dtype {dtype}'."
            )
        return resolve_inside(self.onnx_path, entry.path, "variant folder")


def failed_variant_message(info: ModelInfo, dtype: str) -> str:
    """Why a precision is not loaded, and what to use instead."""
    usable = ", ".join(info.usable_variants) or "none"
    return (
        f"The {dtype} export of {info.name!r} failed its quality gates at export "
        f"({info.failed_variants().get(dtype) or 'see ortmodels info'}), so it is not loaded. "
        f"Use MODEL_DTYPE=auto or one of the precisions that passed ({usable}); "
        f"'ortmodels info {info.name}' shows every variant's figures."
    )


def read_json(path: Path) -> dict:
    """Read a JSON object, or raise a `ModelFileError` naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFileError(path, "Missing file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(path, f"Corrupt JSON ({exc})") from None
    except RecursionError:
        raise ModelFileError(path, "Corrupt JSON (nested too deeply to read)") from None
    except OSError as exc:
        raise ModelFileError(path, f"Unreadable file ({exc.strerror or exc})") from None
    if not isinstance(data, dict):
        raise ModelFileError(path, "Expected a JSON object")
    return data


_reported: set[tuple[str, str]] = set()
_reported_lock = threading.Lock()


def warn_once(name: str, problem: str) -> None:
    """Log a problem with one model folder once per process, not on every listing."""
    with _reported_lock:
        if (name, problem) in _reported:
            return
        _reported.add((name, problem))
    logger.warning("Model folder %r: %s", name, problem)


def _architecture(config: dict[str, Any], name: str) -> str | None:
    archs = config.get("architectures")
    if archs is None:
        return None
    if not isinstance(archs, list) or not all(isinstance(a, str) for a in archs):
        warn_once(name, f"config.json's architectures is {archs!r:.60}, not a list of names; ignored")
        return None
    return archs[0] if archs else None


def classifier_labels(config: dict[str, Any]) -> int:
    """How many labels a ``*ForSequenceClassification`` config has, as transformers counts them:
    ``id2label``'s entries, else ``num_labels``, else transformers' default of 2."""
    id2label = config.get("id2label")
    if isinstance(id2label, dict) and id2label:
        return len(id2label)
    count = config.get("num_labels")
    return count if isinstance(count, int) and not isinstance(count, bool) and count > 0 else 2


def detect_kind(folder: Path, manifest: Manifest | None = None) -> tuple[ModelKind, str | None]:
    """Tell a chat model, an embedding model and a reranker apart by their files (the manifest
    wins if present).

    A ``*ForSequenceClassification`` checkpoint with one label is a cross-encoder (a reranker),
    whatever sentence-transformers files sit beside it; one with more labels is a classifier
    ortmodels has no kind for (``unknown``: its export is refused by name, never read as an
    encoder with its head dropped).
    """
    architecture: str | None = None
    config: dict[str, Any] = {}
    config_path = folder / "config.json"
    if config_path.is_file():
        try:
            config = read_json(config_path)
            architecture = _architecture(config, folder.name)
        except ModelFileError as exc:
            warn_once(folder.name, str(exc))
    if manifest is not None:
        return manifest.kind, manifest.architecture or architecture
    if architecture and architecture.endswith(_CLASSIFIER_SUFFIX):
        return ("reranker" if classifier_labels(config) == 1 else "unknown"), architecture
    if any((folder / f).is_file() for f in _SENTENCE_TRANSFORMERS_FILES):
        return "embedding", architecture
    if architecture:
        if architecture.endswith(_CAUSAL_SUFFIXES):
            return "chat", architecture
        return "embedding", architecture
    return "unknown", architecture


def _is_model_folder(folder: Path) -> bool:
    """A visible folder holding a checkpoint or an export: what the store lists."""
    return (not folder.name.startswith(".") and folder.is_dir()
            and ((folder / "config.json").is_file() or (folder / ONNX_DIR / "manifest.json").is_file()))


def _folder_problem(folder: Path) -> str | None:
    """Why a model folder cannot be used, with the fix; ``None`` if it can."""
    try:
        validate_model_name(folder.name)
    except InvalidModelNameError:
        return ("its name is not a plain model name (letters, digits, '.', '_', '+', '-'; no spaces "
                "or brackets); rename the folder, e.g. to " + repr(_suggest_name(folder.name)))
    if folder.is_symlink():
        return (f"it is a link to {folder.resolve()}; ortmodels keeps exports, version leases and "
                "checks inside each model folder, so move the folder into LOCAL_MODELS_DIR or point "
                "LOCAL_MODELS_DIR at the folder that holds it")
    return None


def _suggest_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._+-]+", "-", name).strip("-.") or "model"
    return cleaned[:128]


class ModelStore:
    """Finds and describes the models in one folder."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def model_dir(self, name: str) -> Path:
        """The folder for ``name``, after checking that the name is a plain folder name."""
        return self.root / validate_model_name(name)

    def names(self) -> list[str]:
        """Model folder names, sorted; folders that are neither checkpoint nor export are skipped,
        and so are folders ortmodels cannot use (see `skipped`)."""
        return [name for name, problem in self._scan() if problem is None]

    def skipped(self) -> dict[str, str]:
        """Folders that look like models but cannot be used, each with the reason and the fix."""
        return {name: problem for name, problem in self._scan() if problem is not None}

    def _scan(self) -> list[tuple[str, str | None]]:
        if self.root.exists() and not self.root.is_dir():  # else every name would be "unknown", a puzzle
            raise ConfigurationError(f"LOCAL_MODELS_DIR {self.root} is a file, not a folder: point "
                                     "LOCAL_MODELS_DIR at the folder that holds your models.")
        if not self.root.is_dir():
            return []
        found: list[tuple[str, str | None]] = []
        for child in sorted(self.root.iterdir()):
            if not _is_model_folder(child):
                continue
            problem = _folder_problem(child)
            if problem is not None:
                warn_once(child.name, problem)
            found.append((child.name, problem))
        return found

    def folder(self, name: str) -> Path:
        """The folder of a usable model, without reading its export: what a rollback needs, even
        away from an active version whose manifest is damaged."""
        folder = self.model_dir(name)
        if not _is_model_folder(folder):  # only this folder is looked at; the others on a miss
            raise UnknownModelError(name, self.names(), self.root)
        problem = _folder_problem(folder)
        if problem is not None:
            warn_once(name, problem)
            raise ModelFileError(folder, f"Model folder cannot be used: {problem}")
        return folder

    def info(self, name: str, version: str | None = None) -> ModelInfo:
        """Describe one model (its active export, or ``version``), or raise `UnknownModelError`."""
        folder = self.folder(name)
        if version is not None:
            export_dir: Path | None = version_dir(folder, version)
        elif active_version(folder) is not None:
            export_dir = exports_root(folder) / active_version(folder)  # type: ignore[operator]
        else:
            if (folder / ONNX_DIR).is_symlink():
                raise ModelFileError(
                    folder / ONNX_DIR, "The onnx link does not point to one of this model's exports",
                    f"Remove it and re-run 'ortmodels export {name}'.",
                )
            export_dir = None
        manifest = read_version_manifest(export_dir) if export_dir else read_manifest(folder / ONNX_DIR)
        kind, architecture = detect_kind(folder, manifest)
        return ModelInfo(name, folder, kind, architecture, manifest, export_dir)

    def list(self) -> list[ModelInfo]:
        """Every usable model in the store; one with a bad manifest or link is reported once and
        listed as unknown, one whose folder cannot be used (`skipped`) is left out."""
        infos = []
        for name in self.names():
            try:
                infos.append(self.info(name))
            except OrtModelsError as exc:
                warn_once(name, str(exc))
                folder = self.root / name
                infos.append(ModelInfo(name, folder, "unknown", None, None))
        return infos

    def require(self, name: str, kind: ModelKind, version: str | None = None) -> ModelInfo:
        """Describe ``name`` (its active export, or ``version``) and check that it is of ``kind``."""
        info = self.info(name, version)
        if info.kind != kind:
            same_kind = [i.name for i in self.list() if i.kind == kind]
            raise ModelKindError(
                f"Model {name!r} is of kind '{info.kind}', not '{kind}'. "
                f"{kind.capitalize()} models here: {', '.join(same_kind) or 'none'}."
            )
        return info

"""Offline export of Hugging Face checkpoints to ONNX variants (needs ``ortmodels[export]``).

`export_model` picks the exporter for the model's kind, skips work that is already done,
and publishes the result atomically; see `staging` for how a failure loses nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import ExportError, ModelFileError, UnknownModelError
from ..kinds import KINDS, load
from ..store import ModelInfo, ModelStore, detect_kind, versions
from ..store.manifest import Manifest
from . import resources, staging
from .checkpoint import source_sha256
from .int4_recipes import int4_search
from .memory_check import check_memory
from .quality import gates_skipped
from .progress import LogProgress, Progress

logger = logging.getLogger(__name__)

Exporter = Callable[[ModelInfo, list[str], str, Progress], Manifest]

#: Exporters by model kind, with the precisions each can produce (from the one kinds table).
EXPORTERS: dict[str, tuple[Exporter, tuple[str, ...]]] = {
    name: (load(spec.exporter), spec.precisions) for name, spec in KINDS.items()
}


@dataclass(frozen=True)
class ExportOutcome:
    name: str
    manifest: Manifest
    exported: list[str]
    skipped: bool

    @property
    def failed(self) -> list[str]:
        """Precisions built by this export that failed their quality gates (recorded, not published)."""
        return [d for d in self.exported if not self.manifest.variants[d].usable]


def supported_dtypes(kind: str) -> tuple[str, ...]:
    return EXPORTERS[kind][1] if kind in EXPORTERS else ()


def export_model(
    store: ModelStore,
    name: str,
    dtypes: list[str] | None = None,
    *,
    force: bool = False,
    progress: Progress | None = None,
    keep: int = versions.DEFAULT_KEEP,
    skip_gates: bool = False,
    force_memory: bool = False,
    int4: str = "off",
) -> ExportOutcome:
    """Export ``name``'s checkpoint in ``dtypes`` (default: every precision its kind supports).

    The new export becomes the active version; of the older ones, all but the ``keep``
    newest versions are pruned (never one that is active or loaded somewhere).
    ``skip_gates`` publishes every variant but fp32 "not judged" whatever its quality
    figures (random-weight checkpoints for benchmarks; `quality`); an export whose
    estimated peak memory exceeds what is available is refused before it starts unless
    ``force_memory`` (`memory_check`). ``int4`` searches smaller int4 recipes of our decoder
    graph (`int4_recipes.SEARCH_MODES`: ``rtn``, or ``gptq`` with calibration too); ``off``
    builds the default recipe alone.
    """
    folder = store.model_dir(name)  # validates the name before any path is used
    if name not in store.names():
        raise UnknownModelError(name, store.names(), store.root)
    with staging.export_lock(folder):
        with int4_search(int4):
            outcome = _export_locked(store, name, dtypes, force, progress, skip_gates, force_memory, int4)
        if not outcome.skipped:
            removed = versions.prune_locked(folder, keep)
            if removed:
                logger.info("Pruned old export versions of %s: %s", name, ", ".join(removed))
        return outcome


def _info_ignoring_a_bad_manifest(store: ModelStore, name: str) -> ModelInfo:
    """The model as the store sees it; a corrupt manifest counts as none, so exporting repairs it."""
    try:
        return store.info(name)
    except ModelFileError as exc:
        logger.warning("%s; exporting afresh.", exc)
        folder = store.model_dir(name)
        kind, architecture = detect_kind(folder)
        return ModelInfo(name, folder, kind, architecture, None)


def _export_locked(
    store: ModelStore, name: str, dtypes: list[str] | None, force: bool, progress: Progress | None,
    skip_gates: bool = False, force_memory: bool = False, int4: str = "off",
) -> ExportOutcome:
    info = _info_ignoring_a_bad_manifest(store, name)
    staging.check_link(info.path)
    if not info.has_checkpoint:
        raise ExportError(
            f"{info.path} has no config.json: put the Hugging Face checkpoint (config.json, "
            "weights, tokenizer files) in that folder before exporting."
        )
    if info.kind not in EXPORTERS:
        raise ExportError(
            f"ortmodels cannot export {info.kind} models yet ({name}: {info.architecture}); "
            f"it exports {', '.join(EXPORTERS)} models."
        )
    exporter, supported = EXPORTERS[info.kind]
    dtypes = list(dtypes or supported)
    if info.has_chat_template is False:  # said before the long part, not found by the first chat
        logger.warning(
            "%s has no chat template (no chat_template.jinja, no chat_template in tokenizer_config.json): "
            "it will only continue plain text. Add the model's template as %s (no re-export needed).",
            name, info.path / "chat_template.jinja",
        )
    check_memory(info, dtypes, force=force_memory)  # before hashing: a 16 GB checkpoint takes a while to read
    progress = progress or LogProgress(name)
    progress.step("Hashing the checkpoint")
    source_hash = source_sha256(info.path)
    if not force and _up_to_date(info, dtypes, source_hash, skip_gates, int4):
        assert info.manifest is not None
        return ExportOutcome(name, info.manifest, [], skipped=True)
    staging.clean_stale_staging(info.path)
    with resources.measure(), gates_skipped(skip_gates):
        manifest = exporter(info, dtypes, source_hash, progress)
    return ExportOutcome(name, manifest, dtypes, skipped=False)


def _up_to_date(info: ModelInfo, dtypes: list[str], source_hash: str, skip_gates: bool = False,
                int4: str = "off") -> bool:
    """True when every asked-for precision exists, from this very checkpoint, with its files
    (and was judged by the gates, unless they are skipped now too; and an int4 search asked
    for was the one made)."""
    manifest = info.manifest
    if manifest is None or manifest.source_sha256 != source_hash:
        return False
    for dtype in dtypes:
        entry = manifest.variants.get(dtype)
        if entry is None or (not skip_gates and entry.quality is not None and not entry.quality.judged):
            return False
        searched = ((entry.quantization or {}).get("selection") or {}).get("search", "off")
        if dtype == "int4" and int4 != "off" and searched != int4:
            return False
        folder: Path = info.onnx_path / entry.path
        if any(not (folder / rel).is_file() for rel in entry.files):
            return False
    return True


__all__ = ["EXPORTERS", "ExportOutcome", "export_model", "supported_dtypes"]

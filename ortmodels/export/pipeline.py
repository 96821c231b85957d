"""The export pipeline: `export_model` picks the exporter for the model's kind, skips work
that is already done, checks memory, measures the export and prunes old versions; the steps
every exporter shares (support files, variant entries, carry-over, publication) are here too.

See `staging` for how a failure loses nothing.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ExportError, ModelFileError, ModelIntegrityError, UnknownModelError
from ..lifecycle.memory import large_allocations_mapped
from ..kinds import KINDS, load
from ..store import ModelInfo, ModelStore, detect_kind, read_json, versions
from ..store.catalog import classifier_labels
from ..store.files import file_sha256
from ..store.integrity import verify_variant
from ..store.manifest import KVEntry, Manifest, QualityVerdict, VariantEntry
from . import resources, staging
from .checkpoint.source import (
    checkpoint_bytes,
    file_entries,
    source_sha256,
    tool_versions,
    utc_now,
)
from .decoder.int4_recipes import int4_search
from .memory_check import check_memory
from .progress import LogProgress, Progress
from .quality import gates_skipped

logger = logging.getLogger(__name__)


def check_dtypes(what: str, dtypes: list[str], supported: tuple[str, ...]) -> None:
    bad = [d for d in dtypes if d not in supported]
    if bad:
        raise ExportError(f"{what} export as {', '.join(supported)}; {', '.join(bad)} is not supported.")


@contextmanager
def export_attempt(info: ModelInfo) -> Iterator[Path]:
    """A staging folder for one export; removed if anything fails before it is published."""
    work = staging.new_staging_dir(info.path)
    try:
        yield work
    except BaseException:
        staging.discard(work)
        raise


#: Tokenizer files transformers turns into a tokenizer.json when optimum saves the tokenizer.
TOKENIZER_SOURCES = ("tokenizer.json", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model",
                     "vocab.json", "vocab.txt")


def check_tokenizer_source(checkpoint: Path) -> None:
    """Refuse, before the long export, a checkpoint with no tokenizer file at all: the export's
    end (`require_fast_tokenizer`) would refuse it only after building the graph."""
    if not any((checkpoint / name).is_file() for name in TOKENIZER_SOURCES):
        raise ExportError(_no_tokenizer(checkpoint, f"no tokenizer file ({', '.join(TOKENIZER_SOURCES)})"))


def _no_tokenizer(checkpoint: Path, what: str) -> str:
    return (
        f"{checkpoint} has {what}, and ortmodels tokenizes without transformers at run time. Save "
        "one with transformers: AutoTokenizer.from_pretrained(folder).save_pretrained(folder), "
        "then export again."
    )


def require_fast_tokenizer(checkpoint: Path, base: Path) -> None:
    """The runtime tokenizes with `tokenizers` alone, so the export must carry tokenizer.json."""
    if (base / "tokenizer.json").is_file():
        return
    if (checkpoint / "tokenizer.json").is_file():
        shutil.copy2(checkpoint / "tokenizer.json", base / "tokenizer.json")
        return
    raise ExportError(_no_tokenizer(checkpoint, "no fast tokenizer (tokenizer.json)"))


def support_files(base: Path) -> list[Path]:
    """Everything optimum wrote beside the graph: configs, tokenizer, chat template."""
    return [p for p in base.iterdir() if p.is_file() and not p.name.startswith("model.onnx")]


def new_variant_dir(base: Path, target: Path) -> Path:
    """A variant folder holding the support files; the caller adds the graph."""
    target.mkdir()
    for support in support_files(base):
        staging.link_or_copy(support, target / support.name)
    return target


def link_graph(base: Path, target: Path) -> None:
    for graph in base.glob("model.onnx*"):
        staging.link_or_copy(graph, target / graph.name)


Builder = Callable[[Path, Path], dict[str, Any]]


def build_variant(dtype: str, base: Path, target: Path, builders: dict[str, Builder]) -> dict[str, Any] | None:
    """Write one precision into ``target``: fp32 is the base graph, others come from a builder.

    Returns the builder's recipe (``None`` for fp32); dtypes were checked by `check_dtypes`.
    """
    new_variant_dir(base, target)
    if dtype == "fp32":
        link_graph(base, target)
        return None
    return builders[dtype](base / "model.onnx", target / "model.onnx")


def variant_entry(dtype: str, folder: Path, recipe: dict[str, Any] | None, parity: dict[str, Any],
                  quality: QualityVerdict | None = None, kv: dict[str, KVEntry] | None = None) -> VariantEntry:
    """The manifest entry of a built variant; one that failed its gates is recorded without files."""
    if quality is not None and not quality.judged:
        logger.warning("%s variant published without its quality gates (--skip-gates): %s", dtype,
                       "; ".join(quality.failures) or "they would pass")
    if quality is not None and not quality.publishable:
        logger.warning("%s variant failed its quality gates, not published: %s", dtype, "; ".join(quality.failures))
        shutil.rmtree(folder)
        files = {}
    else:
        files = file_entries(folder)
    return VariantEntry(
        dtype=dtype, path=dtype, files=files, size=sum(f.size for f in files.values()),
        created_at=utc_now(), quantization=recipe, parity=parity, quality=quality, kv=kv,
    )


def carry_over(info: ModelInfo, source_hash: str, work: Path, variants: dict[str, VariantEntry]) -> None:
    """Keep the old export's other precisions when they came from the same checkpoint."""
    old = info.manifest
    if old is None or old.source_sha256 != source_hash:
        return
    for dtype, entry in old.variants.items():
        if dtype in variants:
            continue
        src = info.onnx_path / entry.path
        try:
            verify_variant(src, entry, info.name)
        except ModelIntegrityError as exc:  # a damaged file is never carried into a new version
            logger.warning("Not keeping the old %s variant: %s", dtype, exc)
            continue
        for rel in entry.files:
            staging.link_or_copy(src / rel, work / entry.path / rel)
        variants[dtype] = entry


def opset_of(model_file: Path) -> int | None:
    import onnx

    model = onnx.load(str(model_file), load_external_data=False)
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def finish_export(
    info: ModelInfo, work: Path, base: Path, *, task: str, source_hash: str,
    variants: dict[str, VariantEntry], progress: Progress, **spec: Any,
) -> Manifest:
    """Carry over untouched precisions, write the manifest and publish the export."""
    carry_over(info, source_hash, work, variants)
    if not any(v.files for v in variants.values()):  # nothing passed, and nothing older to keep
        failures = "; ".join(f"{dtype}: {'; '.join(v.quality.failures) if v.quality else 'no files'}"
                             for dtype, v in sorted(variants.items()))
        raise ExportError(f"Every variant of {info.name} failed its quality gates, so nothing was published "
                          f"({failures}). Export a precision that passes (fp32 always does), e.g. "
                          f"'ortmodels export {info.name} --dtype fp32,{','.join(sorted(variants))}'.")
    config = read_json(base / "config.json")
    shutil.rmtree(base)
    shared = share_identical_files(info.path, work, variants)
    if shared:
        logger.info("%s: %d files identical to an older version's are hard links to them", info.name, shared)
    meter = resources.current()
    first = next(v for v in variants.values() if v.files)
    manifest = Manifest(
        name=info.name,
        kind=info.kind,  # type: ignore[arg-type]  # exporters exist for embedding and chat only
        task=task,
        architecture=(config.get("architectures") or [None])[0],
        model_type=config.get("model_type"),
        source_sha256=source_hash,
        created_at=utc_now(),
        opset=opset_of(work / first.path / "model.onnx"),
        tools=tool_versions(),
        variants=dict(sorted(variants.items())),
        export_cost=meter.figures(checkpoint_bytes(info.path)) if meter else None,
        **spec,
    )
    progress.step("Publishing the export")
    publish_manifest(info, work, manifest)
    return manifest


def share_identical_files(model_dir: Path, work: Path, variants: dict[str, VariantEntry]) -> int:
    """Hard-link each new file to an identical one (same sha256 and size) of an older version.

    Keeping three versions then costs the disk of what changed between them, not three
    exports. Exported files are never written in place, so sharing them is safe; returns
    how many files are shared.
    """
    known: dict[tuple[str, int], list[Path]] = {}
    for version in versions.list_versions(model_dir):
        for entry in version.manifest.variants.values():
            for rel, file in entry.files.items():
                known.setdefault((file.sha256, file.size), []).append(version.path / entry.path / rel)
    shared = 0
    for entry in variants.values():
        for rel, file in entry.files.items():
            new = work / entry.path / rel
            old = next((path for path in known.get((file.sha256, file.size), ())
                        if _still_holds(path, file.sha256, file.size)), None)
            if old is None or not new.is_file() or new.samefile(old):
                continue
            temporary = new.with_name(new.name + ".link")
            try:
                os.link(old, temporary)
            except OSError:  # another file system, or no hard links: keep the copy
                continue
            os.replace(temporary, new)
            shared += 1
    return shared


def _still_holds(path: Path, sha256: str, size: int) -> bool:
    """Whether an older version's file still has the bytes its manifest records: a file damaged
    since (the fix its error names is this very export) must not be linked into the new one."""
    try:
        return path.is_file() and path.stat().st_size == size and file_sha256(path) == sha256
    except OSError:
        return False


def publish_manifest(info: ModelInfo, work: Path, manifest: Manifest) -> None:
    """Write the manifest into the finished export and switch the model over to it."""
    manifest.content_sha256 = content_sha256(manifest)
    stamp = manifest.created_at.replace(":", "").replace("-", "").replace("+0000", "Z")
    manifest.version = f"{stamp}-{manifest.content_sha256[:8]}"
    manifest.write(work)
    staging.publish(info.path, work, manifest.version)


def content_sha256(manifest: Manifest) -> str:
    """One hash of every variant file's path and hash: two exports with equal bytes share it."""
    digest = hashlib.sha256()
    for dtype, entry in sorted(manifest.variants.items()):
        for rel, file in sorted(entry.files.items()):
            digest.update(f"{dtype}/{rel}\0{file.sha256}\n".encode())
    return digest.hexdigest()


# -- the pipeline ----------------------------------------------------------------------------------


Exporter = Callable[[ModelInfo, list[str], str, Progress], Manifest]

#: Exporters by model kind ("module:function", imported when an export of that kind starts:
#: each exporter imports this module's steps), with the precisions each can produce (from the
#: one kinds table).
EXPORTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    name: (spec.exporter, spec.precisions) for name, spec in KINDS.items()
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
    map_large_blocks: bool = False,
) -> ExportOutcome:
    """Export ``name``'s checkpoint in ``dtypes`` (default: every precision its kind supports).

    The new export becomes the active version; of the older ones, all but the ``keep``
    newest versions are pruned (never one that is active or loaded somewhere).
    ``skip_gates`` publishes every variant but fp32 "not judged" whatever its quality
    figures (random-weight checkpoints for benchmarks; `quality`); an export whose
    estimated peak memory exceeds what is available is refused before it starts unless
    ``force_memory`` (`memory_check`). ``int4`` searches smaller int4 recipes of our decoder
    graph (`int4_recipes.SEARCH_MODES`: ``rtn``, or ``gptq`` with calibration too); ``off``
    builds the default recipe alone. ``map_large_blocks`` maps the export's heap blocks of
    64 KB and up on their own (`lifecycle.memory.large_allocations_mapped`; with the reference
    child's own setting and no scikit-learn there, the sample's peak went 1.66x -> 1.52x the
    checkpoint); it fixes glibc's mmap threshold for the rest of the process, so only
    ``ortmodels export``, whose process ends after, asks.
    """
    folder = store.model_dir(name)  # validates the name before any path is used
    if name not in store.names():
        raise UnknownModelError(name, store.names(), store.root)
    with staging.export_lock(folder):
        with int4_search(int4):
            with large_allocations_mapped() if map_large_blocks else nullcontext():
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
    if info.kind == "unknown" and (info.architecture or "").endswith("ForSequenceClassification"):
        labels = classifier_labels(info.config)
        raise ExportError(
            f"{name} is a sequence classifier with {labels} labels ({info.architecture}); ortmodels exports "
            "only one-label ones, the cross-encoders that rerank (query, document) pairs. Its classifier "
            "head would be lost as an embedding model; use a one-label cross-encoder checkpoint."
        )
    if info.kind not in EXPORTERS:
        raise ExportError(
            f"ortmodels cannot export {info.kind} models yet ({name}: {info.architecture}); "
            f"it exports {', '.join(EXPORTERS)} models."
        )
    reference, supported = EXPORTERS[info.kind]
    exporter: Exporter = load(reference)
    dtypes = list(dtypes or supported)
    if info.has_chat_template is False:  # said before the long part, not found by the first chat
        logger.warning(
            "%s has no chat template (no chat_template.jinja, no chat_template in tokenizer_config.json): "
            "it will only continue plain text. Add the model's template as %s (no re-export needed).",
            name, info.path / "chat_template.jinja",
        )
    check_memory(info, dtypes, force=force_memory)  # before hashing: a 16 GB checkpoint takes a while to read
    check_tokenizer_source(info.path)
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
        try:
            verify_variant(info.onnx_path / entry.path, entry, info.name)
        except ModelIntegrityError as exc:  # damaged since: exported again, not "up to date"
            logger.warning("Exporting %s again: %s", dtype, exc)
            return False
    return True

"""Steps every exporter shares: support files, variant entries, carry-over, publication."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import ExportError
from ..store import ModelInfo, read_json, versions
from ..store.manifest import KVEntry, Manifest, QualityVerdict, VariantEntry
from . import resources, staging
from .checkpoint import file_entries, tool_versions, utc_now
from .progress import Progress

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


def require_fast_tokenizer(checkpoint: Path, base: Path) -> None:
    """The runtime tokenizes with `tokenizers` alone, so the export must carry tokenizer.json."""
    if (base / "tokenizer.json").is_file():
        return
    if (checkpoint / "tokenizer.json").is_file():
        shutil.copy2(checkpoint / "tokenizer.json", base / "tokenizer.json")
        return
    raise ExportError(
        f"{checkpoint} has no fast tokenizer (tokenizer.json), and ortmodels tokenizes without "
        "transformers at run time. Save one with transformers: "
        "AutoTokenizer.from_pretrained(folder).save_pretrained(folder), then export again."
    )


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
        missing = [rel for rel in entry.files if not (src / rel).is_file()]
        if missing:
            logger.warning("Not keeping the old %s variant: %s is missing.", dtype, src / missing[0])
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


def checkpoint_bytes(checkpoint: Path) -> int:
    """Bytes of the checkpoint's weight files (what the export's memory bound is measured against)."""
    return sum(p.stat().st_size for p in checkpoint.iterdir()
               if p.is_file() and p.suffix in (".safetensors", ".bin", ".pt", ".pth"))


def share_identical_files(model_dir: Path, work: Path, variants: dict[str, VariantEntry]) -> int:
    """Hard-link each new file to an identical one (same sha256 and size) of an older version.

    Keeping three versions then costs the disk of what changed between them, not three
    exports. Exported files are never written in place, so sharing them is safe; returns
    how many files are shared.
    """
    known: dict[tuple[str, int], Path] = {}
    for version in versions.list_versions(model_dir):
        for entry in version.manifest.variants.values():
            for rel, file in entry.files.items():
                known.setdefault((file.sha256, file.size), version.path / entry.path / rel)
    shared = 0
    for entry in variants.values():
        for rel, file in entry.files.items():
            new, old = work / entry.path / rel, known.get((file.sha256, file.size))
            if old is None or not old.is_file() or not new.is_file() or new.samefile(old):
                continue
            temporary = new.with_name(new.name + ".link")
            try:
                os.link(old, temporary)
            except OSError:  # another file system, or no hard links: keep the copy
                continue
            os.replace(temporary, new)
            shared += 1
    return shared


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

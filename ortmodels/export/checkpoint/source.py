"""Facts about a source checkpoint and the tools: content hashes, file entries, versions."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from ...store.files import file_sha256
from ...store.manifest import FileEntry
from ...store.versions import ONNX_DIR

_EXPORT_TOOLS = ("ortmodels", "optimum-onnx", "optimum", "transformers", "torch", "onnx", "onnxruntime")


def checkpoint_files(folder: Path) -> list[Path]:
    """The files an export is made from: everything but exports, hidden files and docs.

    Markdown (the model card) is left out: editing a card must not make exports stale.
    """
    files = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if rel.parts[0] in (ONNX_DIR,) or any(p.startswith(".") for p in rel.parts) or path.suffix == ".md":
            continue
        if path.is_file():
            files.append(path)
    return files


def source_sha256(folder: Path) -> str:
    """One hash over the checkpoint's file names and contents: changes when any of them does."""
    digest = hashlib.sha256()
    for path in checkpoint_files(folder):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(file_sha256(path).encode())
    return digest.hexdigest()


def file_entries(folder: Path) -> dict[str, FileEntry]:
    """sha256 and size of every file below ``folder``, keyed by relative POSIX path."""
    return {
        path.relative_to(folder).as_posix(): FileEntry(sha256=file_sha256(path), size=path.stat().st_size)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def package_versions(*names: str) -> dict[str, str]:
    """Installed versions of the named distributions; absent ones are left out."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def tool_versions() -> dict[str, str]:
    return package_versions(*_EXPORT_TOOLS)


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def checkpoint_bytes(checkpoint: Path) -> int:
    """Bytes of the checkpoint's weight files (what the export's memory bound is measured against)."""
    return sum(p.stat().st_size for p in checkpoint.iterdir()
               if p.is_file() and p.suffix in (".safetensors", ".bin", ".pt", ".pth"))

"""Atomic exports: build a complete new export beside the old one, then switch in one step.

``models/<name>/onnx`` is a symbolic link to ``models/<name>/.exports/<id>/``. An export
writes a new ``<id>`` folder and replaces the link with ``os.replace`` (atomic on POSIX),
so a reader sees either the old export or the new one, and a failed or interrupted
export leaves the old one untouched. Older exports stay as versions (see
`ortmodels.store.versions`) until pruned.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path

from ..errors import ExportError
from ..store import versions
from ..store.versions import EXPORTS_DIR, ONNX_DIR

logger = logging.getLogger(__name__)


def new_staging_dir(model_dir: Path) -> Path:
    """An empty folder for one export attempt, on the same file system as the live export."""
    root = model_dir / EXPORTS_DIR
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f"tmp-{uuid.uuid4().hex[:12]}"
    staging.mkdir()
    return staging


def link_or_copy(src: Path, dst: Path) -> None:
    """Carry a file into a new export without copying its bytes where the file system allows."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def check_link(model_dir: Path) -> None:
    """Refuse, before any work, a model whose ``onnx`` is not ortmodels' own link."""
    link = model_dir / ONNX_DIR
    if link.exists() and not link.is_symlink():
        raise ExportError(
            f"{link} is a real folder, not an ortmodels export link; move it away and export again."
        )


def publish(model_dir: Path, staging: Path, version_id: str) -> Path:
    """Rename ``staging`` to its version folder and point ``onnx`` at it; older versions stay."""
    check_link(model_dir)
    final = model_dir / EXPORTS_DIR / version_id
    if final.exists():
        raise ExportError(f"Export version {version_id} already exists in {final.parent}.")
    staging.rename(final)
    versions.point_link(model_dir, version_id)
    logger.info("Published export %s for %s", version_id, model_dir.name)
    return final


def discard(staging: Path) -> None:
    shutil.rmtree(staging, ignore_errors=True)


export_lock = versions.model_lock
"""One export (or rollback, or prune) of a model at a time: a second one waits."""


def clean_stale_staging(model_dir: Path) -> None:
    """Remove folders left by exports that were interrupted (a crash, a kill)."""
    root = model_dir / EXPORTS_DIR
    if root.is_dir():
        for child in root.glob("tmp-*"):
            shutil.rmtree(child, ignore_errors=True)

"""Export versions kept side by side: list, activate (roll back), prune, and lease.

Every export is a folder ``models/<name>/.exports/<version>/`` (its id is the export's
time and content hash); ``models/<name>/onnx`` is a link to the active one. A process
that loads a version holds a shared lock on ``.exports/.leases/<version>.lock`` for as
long as the model stays loaded; pruning takes that lock exclusively without waiting, so
a version that is being loaded or used, by this process or another, is never deleted.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import (
    InvalidVersionError,
    ModelFileError,
    ModelIntegrityError,
    UnknownVersionError,
    VersionInUseError,
)
from .integrity import forget_version, refuse_outside_links, verify_variant
from .manifest import MANIFEST_NAME, Manifest, read_manifest

logger = logging.getLogger(__name__)

ONNX_DIR = "onnx"
EXPORTS_DIR = ".exports"
LEASES_DIR = ".leases"
#: Versions kept by ``ortmodels export`` after it publishes a new one (older ones are pruned).
DEFAULT_KEEP = 3

try:  # POSIX advisory locks; on Windows leases are kept within the process only
    import fcntl
except ImportError:  # pragma: no cover - not reached on Linux/macOS
    fcntl = None  # type: ignore[assignment]


@dataclass(frozen=True)
class VersionInfo:
    """One export of a model, as ``ortmodels versions`` shows it."""

    id: str
    path: Path
    created_at: str
    content_sha256: str | None
    source_sha256: str | None
    variants: dict[str, int]
    """Precision → bytes, of the precisions this version can load (not those that failed their gates)."""
    active: bool
    in_use: bool
    manifest: Manifest = field(repr=False, compare=False)
    """The version's manifest, as read for this listing."""

    @property
    def size(self) -> int:
        return sum(self.variants.values())


_VERSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")


def check_version_id(version: object) -> str:
    """``version`` if it can be an export version id; `InvalidVersionError` before any path is built."""
    if not isinstance(version, str) or not _VERSION_ID.fullmatch(version) or version.startswith("tmp-"):
        shown = repr(version) if len(repr(version)) <= 60 else repr(version)[:57] + "..."
        raise InvalidVersionError(
            f"Invalid export version {shown} ({type(version).__name__}): a version is a string id "
            "such as '20261125T170700Z-e4a97f65' (letters, digits, '.', '_', '+', '-', at most 100 "
            "characters). 'ortmodels versions NAME' lists a model's versions."
        )
    return version


def check_keep(keep: object) -> int:
    """``keep`` if it is a whole number of versions of at least 1."""
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise InvalidVersionError(
            f"keep must be a whole number of versions, at least 1; got {keep!r} "
            f"({type(keep).__name__}). E.g. prune(name, keep=2)."
        )
    return keep


def exports_root(model_dir: Path) -> Path:
    return model_dir / EXPORTS_DIR


def active_version(model_dir: Path) -> str | None:
    """The version the ``onnx`` link points to, if it is one of ours."""
    link = model_dir / ONNX_DIR
    if not link.is_symlink():
        return None
    target = link.resolve()
    return target.name if target.parent == exports_root(model_dir).resolve() else None


def _is_version_dir(path: Path) -> bool:
    return path.is_dir() and not path.name.startswith((".", "tmp-"))


def read_version_manifest(folder: Path) -> Manifest | None:
    """The manifest of the export version in ``folder``, refused if it names another version.

    The folder's name is a version's identity: the ``onnx`` link, leases, prune and rollback
    all go by it. A manifest that names another id was copied or edited by hand, and which of
    the two is right cannot be told, so the version is treated as damaged rather than trusted
    under either id (``ps`` would report one id while the files of another are served).
    A manifest without a ``version`` (written before versions existed) takes the folder's name.
    """
    manifest = read_manifest(folder)
    if manifest is not None and manifest.version is not None and manifest.version != folder.name:
        raise ModelFileError(
            folder / MANIFEST_NAME,
            f"Export manifest names version {manifest.version!r}, but its folder is {folder.name!r}",
            "A version's folder name is its id, and the manifest must agree: rename the folder back "
            f"to {manifest.version!r} if it was moved, or delete it and re-export the model.",
        )
    return manifest


def _version_info(model_dir: Path, folder: Path, manifest: Manifest, active: str | None) -> VersionInfo:
    return VersionInfo(
        id=folder.name,
        path=folder,
        created_at=manifest.created_at,
        content_sha256=manifest.content_sha256,
        source_sha256=manifest.source_sha256,
        variants={k: v.size for k, v in manifest.variants.items() if v.usable},
        active=folder.name == active,
        in_use=is_leased(model_dir, folder.name),
        manifest=manifest,
    )


def _scan_versions(model_dir: Path) -> tuple[list[VersionInfo], dict[str, str]]:
    """Every complete export of a model, newest first, and the damaged ones with the reason."""
    root = exports_root(model_dir)
    if not root.is_dir():
        return [], {}
    active = active_version(model_dir)
    found: list[tuple[str, VersionInfo]] = []
    damaged: dict[str, str] = {}
    for folder in root.iterdir():
        if not _is_version_dir(folder):
            continue
        try:
            manifest = read_version_manifest(folder)
        except ModelFileError as exc:
            damaged[folder.name] = str(exc)
            continue
        if manifest is None:
            continue
        found.append((manifest.created_at + folder.name, _version_info(model_dir, folder, manifest, active)))
    return [info for _, info in sorted(found, key=lambda pair: pair[0], reverse=True)], dict(sorted(damaged.items()))


def list_versions(model_dir: Path) -> list[VersionInfo]:
    """Every complete export of a model, newest first; a folder with a bad manifest is skipped
    (`damaged_versions` lists those)."""
    found, damaged = _scan_versions(model_dir)
    for version, problem in damaged.items():
        logger.warning("Skipping export version %s: %s", version, problem)
    return found


def export_hint(model_dir: Path, name: str) -> str:
    """What to run for a model with no active export: a rollback where versions are kept but
    none is active (its ``onnx`` link removed), seconds against an export's minutes; else an export."""
    kept = _scan_versions(model_dir)[0]
    if kept and active_version(model_dir) is None and not (model_dir / ONNX_DIR).exists():
        return (f"Its exports are kept but none is active (the '{ONNX_DIR}' link is missing): "
                f"'ortmodels rollback {name} {kept[0].id}' makes the newest active ('ortmodels versions {name}' "
                f"lists them), or run 'ortmodels export {name}'.")
    return f"Run 'ortmodels export {name}'."


def damaged_versions(model_dir: Path) -> dict[str, str]:
    """Version folders whose manifest cannot be used, each with the reason and the fix: never
    loaded or rolled back to."""
    return _scan_versions(model_dir)[1]


def version_dir(model_dir: Path, version: str) -> Path:
    """The folder of ``version``, or `UnknownVersionError` listing the versions there are."""
    check_version_id(version)
    folder = exports_root(model_dir) / version
    if not (folder / "manifest.json").is_file():
        raise UnknownVersionError(model_dir.name, version, [v.id for v in list_versions(model_dir)])
    return folder


def point_link(model_dir: Path, version: str) -> None:
    """Switch ``onnx`` to ``version`` in one atomic step (``os.replace`` of a fresh link)."""
    tmp_link = model_dir / f".onnx-link-{uuid.uuid4().hex[:8]}"
    os.symlink(Path(EXPORTS_DIR) / version, tmp_link, target_is_directory=True)
    os.replace(tmp_link, model_dir / ONNX_DIR)


@contextmanager
def model_lock(model_dir: Path) -> Iterator[None]:
    """One change to a model's exports at a time (export, rollback, prune), across processes."""
    root = exports_root(model_dir)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as handle:
        if fcntl is None:  # Windows: no advisory locks; changes to one model must not overlap
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def verify_version(model_dir: Path, version: str) -> Manifest:
    """Check every file of ``version`` against the sha256 and size its manifest records.

    What a rollback does before it switches the link: a damaged version is refused with
    `ModelIntegrityError` (or `ModelFileError` for its manifest) naming the file, and the
    link stays where it was. Files checked before and unchanged since are not hashed again.
    """
    folder = version_dir(model_dir, version)
    try:
        manifest = read_version_manifest(folder)
        if manifest is None:  # removed since version_dir looked
            raise UnknownVersionError(model_dir.name, version, [v.id for v in list_versions(model_dir)])
        for entry in manifest.variants.values():
            if entry.files:
                variant_folder = folder / entry.path
                refuse_outside_links(variant_folder, folder)
                verify_variant(variant_folder, entry, model_dir.name)
    except ModelFileError as exc:
        active = active_version(model_dir)
        fix = f"The onnx link stays at {active}" if active else "The onnx link was not changed"
        if isinstance(exc, ModelIntegrityError) or not exc.fix:
            fix += (f". Roll back to another version ('ortmodels versions {model_dir.name}' lists them), "
                    f"or re-run 'ortmodels export {model_dir.name} --force' for a fresh one.")
        else:
            fix += f". {exc.fix}"
        raise type(exc)(exc.path, f"Cannot roll back {model_dir.name} to damaged version {version}: "
                        f"{exc.problem}", fix) from None
    return manifest


def activate(model_dir: Path, version: str, before_switch: Callable[[], None] | None = None) -> VersionInfo:
    """Make ``version`` the one loaded by default (``ortmodels rollback``), all or nothing.

    The version's manifest and files are verified first, then ``before_switch`` runs (the
    manager stops calls on the replaced version there); if either raises, the link is not
    touched. Both run under `model_lock`, so no export or prune changes the version meanwhile.
    """
    check_version_id(version)
    with model_lock(model_dir):
        manifest = verify_version(model_dir, version)
        if before_switch is not None:
            before_switch()
        point_link(model_dir, version)
    logger.info("Model %s now uses export version %s", model_dir.name, version)
    return _version_info(model_dir, exports_root(model_dir) / version, manifest, version)


def prune(model_dir: Path, keep: int) -> list[str]:
    """Delete all but the ``keep`` newest versions; the active one and leased ones are kept.

    Returns the ids deleted. ``keep`` counts the newest versions whatever their state.
    """
    with model_lock(model_dir):
        return prune_locked(model_dir, keep)


def prune_locked(model_dir: Path, keep: int) -> list[str]:
    """`prune` for a caller that already holds `model_lock` (the exporter)."""
    check_keep(keep)
    removed = []
    for info in list_versions(model_dir)[keep:]:
        if info.active:
            continue
        if _delete_unless_leased(model_dir, info.id):
            removed.append(info.id)
        else:
            logger.info("Keeping export version %s of %s: it is in use.", info.id, model_dir.name)
    return removed


def delete_version(model_dir: Path, version: str) -> None:
    """Delete one version that is neither active nor in use."""
    with model_lock(model_dir):
        version_dir(model_dir, version)
        if version == active_version(model_dir):
            raise VersionInUseError(
                f"Version {version} of {model_dir.name} is the active one; roll back to another "
                f"first ('ortmodels rollback {model_dir.name} VERSION')."
            )
        if not _delete_unless_leased(model_dir, version):
            raise VersionInUseError(
                f"Version {version} of {model_dir.name} is loaded by a running process; unload it "
                "there first ('ortmodels ps' shows which)."
            )


# -- leases -------------------------------------------------------------------------------------

_local_leases: dict[tuple[str, str], int] = {}
_local_lock = threading.Lock()


def _lease_file(model_dir: Path, version: str) -> Path:
    return exports_root(model_dir) / LEASES_DIR / f"{version}.lock"


def _lease_key(model_dir: Path, version: str) -> tuple[str, str]:
    return os.path.realpath(model_dir), version


def _leased_here(model_dir: Path, version: str) -> bool:
    with _local_lock:
        return bool(_local_leases.get(_lease_key(model_dir, version)))


class VersionLease:
    """A shared hold on one version: while it is held, prune and delete leave the version alone."""

    def __init__(self, model_dir: Path, version: str) -> None:
        self.model_dir, self.version = model_dir, version
        path = _lease_file(model_dir, version)
        self._key = _lease_key(model_dir, version)
        self._handle: int | None = None
        with _local_lock:
            _local_leases[self._key] = _local_leases.get(self._key, 0) + 1
        if fcntl is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError:
                pass
            try:  # read-only is enough for flock; O_CREAT needs no write access to an existing file
                self._handle = os.open(path, os.O_RDONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
                fcntl.flock(self._handle, fcntl.LOCK_SH)
            except OSError as exc:  # a read-only store: this process's own leases still count
                logger.debug("No lease file for %s/%s: %s", model_dir.name, version, exc)
                self._close()
        if not (exports_root(model_dir) / version / "manifest.json").is_file():
            self.release()
            raise UnknownVersionError(model_dir.name, version, [v.id for v in list_versions(model_dir)])

    def release(self) -> None:
        with _local_lock:
            count = _local_leases.get(self._key, 0)
            if count <= 1:
                _local_leases.pop(self._key, None)
            else:
                _local_leases[self._key] = count - 1
        self._close()

    def _close(self) -> None:
        if self._handle is not None:
            os.close(self._handle)  # closing drops the flock
            self._handle = None


def is_leased(model_dir: Path, version: str) -> bool:
    """True when this process or another holds a lease on ``version``."""
    if _leased_here(model_dir, version):
        return True
    path = _lease_file(model_dir, version)
    if fcntl is None or not path.is_file():
        return False
    try:
        with open(path) as handle:  # read-only: works on a store this user cannot write
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
    except OSError:
        return False
    return False


def _delete_unless_leased(model_dir: Path, version: str) -> bool:
    if _leased_here(model_dir, version):
        return False
    path = _lease_file(model_dir, version)
    folder = exports_root(model_dir) / version
    if fcntl is None:
        (folder / "manifest.json").unlink(missing_ok=True)
        shutil.rmtree(folder, ignore_errors=True)
        forget_version(exports_root(model_dir), version)
        return True
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        # Remove the manifest first: a loader that gets its lease after this finds no version.
        (folder / "manifest.json").unlink(missing_ok=True)
        shutil.rmtree(folder, ignore_errors=True)
        forget_version(exports_root(model_dir), version)
        path.unlink(missing_ok=True)
    logger.info("Deleted export version %s of %s", version, model_dir.name)
    return True

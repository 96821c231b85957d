"""Check a variant's files against the sha256 and size its manifest records, once per change.

Hashing a 500 MB graph costs about a second, so a file that passed is remembered by its
size, modification and change times and inode, in memory and in ``.exports/.verified/<version>.json``
beside the export (when the store is writable): a later load, in this process or a new
one, re-hashes only files that changed since. Figures a load derives from one of those
files (a tokenizer's vocabulary bounds) are kept the same way, by the file's stamp, in
``.exports/.verified/<version>.figures.json`` (`remembered_figures`), and a form of a file
the load parses faster (a tokenizer's, `remembered_form`) beside it; all three go when their
version is deleted (`forget_version`).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from stat import S_ISREG

from ..errors import ModelFileError, ModelIntegrityError
from .files import atomic_write_text, file_sha256
from .manifest import VariantEntry

logger = logging.getLogger(__name__)

VERIFIED_DIR = ".verified"
FIGURES_SUFFIX = ".figures.json"
_FIX = "Re-run 'ortmodels export {name} --force', or roll back with 'ortmodels rollback {name} VERSION'."
#: A file changed in place that other versions share (identical files are hard links): they are
#: damaged too, so a rollback would not help.
_SHARED_FIX = ("The file is shared with the model's other export versions (identical files are hard links), "
               "so they hold the same damage: re-run 'ortmodels export {name} --force'.")

_memo: dict[str, tuple[int, int, int, int, str]] = {}
_memo_lock = threading.Lock()


def _stamp(stat: os.stat_result) -> tuple[int, int, int, int]:
    """What must be unchanged for a file to count as still checked: an edit in place that
    restores the mtime still moves the ctime, which no user call can set back."""
    return stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino


def resolve_inside(base: Path, relative: str, what: str = "file") -> Path:
    """``base / relative`` if its real path (links followed) lies inside ``base``'s real path.

    Every path an export manifest names goes through here, so a changed manifest or a link
    placed in an export cannot make ortmodels read or hash a file outside its export.
    """
    path = base / relative
    root = base.resolve()
    real = path.resolve()
    if real != root and root not in real.parents:
        raise ModelFileError(
            path, f"The export manifest names a {what} outside its export version ({real})",
            "Exports never point outside their folder: re-run 'ortmodels export' for this model.",
        )
    return path


def refuse_outside_links(folder: Path, root: Path) -> None:
    """Refuse a variant folder holding a link that leads outside ``root`` (its export version)."""
    real_root = root.resolve()
    for entry in folder.rglob("*"):
        if entry.is_symlink():
            real = entry.resolve()
            if real != real_root and real_root not in real.parents:
                raise ModelFileError(
                    entry, f"A link in the export leads outside it ({real})",
                    "Remove the link and re-run 'ortmodels export' for this model.",
                )


def _record_file(folder: Path) -> Path | None:
    """``.exports/.verified/<version>.json`` for a variant folder inside a version, else ``None``."""
    version_dir = folder.parent
    if version_dir.parent.name != ".exports":
        return None
    return version_dir.parent / VERIFIED_DIR / f"{version_dir.name}.json"


def _read_record(path: Path | None) -> dict[str, list]:
    if path is None or not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_record(path: Path | None, record: dict[str, list]) -> None:
    if path is None:
        return
    try:
        atomic_write_text(path, json.dumps(record))
    except OSError as exc:  # a read-only store: the check is simply paid again next time
        logger.debug("Could not remember verified files in %s: %s", path, exc)


def _damage_fix(stat: os.stat_result, model_name: str) -> str:
    """What mends a file changed in place: what changed a hard-linked one changed every version
    that links it, so only a re-export does."""
    return (_SHARED_FIX if stat.st_nlink > 1 else _FIX).format(name=model_name)


def verify_variant(folder: Path, entry: VariantEntry, model_name: str) -> int:
    """Raise `ModelIntegrityError` naming the first missing, truncated or changed file.

    Returns how many files were hashed (0 when every file was remembered as checked).
    """
    fix = _FIX.format(name=model_name)
    record_path = _record_file(folder)
    record = _read_record(record_path)
    hashed = 0
    changed = False
    for rel, expected in sorted(entry.files.items()):
        path = resolve_inside(folder, rel)
        try:
            stat = path.stat()
        except FileNotFoundError:
            raise ModelIntegrityError(path, "Missing model file", fix) from None
        except OSError as exc:
            raise ModelIntegrityError(path, f"Unreadable model file ({exc.strerror})", fix) from None
        if not S_ISREG(stat.st_mode):  # a device or a fifo would be hashed for ever
            raise ModelIntegrityError(path, "Model file is not a regular file", fix)
        if stat.st_size != expected.size:
            raise ModelIntegrityError(
                path, f"Model file has {stat.st_size} bytes, the manifest records {expected.size} "
                "(truncated or replaced)", _damage_fix(stat, model_name),
            )
        key = str(path)
        stamp = _stamp(stat)
        with _memo_lock:
            known = _memo.get(key)
        if known == (*stamp, expected.sha256):
            continue
        on_disk = record.get(f"{folder.name}/{rel}")
        if on_disk == [*stamp, expected.sha256]:
            with _memo_lock:
                _memo[key] = (*stamp, expected.sha256)
            continue
        try:
            actual = file_sha256(path)
        except OSError as exc:
            raise ModelIntegrityError(path, f"Unreadable model file ({exc.strerror})", fix) from None
        hashed += 1
        if actual != expected.sha256:
            raise ModelIntegrityError(
                path, f"Model file changed: sha256 {actual[:12]}…, the manifest records "
                f"{expected.sha256[:12]}…", _damage_fix(stat, model_name),
            )
        with _memo_lock:
            _memo[key] = (*stamp, expected.sha256)
        record[f"{folder.name}/{rel}"] = [*stamp, expected.sha256]
        changed = True
    if changed:
        _write_record(record_path, record)
    return hashed


def _figures_beside(record_path: Path) -> Path:
    """The record of figures derived from a folder's files, beside its integrity record."""
    return record_path.with_name(record_path.stem + FIGURES_SUFFIX)


def remembered_figures(path: Path, what: str, count: int, compute: Callable[[], tuple[int, ...]]
                       ) -> tuple[int, ...]:
    """``compute()``'s ``count`` whole numbers about the file ``path`` of a variant folder, read
    back instead where a process already computed them for this very file (its stamp, as in
    `verify_variant`).

    For work a load repeats on unchanged files: reading a 49k-token vocabulary for its bounds
    took 20-40 ms of every ``ortmodels chat`` start, holding the GIL while the session opened.
    Kept beside the integrity record; recomputed when the file changed, a record is damaged,
    or the folder is not inside an export version; never kept in a read-only store.
    """
    record_path = _record_file(path.parent)
    if record_path is not None:
        record_path = _figures_beside(record_path)
    key = f"{what}:{path.parent.name}/{path.name}"
    try:
        stamp = list(_stamp(path.stat()))
    except OSError:
        return compute()  # the caller's own read of the file reports it
    record = _read_record(record_path)
    known = record.get(key)
    if isinstance(known, list) and known[:len(stamp)] == stamp and len(known) == len(stamp) + count \
            and all(type(v) is int for v in known[len(stamp):]):
        return tuple(known[len(stamp):])
    figures = tuple(compute())
    if len(figures) != count:
        raise ValueError(f"{what} gave {len(figures)} figures, not {count}")
    record[key] = [*stamp, *figures]
    _write_record(record_path, record)
    return figures


def remembered_form(path: Path, what: str, make: Callable[[], str | None]) -> str | None:
    """Another form of the file ``path`` of a variant folder (``make()``'s text; ``None``: it has
    none), read back where a process already made it for this very file (its stamp, as in
    `verify_variant`); ``None`` without calling ``make`` where it could not be kept (a folder
    outside an export version, a read-only store): making it costs more than it saves once.

    For a file a load parses on every start, when the library parses another form of it
    faster (a tokenizer's merges). The form is ``.exports/.verified/<version>.<variant>.<what>``,
    taken only while both its own stamp and the original's are the ones recorded with it in
    the figures record (`remembered_figures`), so a changed or replaced form is made again.
    """
    record_path = _record_file(path.parent)
    if record_path is None:
        return None
    figures_path = _figures_beside(record_path)
    form_path = record_path.with_name(f"{record_path.stem}.{path.parent.name}.{what}")
    key = f"form:{what}:{path.parent.name}/{path.name}"
    try:
        stamp = list(_stamp(path.stat()))
    except OSError:
        return None  # the caller's own read of the file reports it
    record = _read_record(figures_path)
    known = record.get(key)
    if isinstance(known, list) and known[:len(stamp)] == stamp:
        if known[len(stamp):] == []:  # made before: this file has no other form
            return None
        try:
            if known[len(stamp):] == list(_stamp(form_path.stat())):
                return form_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            pass
    text = make()
    try:
        if text is None:
            form_path.unlink(missing_ok=True)
            record[key] = stamp
        else:
            atomic_write_text(form_path, text)
            record[key] = [*stamp, *_stamp(form_path.stat())]
        atomic_write_text(figures_path, json.dumps(record))
    except OSError as exc:  # a read-only store: the original is parsed every time
        logger.debug("Could not keep %s of %s: %s", what, path, exc)
    return text


def forget(folder: Path) -> None:
    """Drop what this process remembers of ``folder``'s files (tests, repairs)."""
    prefix = str(folder)
    with _memo_lock:
        for key in [k for k in _memo if k.startswith(prefix)]:
            del _memo[key]


def forget_version(exports: Path, version: str) -> None:
    """Delete what was kept of a deleted export version's files in ``exports/.verified``: its
    integrity record, its figures and the other forms of files those name (each named exactly,
    not by a pattern: a version id may hold dots, so ``v1.*`` could be another version's)."""
    record_path = exports / VERIFIED_DIR / f"{version}.json"
    figures_path = _figures_beside(record_path)
    for key in _read_record(figures_path):
        what, _, file = key.removeprefix("form:").partition(":")
        if key.startswith("form:") and "/" in file:
            _unlink_quietly(record_path.with_name(f"{version}.{file.split('/', 1)[0]}.{what}"))
    for path in (figures_path, record_path):
        _unlink_quietly(path)
    forget(exports / version)


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:  # a read-only store: the leftovers are small and harmless
        logger.debug("Could not delete %s: %s", path, exc)

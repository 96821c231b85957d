"""``ortmodels chat NAME ...``: the session a plain start opened last time, opened again before
pydantic, the settings and the store are imported, when nothing it depended on has changed.

`cli._open_early` chooses the graph through the settings and the store (pydantic, the manifest,
the file checks: 0.1 s of imports and reading before ONNX Runtime starts building the session),
then `remember` keeps what it opened (the graph, device, threads) beside the export
(``NAME/.exports/.early-chat.json``, by the command's model word, the last `KEPT`) with a fingerprint of what the
choice read: the values of every setting's environment variable, the ``.env`` file's stamp, the
models folder, the ``onnx`` link's target, the providers onnxruntime offers, and the stamp
(size, mtime, ctime, inode, as `store.integrity` keeps them) of the version's manifest and of
every file in the variant's folder. The next start (`start`) compares that fingerprint, with
only `os`, `json` and onnxruntime imported, and on a match starts the same session at once
(`engine.session.open_early`). The usual choice still runs afterwards, with its checks, and
takes that session only if it would open the very same graph the same way; anything else
(a changed file, setting or export) misses the fingerprint or the key, and the choice opens
its own. A file whose stamp changed since a verified start is never opened this way.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..engine.session import EarlyKey

#: The file, under a model's ``.exports`` folder, that holds the hints (by model word).
HINT_FILE = ".early-chat.json"
#: Hints kept per model word, the latest first (starts under other settings do not undo each other's).
KEPT = 4
_FORMAT = 2
_DOTENV = ".env"
_MODELS_DIR = "local_models_dir"
_DEFAULT_MODELS_DIR = "models"


def _stamp(path: str) -> list[int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]


def _environment() -> dict[str, str]:
    """The environment as pydantic-settings reads it (names lower-cased, the last one winning)."""
    return {name.lower(): value for name, value in os.environ.items()}


def _models_dir(environment: dict[str, str]) -> str | None:
    """``LOCAL_MODELS_DIR`` as the settings will read it, absolute; ``None`` where only the
    ``.env`` file could say (it is not parsed here)."""
    given = environment.get(_MODELS_DIR)
    if given is None:
        if os.path.exists(_DOTENV):
            return None
        given = _DEFAULT_MODELS_DIR
    return os.path.abspath(given)


def _model_folder(models_dir: str, word: str) -> str | None:
    name = word.partition(":")[0]
    if not name or name.startswith(".") or "/" in name or "\\" in name:
        return None
    return os.path.join(models_dir, name)


def _inside(path: str, folder: str) -> bool:
    """Whether ``path``, links resolved, is a file under ``folder`` (its export versions are)."""
    root = os.path.realpath(folder)
    return os.path.commonpath([os.path.realpath(path), root]) == root and os.path.realpath(path) != root


def _fingerprint(models_dir: str, model_folder: str, graph: str, names: list[str],
                 environment: dict[str, str], providers: list[str]) -> dict[str, Any] | None:
    """What the choice of ``graph`` read, as compared between two starts; ``None`` when the
    model's ``onnx`` folder is not a link to one of its export versions."""
    try:
        active = os.readlink(os.path.join(model_folder, "onnx"))
    except OSError:
        return None
    variant = os.path.dirname(graph)
    try:
        # hidden entries are caches kept beside the export (its warm copy, `engine.warm_copy`), not its files
        files = sorted(entry.name for entry in os.scandir(variant) if not entry.name.startswith("."))
    except OSError:
        return None
    return {
        "models": models_dir,
        "env": {name: environment.get(name) for name in names},
        "dotenv": _stamp(os.path.abspath(_DOTENV)),
        "active": active,
        "providers": providers,
        "manifest": _stamp(os.path.join(os.path.dirname(variant), "manifest.json")),
        "files": {name: _stamp(os.path.join(variant, name)) for name in files},
    }


def _read(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            hints = json.load(handle)
    except (OSError, ValueError):
        return {}
    return hints if isinstance(hints, dict) and hints.get("format") == _FORMAT else {}


def start(word: str) -> bool:
    """Start opening the session ``ortmodels chat WORD`` opened last time, if nothing its choice
    read has changed since (see the module); whether one was started."""
    environment = _environment()
    models_dir = _models_dir(environment)
    folder = None if models_dir is None else _model_folder(models_dir, word)
    if models_dir is None or folder is None:
        return False
    hints = _read(os.path.join(folder, ".exports", HINT_FILE)).get("hints", {})
    kept = hints.get(word) if isinstance(hints, dict) else None
    if not isinstance(kept, list):
        return False
    from ..engine.session import available_providers, open_early

    providers = available_providers()
    for hint in kept:
        key = hint.get("key") if isinstance(hint, dict) else None
        if not (isinstance(key, list) and len(key) == 6 and isinstance(key[0], str) and isinstance(key[1], str)
                and type(key[2]) is int and all(type(v) is bool for v in key[3:])
                and isinstance(hint.get("names"), list)):
            continue
        if not _inside(key[0], folder):  # the hint file is data: nothing outside the model's folder is opened
            continue
        if _fingerprint(models_dir, folder, key[0], hint["names"], environment, providers) == hint.get("fingerprint"):
            open_early(Path(key[0]), key[1], key[2], key[3], key[4], key[5], retry=True)
            return True
    return False


def remember(word: str, models_dir: Path, key: EarlyKey, names: list[str]) -> None:
    """Keep ``key`` (what `engine.session.open_early` was given) as what ``ortmodels chat WORD``
    opens, with the fingerprint of what chose it; ``names``: the settings' environment variables.
    Nothing is written when the same is kept already, or where the folder is not writable."""
    from ..engine.session import available_providers

    models = os.path.abspath(models_dir)
    folder = _model_folder(models, word)
    if folder is None:
        return
    names = sorted({name.lower() for name in names})
    fingerprint = _fingerprint(models, folder, key[0], names, _environment(), available_providers())
    if fingerprint is None:
        return
    path = os.path.join(folder, ".exports", HINT_FILE)
    hints = _read(path)
    entry = json.loads(json.dumps({"names": names, "key": list(key), "fingerprint": fingerprint}))
    kept = hints.get("hints") if isinstance(hints.get("hints"), dict) else {}
    before = kept.get(word) if isinstance(kept.get(word), list) else []
    if before[:1] == [entry]:
        return
    kept = {**kept, word: [entry, *[e for e in before if e != entry]][:KEPT]}
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump({"format": _FORMAT, "hints": kept}, handle)
        os.replace(temporary, path)
    except OSError:
        try:
            os.unlink(temporary)
        except OSError:
            pass

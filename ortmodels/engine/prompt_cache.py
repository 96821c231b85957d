"""The KV cache of earlier prompts, kept so a later prompt with the same start skips it.

A chat's next turn repeats the whole conversation so far; its prompt shares a long prefix
(system prompt, earlier turns) with the last turn's. Prefilling only the new tokens on top
of a cached prefill gives exactly the logits of one full prefill (max diff 0.0 in fp32 and
int4), so no other graph is needed. A cached sequence longer than the shared prefix is cut
to it (the cache is sliced along the sequence axis), and at least `MIN_PREFILL` prompt
tokens are always left to prefill: a one-token prefill takes the one-row kernels, whose
logits differ from a full prefill's (0.47 in int4, 0.69 in int8, 3e-5 in fp32 on the
sample, enough to change an int4 answer), while two or more tokens give exactly its logits.

Only caches made by prefill are kept, not the positions a request's decode steps added:
one-row decode steps compute keys/values that differ from a prefill's (on the sample, up
to 2e-5 in fp32 and 0.7 in int4, whose one-row MatMulNBits takes another kernel), and
reusing those changed int4 greedy tokens in a 5-turn chat. So a turn re-prefills the
previous answer, and the cached prefix gives the very tokens no cache gives.

Sliding-window layers (`DecoderSession.sliding`) hold only the last tokens of an entry (at
least ``keep``, the window less one), so an entry serves a shorter prefix of itself only
while its sliding caches still hold that prefix's last ``keep`` tokens (`_Entry.serves`); a
prompt that would need older ones does not take it (it is prefilled from scratch, or from
another entry that serves it), and a shorter entry is not dropped for a longer one that
cannot serve it.

Entries are bounded in bytes and dropped least recently used first; 0 bytes turns it off.
Only the engine's scheduler thread uses it, so it has no lock (`save` and `restore` run
while the engine is idle: before its first request, after its close).

`save` writes the entries to one ``.npz`` file (llama-server's slot save/restore, for the
whole cache), `restore` reads them back: the file records who made it (`CacheIdentity`: the
model, its export version, variant and KV precision, and the cache's shape), and a file of
another identity, a damaged one or one whose arrays do not fit is ignored with a log line, so
a stale cache is never used. A save writes ``<file>.<host>.<pid>.part`` and renames it; the
``.part`` files a killed save left behind are removed by the next save or restore in that
folder (`clean_partials`), while a save still running elsewhere keeps its own.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigurationError

logger = logging.getLogger(__name__)

#: Prompt tokens always prefilled, cache or not: a multi-row prefill reproduces a full one exactly.
MIN_PREFILL = 2


#: The file layout `save` writes; a file of another layout is ignored.
FILE_FORMAT = 1

#: The end of every saved cache's file name (`CacheIdentity.file_name`).
SUFFIX = ".promptcache.npz"

#: A ``.part`` file nobody wrote to for this long is a killed save's, whichever host wrote it.
STALE_PART_S = 3600.0

#: This host's name as a ``.part`` file carries it (a save on another host sharing the folder
#: cannot be asked whether its process still runs).
_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:64] or "host"


@dataclass(frozen=True)
class CacheIdentity:
    """What a saved cache is valid for: a file is read back only into the very same."""

    model: str
    version: str | None
    """The model's export version (``None``: an export from before versioning)."""
    variant: str
    kv_dtype: str
    """The cache's numpy dtype name (``float16``, ``float32``)."""
    layers: int
    """Cache inputs (a key and a value per layer)."""
    kv_heads: int
    head: int

    def file_name(self) -> str:
        """``<model>.<version>.<variant>.<kv dtype>.promptcache.npz``: one file per identity."""
        return f"{self.model}.{self.version or 'unversioned'}.{self.variant}.{self.kv_dtype}{SUFFIX}"


@dataclass
class _Entry:
    ids: np.ndarray  # int64, the tokens whose keys/values ``past`` holds
    past: list[np.ndarray]  # [1, kv, len(ids), head] per cache input; a sliding one holds the last tokens only

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.past) + self.ids.nbytes

    def serves(self, n: int, keep: int) -> bool:
        """Whether the first ``n`` tokens' cache can be cut from this entry: every array holds
        their last ``keep`` tokens (a full-history one holds them all)."""
        length = len(self.ids)
        return all(length - a.shape[2] <= max(0, n - keep) for a in self.past)

    def cut(self, n: int, sliding: Sequence[bool]) -> list[np.ndarray]:
        """The cache of the first ``n`` tokens (`serves` said it can): full-history arrays cut
        to ``n`` positions, sliding ones to what they hold of those (at least the last ``keep``)."""
        length = len(self.ids)
        return [np.ascontiguousarray(a[:, :, : a.shape[2] - (length - n)]) if slides
                else np.ascontiguousarray(a[:, :, :n])
                for a, slides in zip(self.past, list(sliding) or [False] * len(self.past))]


def common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    """How many leading ids two arrays share."""
    n = min(len(a), len(b))
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if differ.size else n


class PromptCache:
    """Prefilled prompts' caches by their token ids, LRU within ``max_bytes``."""

    def __init__(self, max_bytes: int = 0, sliding: Sequence[bool] = (), keep: int = 0) -> None:
        """``sliding``: which cache inputs hold only a window (none by default); ``keep``: the
        tokens before a new query those must hold (`DecoderSession.keep`)."""
        if not isinstance(max_bytes, int) or max_bytes < 0:
            raise ConfigurationError(
                f"prompt cache size must be a whole number of bytes >= 0 (0 = off), not {max_bytes!r}."
            )
        self.max_bytes = max_bytes
        self.sliding, self.keep = tuple(sliding), keep if any(sliding) else 0
        self._entries: OrderedDict[int, _Entry] = OrderedDict()
        self._nbytes = 0  # kept as entries come and go: other threads read it (memory figures)
        self._next = 0
        self.hits = 0
        self.misses = 0

    @property
    def nbytes(self) -> int:
        """Bytes held; safe to read from any thread (a number, not a walk over the entries)."""
        return self._nbytes

    def __len__(self) -> int:
        return len(self._entries)

    def _longest(self, prompt_ids: list[int]) -> tuple[int | None, int]:
        """(key, n) of the entry serving the longest usable prefix of the prompt, (None, 0) if none."""
        prompt = np.asarray(prompt_ids, dtype=np.int64)
        best_key, best = None, 0
        for key, entry in self._entries.items():
            shared = min(common_prefix(entry.ids, prompt), len(prompt) - MIN_PREFILL)
            if shared > best and entry.serves(shared, self.keep):
                best_key, best = key, shared
        return best_key, best

    def cached_length(self, prompt_ids: list[int]) -> int:
        """How many of the prompt's tokens `lookup` would take from the cache now (nothing is
        counted or reordered: the scheduler asks it of waiting requests to choose the next)."""
        return self._longest(prompt_ids)[1] if self._entries else 0

    def lookup(self, prompt_ids: list[int]) -> tuple[int, list[np.ndarray] | None]:
        """(n, cache of the first n prompt tokens) for the longest usable cached prefix, else (0, None)."""
        if not self._entries:
            return 0, None
        best_key, best = self._longest(prompt_ids)
        if best_key is None:
            self.misses += 1
            return 0, None
        self.hits += 1
        self._entries.move_to_end(best_key)
        entry = self._entries[best_key]
        return best, entry.cut(best, self.sliding)

    def store(self, ids: list[int], past: list[np.ndarray]) -> None:
        """Keep ``past``, the prefill-made cache of ``ids`` (arrays nobody writes to afterwards)."""
        if not self.max_bytes or not ids:
            return
        entry = _Entry(np.asarray(ids, dtype=np.int64), past)
        if entry.nbytes > self.max_bytes:
            logger.debug("Not caching a %d-token sequence: %d bytes > the cache's %d", len(ids), entry.nbytes,
                         self.max_bytes)
            return
        for key, old in list(self._entries.items()):
            shared = common_prefix(old.ids, entry.ids)
            if shared == len(entry.ids) and old.serves(shared, self.keep):  # already covered by a longer entry
                self._entries.move_to_end(key)
                return
            if shared == len(old.ids) and entry.serves(shared, self.keep):  # the new entry covers the old one
                del self._entries[key]
                self._nbytes -= old.nbytes
        self._entries[self._next] = entry
        self._next += 1
        self._nbytes += entry.nbytes
        while self._nbytes > self.max_bytes:
            _, dropped = self._entries.popitem(last=False)
            self._nbytes -= dropped.nbytes

    def clear(self) -> None:
        self._entries.clear()
        self._nbytes = 0

    # -- on disk --------------------------------------------------------------------------------

    def save(self, folder: Path, identity: CacheIdentity) -> Path | None:
        """Write the entries (least recently used first) to ``folder`` / `CacheIdentity.file_name`,
        atomically; nothing written for an empty cache. Returns the file, or ``None``."""
        if not self._entries:
            return None
        path = _cache_file(folder, identity)
        arrays: dict[str, np.ndarray] = {"identity": np.array(json.dumps({"format": FILE_FORMAT, **asdict(identity)}))}
        for n, entry in enumerate(self._entries.values()):
            arrays[f"ids_{n}"] = entry.ids
            for layer, past in enumerate(entry.past):
                arrays[f"past_{n}_{layer}"] = past
        path.parent.mkdir(parents=True, exist_ok=True)
        clean_partials(path.parent)
        partial = path.with_name(f"{path.name}.{_HOST}.{os.getpid()}.part")
        try:
            with partial.open("wb") as out:
                np.savez(out, **arrays)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
        logger.info("Saved %d prompt cache entries (%d bytes) to %s", len(self._entries), self._nbytes, path)
        return path

    def restore(self, folder: Path, identity: CacheIdentity) -> int:
        """Read back what `save` wrote for ``identity`` (within ``max_bytes``); the entries read.
        A missing file reads nothing; another identity's, a damaged or a misshapen one is
        ignored with a warning, never used."""
        path = _cache_file(folder, identity)
        if Path(folder).is_dir():
            clean_partials(Path(folder))
        if not self.max_bytes or not path.is_file():
            return 0
        try:
            entries = _read(path, identity, self.sliding, self.keep)
        except Exception as exc:  # noqa: BLE001 - a damaged file of any kind is ignored, never a failed load
            logger.warning("Ignoring the saved prompt cache %s: %s", path, exc)
            return 0
        for entry in entries:
            self.store(entry.ids.tolist(), entry.past)
        logger.info("Restored %d prompt cache entries (%d bytes) from %s", len(self._entries), self._nbytes, path)
        return len(self._entries)


def clean_partials(folder: Path) -> list[Path]:
    """Remove the ``.part`` files killed saves left in ``folder``: one this host wrote whose
    process is gone, or any nobody wrote to for `STALE_PART_S` (another host's, whose process
    cannot be asked). A save still running keeps its file. Returns the files removed; a file
    that cannot be read or removed is left, with a debug line."""
    removed = []
    now = time.time()
    try:
        partials = sorted(folder.glob(f"*{SUFFIX}.*.part"))
    except OSError:
        return []
    for partial in partials:
        try:
            if _killed(partial, now):
                partial.unlink()
                removed.append(partial)
        except OSError as exc:
            logger.debug("Could not check or remove %s: %s", partial, exc)
    if removed:
        logger.info("Removed %d unfinished prompt cache file(s) that killed saves left in %s: %s", len(removed),
                    folder, ", ".join(p.name for p in removed))
    return removed


def _killed(partial: Path, now: float) -> bool:
    """Whether ``partial`` (``<file>.<host>.<pid>.part``, or ``<file>.<pid>.part`` from before
    hosts were named) is a save that will never finish."""
    if now - partial.stat().st_mtime > STALE_PART_S:
        return True
    writer = partial.name[partial.name.rindex(SUFFIX) + len(SUFFIX) + 1:-len(".part")]
    host, _, pid = writer.rpartition(".")
    if host not in ("", _HOST) or not pid.isdigit():
        return False  # another host's, and recent: it may still be writing
    return not _running(int(pid))


def _running(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (Windows, where signal 0 is not a probe: assumed so)."""
    if pid == os.getpid() or os.name == "nt":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's: it runs
        return True
    return True


def _cache_file(folder: Path, identity: CacheIdentity) -> Path:
    """The cache file of ``identity`` in ``folder``; its name never leaves the folder."""
    name = identity.file_name()
    if "/" in name or "\\" in name or name.startswith("."):
        raise ConfigurationError(f"A prompt cache file name must stay inside {folder}, not {name!r}.")
    return Path(folder) / name


def _read(path: Path, identity: CacheIdentity, sliding: Sequence[bool] = (), keep: int = 0) -> list[_Entry]:
    """The entries of a saved cache, each checked against ``identity`` (a sliding cache input may
    hold fewer positions, at least the last ``keep``); ValueError when one is off."""
    with np.load(path, allow_pickle=False) as saved:
        recorded = json.loads(str(saved["identity"]))
        expected = {"format": FILE_FORMAT, **asdict(identity)}
        if not isinstance(recorded, dict):
            raise ValueError("its identity is not a record of model, export and KV precision")
        if recorded != expected:
            differ = sorted(k for k in expected.keys() | recorded.keys() if recorded.get(k) != expected.get(k))
            raise ValueError(f"it was saved for another model, export or KV precision ({', '.join(differ)} differ)")
        entries = []
        for n in range(len([k for k in saved.files if k.startswith("ids_")])):
            ids = saved[f"ids_{n}"]
            past = [saved[f"past_{n}_{layer}"] for layer in range(identity.layers)]
            want = (1, identity.kv_heads, len(ids), identity.head)
            slides = list(sliding) or [False] * len(past)
            if ids.dtype != np.int64 or ids.ndim != 1 or any(
                    a.dtype != np.dtype(identity.kv_dtype) or a.ndim != 4
                    or (a.shape[:2], a.shape[3]) != (want[:2], want[3])
                    or not (min(len(ids), keep) <= a.shape[2] <= len(ids) if s else a.shape[2] == len(ids))
                    for a, s in zip(past, slides)):
                raise ValueError(f"entry {n} does not have the cache's shape {want} and dtype {identity.kv_dtype}")
            if len({a.shape[2] for a, s in zip(past, slides) if s}) > 1:  # they are cut together
                raise ValueError(f"entry {n}'s sliding caches hold different numbers of positions")
            entries.append(_Entry(ids, past))
        return entries

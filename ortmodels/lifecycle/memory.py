"""Give memory freed by an unloaded model back to the operating system.

glibc keeps freed heap pages for reuse, so after a session is released the process's
resident size barely drops (measured: 476 MB loaded, 381 MB after unloading both
samples, 133 MB after ``malloc_trim``, the size before loading). Trimming after an
unload makes ``unload_all`` free what it promises.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger(__name__)

_trim = None
if sys.platform.startswith("linux"):
    try:
        # The C library the process already runs on, through its own symbols: ``ctypes.util.find_library``
        # imported subprocess and ran ``ldconfig`` (12-15 ms of every start) to name the same library.
        _libc = ctypes.CDLL(None)
        _trim = getattr(_libc, "malloc_trim", None)  # glibc only (not musl)
    except OSError:
        _trim = None


def return_freed_memory() -> None:
    """Collect garbage, then hand free heap pages back to the OS where the C library can."""
    gc.collect()
    trim_heap()


def trim_heap() -> None:
    """Hand free heap pages back to the OS (no garbage collection: cheap enough for every load).

    After a load, what parsing the tokenizer's JSON and opening the session freed stays in
    the heap: the int4 sample's chat model held 311 MB after loading, 283 MB after a trim,
    and its peak over a short answer fell from 349 to 322 MB (the same tokens).
    """
    if _trim is not None:
        try:
            _trim(0)
        except Exception as exc:  # pragma: no cover - a libc without a working malloc_trim
            logger.debug("malloc_trim failed: %s", exc)


#: glibc's mallopt parameter for the size from which an allocation is its own mapping.
_M_MMAP_THRESHOLD = -3
#: Its default starting value; glibc raises it (up to 32 MB) each time a mapped block is freed.
DEFAULT_MMAP_THRESHOLD = 128 * 1024
#: The threshold an export runs with: every block from 64 KB up is its own mapping, so freeing it
#: hands its pages back at once. With glibc's rising threshold, a freed 25 MB logits array raises it
#: to 25 MB and the next ones come from the heap, which keeps their pages; the sample's export held
#: ~30-130 MB of such freed heap at its peaks (its fp16 check 816 -> 777 MB, its reference child
#: 720-780 -> 654 MB), for the cost of a mapping per block (zeroed pages, no speed-up from reuse).
EXPORT_MMAP_THRESHOLD = 64 * 1024
#: The same for a child process, through its environment (read by glibc when the child starts).
EXPORT_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(EXPORT_MMAP_THRESHOLD)}


def set_mmap_threshold(threshold: int) -> bool:
    """Map every heap block of ``threshold`` bytes and more on its own (glibc only; False elsewhere).

    Setting it fixes glibc's otherwise rising threshold (and its trim threshold) for the life
    of the process: `large_allocations_mapped` restores the default value, not the rising.
    """
    mallopt = getattr(_libc, "mallopt", None) if _trim is not None else None
    if mallopt is None:
        return False
    try:
        return bool(mallopt(_M_MMAP_THRESHOLD, threshold))
    except Exception as exc:  # pragma: no cover - a libc whose mallopt cannot be called
        logger.debug("mallopt failed: %s", exc)
        return False


@contextmanager
def large_allocations_mapped(threshold: int = EXPORT_MMAP_THRESHOLD) -> Iterator[None]:
    """Inside the block, blocks of ``threshold`` bytes and more are mapped on their own (`set_mmap_threshold`).

    For an export, whose peak is a session's weights plus the freed logits and activations
    glibc would otherwise keep; afterwards the default threshold, fixed (no longer rising) for
    the rest of the process, and for every thread of it: so only ``ortmodels export`` asks,
    whose process ends with the export (`export_model`'s ``map_large_blocks``).
    """
    changed = set_mmap_threshold(threshold)
    try:
        yield
    finally:
        if changed:
            set_mmap_threshold(DEFAULT_MMAP_THRESHOLD)

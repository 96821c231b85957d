"""ONNX Runtime sessions: which execution provider, which options, and clear failures.

The asked-for device is checked against what the installed onnxruntime offers before a
session is made, and the session's own provider list is checked afterwards, because
onnxruntime silently falls back to the CPU when CUDA cannot start.
"""

from __future__ import annotations

import atexit
import logging
import shutil
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import onnxruntime as ort

from ..errors import DeviceUnavailableError, ModelFileError

logger = logging.getLogger(__name__)

S = TypeVar("S")
#: What `open_early` was given (`create_session`'s arguments): the key a load takes its session by.
EarlyKey = tuple[str, str, int, bool, bool, bool]
T = TypeVar("T")

_PROVIDERS = {
    "cuda": "CUDAExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
#: Provider options by device. CUDA's ``sdpa_kernel`` is the bitmask of attention backends
#: onnxruntime may use: flash (1), memory-efficient (2) and plain (16), leaving out cuDNN's (8) and
#: the TensorRT kernels (4, 32, 64, 128: fp16 BERT-style attention; ortmodels' encoder exports are
#: fp32 and int8).
#: With onnxruntime-gpu 1.31.1 on an H200 the default took cuDNN's, which plans again for every
#: new sequence length: a decode step of the sample's fp16 graph took 68 ms in GroupQueryAttention
#: alone, 4.8 ms with flash attention (scripts/check_cuda.py and a profile, 2026-12-04).
_PROVIDER_OPTIONS: dict[str, dict[str, str]] = {"cuda": {"sdpa_kernel": "19"}}
_INSTALL_HINT = {
    "cuda": "Install the GPU build, ortmodels-gpu, in a venv without ortmodels: from a clone, "
    "'make install-gpu' or 'pip install -e packaging/gpu'; the machine needs the CUDA and cuDNN "
    "versions its onnxruntime-gpu release was built for.",
    "coreml": "CoreML is only offered by onnxruntime on macOS (pip install onnxruntime on a Mac).",
}


def available_providers() -> list[str]:
    """The execution providers this onnxruntime build offers, as it lists them."""
    return list(ort.get_available_providers())


def available_devices() -> list[str]:
    """Devices this onnxruntime build can run on, best first."""
    offered = set(available_providers())
    return [d for d in ("cuda", "coreml", "cpu") if _PROVIDERS[d] in offered]


def resolve_device(device: str) -> str:
    """Turn ``auto`` into a concrete device, and refuse one that is not available."""
    device = {"mps": "coreml", "gpu": "cuda"}.get(device, device)
    offered = available_devices()
    if device == "auto":
        if "cuda" in offered:
            return "cuda"
        if sys.platform == "darwin" and "coreml" in offered:
            return "coreml"
        return "cpu"
    if device not in _PROVIDERS:
        raise DeviceUnavailableError(
            f"Unknown device {device!r}. Use auto, cpu, cuda or coreml (mps)."
        )
    if device not in offered:
        raise DeviceUnavailableError(
            f"MODEL_DEVICE={device} asked for, but this onnxruntime "
            f"({ort.__version__}) offers only {', '.join(offered)}. {_INSTALL_HINT[device]}"
        )
    return device


#: Whether the sessions this process opens keep their idle intra-op threads spinning between runs
#: (ONNX Runtime's default); `stop_spinning` turns it off.
_spinning = True


def stop_spinning() -> None:
    """Sessions opened from now on in this process let their intra-op threads sleep between runs.

    For a one-shot command (``ortmodels chat NAME QUESTION``): a spinning thread keeps a core
    busy between decode steps and while the main thread samples, tokenizes and imports, which
    on a shared 2-core machine took CPU from the start itself. A server keeps the default.
    """
    global _spinning
    _spinning = False


def session_options(threads: int = 0, prepack: bool = True, arena: bool = True) -> ort.SessionOptions:
    """Options every ortmodels session shares: all graph optimisations, quiet logging.

    ``prepack=False`` keeps onnxruntime from making its own packed copy of the weights:
    slower steps, half the memory of a float graph (the export's checks use it).
    ``arena=False`` gives each intermediate tensor back when a run ends instead of keeping
    it in onnxruntime's CPU arena, which only grows: a decoder's arena keeps what its
    longest prefill needed (about 66 MiB after a 967-token prompt on the int4 sample) for
    the life of the session; the same tokens either way.
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    if not prepack:
        options.add_session_config_entry("session.disable_prepacking", "1")
    if not arena:
        options.enable_cpu_mem_arena = False
    if not _spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def create_session(model_file: Path, device: str, threads: int = 0, prepack: bool = True,
                   arena: bool = True, warm: bool = False) -> ort.InferenceSession:
    """Open ``model_file`` on ``device`` (already resolved), naming the file if it is bad; the
    session `open_early` started with the same arguments, if there is one. ``warm``: on the
    CPU with packed weights, open the graph's warm copy (`warm_copy`), writing it first if
    there is none for this machine."""
    early = _take_early((str(model_file), device, threads, prepack, arena, warm))
    if early is not None:
        try:
            return early.result()
        except BaseException:
            if not early.retry:
                raise
            # opened on a guess, without the load's lease and checks: the load's own opening decides
    return _create_session(model_file, device, threads, prepack, arena, warm)


def _create_session(model_file: Path, device: str, threads: int, prepack: bool, arena: bool,
                    warm: bool = False) -> ort.InferenceSession:
    if not model_file.is_file():
        raise ModelFileError(
            model_file, "Missing ONNX model file", "Re-run 'ortmodels export' for this model."
        )
    if warm and device == "cpu" and prepack:
        session = _open_warm(model_file, threads, arena)
        if session is not None:
            return session
    return _open_file(model_file, session_options(threads, prepack, arena), device)


def _open_warm(model_file: Path, threads: int, arena: bool) -> ort.InferenceSession | None:
    """The session of ``model_file``'s warm copy, written now if there is none; ``None`` where
    no copy can be read or written (the caller opens the graph as exported)."""
    from .warm_copy import warm_copy

    try:
        copy = warm_copy(model_file)
    except OSError as exc:
        logger.debug("No warm copy of %s: %s", model_file, exc)
        return None
    if copy.ready():
        options = session_options(threads, True, arena)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # optimised when written
        try:
            return _open_file(copy.graph, options, "cpu")
        except ModelFileError as exc:  # a damaged copy: written again below
            logger.warning("The warm copy %s did not open (%s); writing it again.", copy.folder, exc)
            copy.discard()
    options = session_options(threads, True, arena)
    temporary = copy.saving(options)
    if temporary is None:
        return None
    try:
        session = _open_file(model_file, options, "cpu")
    except ModelFileError as exc:  # the copy could not be written (a full disk), or the graph is bad:
        shutil.rmtree(temporary, ignore_errors=True)  # opened as exported, which reports the latter
        logger.debug("Could not write a warm copy of %s: %s", model_file, exc)
        return None
    copy.keep(temporary)
    return session


#: onnxruntime's transformer that replaces each fp16 weight the CPU provider computes in fp32
#: (through the Casts it inserts) by an fp32 copy made when the session opens.
FP16_WEIGHTS_WIDENED_AT_LOAD = "FuseFp16InitializerToFp32NodeTransformer"


def create_widening_cpu_session(model_file: Path, threads: int = 0) -> ort.InferenceSession:
    """A CPU session of an fp16 graph that widens each weight to fp32 as a run reaches it, then frees it.

    onnxruntime's CPU provider has no fp16 kernels for most of a decoder's operators and
    computes them in fp32; by default it keeps an fp32 copy of every weight for the life of
    the session (the sample's fp16 graph: 540 MB for a 270 MB file). Here the Casts of the
    weights stay in the graph and run in order, each copy freed by its consumer (without the
    priority order, every Cast runs first and all copies live at once): the same numbers
    (widening is exact), a few hundred MB less, each run slower by the widening. Unpacked
    weights, no arena: for the export's checks, which hold one session at a time.
    """
    options = session_options(threads, prepack=False, arena=False)
    options.execution_order = ort.ExecutionOrder.PRIORITY_BASED
    options.enable_mem_pattern = False  # a pattern planned over a run would hold the copies together
    return _open_file(model_file, options, "cpu", disabled_optimizers=[FP16_WEIGHTS_WIDENED_AT_LOAD])


def _open_file(model_file: Path, options: ort.SessionOptions, device: str,
               disabled_optimizers: list[str] | None = None) -> ort.InferenceSession:
    providers: list[str | tuple[str, dict[str, str]]] = [(_PROVIDERS[device], _PROVIDER_OPTIONS.get(device, {}))]
    if device != "cpu":
        providers.append(_PROVIDERS["cpu"])
    try:
        session = ort.InferenceSession(str(model_file), sess_options=options, providers=providers,
                                       disabled_optimizers=disabled_optimizers)
    except Exception as exc:  # onnxruntime raises its own untyped Fail / InvalidProtobuf
        raise ModelFileError(
            model_file,
            f"ONNX Runtime could not load the model ({type(exc).__name__}: {str(exc)[:300]})",
            "The file is corrupt or truncated: re-run 'ortmodels export' for this model.",
        ) from exc
    used = session.get_providers()
    if device != "cpu" and used[0] != _PROVIDERS[device]:
        raise DeviceUnavailableError(
            f"ONNX Runtime fell back from {_PROVIDERS[device]} to {used[0]} for {model_file}. "
            f"{_INSTALL_HINT[device]}"
        )
    logger.debug("Opened %s on %s", model_file, used)
    return session


def output_width(session: ort.InferenceSession, name: str) -> int | None:
    """The last dimension of output ``name`` when the graph fixes it (vocabulary, hidden size)."""
    for output in session.get_outputs():
        if output.name == name and output.shape and isinstance(output.shape[-1], int):
            return output.shape[-1]
    return None


def open_beside(open_session: Callable[[], S], work: Callable[[], T]) -> tuple[S, T]:
    """``open_session()`` on a helper thread while ``work()`` runs on this one; both results.

    ONNX Runtime releases the GIL while it builds a session, most of which is packing the
    weights for its kernels (about 0.15 s of the int4 sample's 0.2 s), so a model's other
    files (tokenizer, template) are read meanwhile. The session's error wins, as when it
    was opened first: a bad graph is reported even if the other files are bad too.
    """
    sessions: list[S] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            sessions.append(open_session())
        except BaseException as exc:  # handed to the caller's thread, raised there
            errors.append(exc)

    helper = threading.Thread(target=run, name="ortmodels-session-open", daemon=True)
    helper.start()
    failure: BaseException | None = None
    try:
        done = work()
    except BaseException as exc:  # raised once the session is settled
        failure = exc
    helper.join()
    if errors:
        raise errors[0]
    if failure is not None:
        raise failure
    return sessions[0], done


class _EarlyOpen:
    """One session being opened on a helper thread, for whoever asks for it first."""

    def __init__(self, key: EarlyKey, done: Callable[[], None] | None,
                 retry: bool = False) -> None:
        self.key = key
        self.retry = retry
        """Whether a load that takes it opens the file again if it failed (`open_early`'s ``retry``)."""
        self._session: ort.InferenceSession | None = None
        self._error: BaseException | None = None
        self._done = done
        self._thread = threading.Thread(target=self._run, name="ortmodels-session-early", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._session = _create_session(Path(self.key[0]), *self.key[1:])
        except BaseException as exc:  # raised in the thread that takes the session
            self._error = exc
        finally:
            if self._done is not None:
                self._done()

    def result(self) -> ort.InferenceSession:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._session is not None
        return self._session


_early_lock = threading.Lock()
_early: dict[EarlyKey, _EarlyOpen] = {}
_exit_hook: list[Callable[[], None]] = []
"""`discard_early` once it is registered to run at exit."""


def open_early(model_file: Path, device: str, threads: int = 0, prepack: bool = True, arena: bool = True,
               warm: bool = False, done: Callable[[], None] | None = None, retry: bool = False) -> EarlyKey:
    """Start opening ``model_file`` now, on a helper thread; the next `create_session` with the same
    arguments takes that session (or its error) instead of opening the file again.

    For a process that knows which graph it will open before it has imported what runs it
    (``ortmodels chat``): ONNX Runtime builds the session without the GIL, so the imports and
    reading of everything else happen meanwhile. ``done()`` runs on the helper once the file
    is read (a version lease released). A session nobody takes is dropped by `discard_early`.
    ``retry``: opened on a guess, before the file checks and without a lease (`cli.early_hint`),
    so a load that takes it opens the file again itself if it failed. Returns the key a
    `create_session` takes it by.
    """
    key = (str(model_file), device, threads, prepack, arena, warm)
    with _early_lock:
        if key not in _early:
            if not _exit_hook:  # a daemon thread still inside onnxruntime at teardown aborts the process
                atexit.register(discard_early)
                _exit_hook.append(discard_early)
            _early[key] = _EarlyOpen(key, done, retry)
            return key
    if done is not None:
        done()
    return key


def _take_early(key: EarlyKey) -> _EarlyOpen | None:
    with _early_lock:
        return _early.pop(key, None)


def discard_early() -> None:
    """Drop the sessions `open_early` started that no load took (their memory goes with them)."""
    with _early_lock:
        untaken = list(_early.values())
        _early.clear()
    for early in untaken:
        try:
            early.result()
        except BaseException:  # nobody asked for it: its error is nobody's
            logger.debug("An early session nobody took failed to open", exc_info=True)

"""Opening one exported precision of a model: the steps every ONNX model class shares."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import Settings, load_settings, setting_name
from ..engine.session import EarlyKey, create_session, open_beside, open_early, resolve_device
from ..engine.tokenizer import load_tokenizer, merges_as_text, vocabulary_bounds
from ..errors import (
    ChatTemplateError,
    DeviceUnavailableError,
    FailedVariantError,
    ModelFileError,
    ModelNotExportedError,
    UnknownModelError,
    UnknownVersionError,
)
from ..lifecycle import VariantChoice, loading_model
from ..store import ModelInfo, ModelKind, ModelStore
from ..store.integrity import refuse_outside_links, remembered_figures, remembered_form, verify_variant
from ..store.manifest import ChatSpec, EmbeddingSpec, VariantEntry
from ..store.names import validate_model_name
from ..store.versions import VersionLease, export_hint

if TYPE_CHECKING:
    import onnxruntime as ort
    from tokenizers import Tokenizer

    from ..engine.chat_template import ChatTemplate

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OpenVariant:
    info: ModelInfo
    variant: str
    folder: Path
    device: str
    session: ort.InferenceSession
    kv_dtype: str | None = None
    """The KV cache's precision (``fp32``, ``fp16``), read from the graph; ``None`` without a cache."""
    beside: Any = None
    """What ``open_variant``'s ``beside`` returned (read while the session opened)."""

    @property
    def size(self) -> int:
        """Bytes of the variant's files, as its manifest records them."""
        return self.info.variants[self.variant].size

    @property
    def chat_spec(self) -> ChatSpec:
        """The manifest's chat section (`open_variant` checked it is there for a chat model)."""
        spec = self.info.manifest.chat if self.info.manifest is not None else None
        if spec is None:
            raise ModelFileError(self.info.onnx_path / "manifest.json", "No chat export found",
                                 export_hint(self.info.path, self.info.name))
        return spec

    @property
    def embedding_spec(self) -> EmbeddingSpec:
        """The manifest's embedding section (`open_variant` checked it is there for an embedding model)."""
        spec = self.info.manifest.embedding if self.info.manifest is not None else None
        if spec is None:
            raise ModelFileError(self.info.onnx_path / "manifest.json", "No embedding export found",
                                 export_hint(self.info.path, self.info.name))
        return spec


#: A chat graph's session has no memory arena: a decoder's prefill allocates per prompt length, and an
#: arena would keep its largest for good.
_CHAT_ARENA = False
_KV_TYPES = {"tensor(float)": "fp32", "tensor(float16)": "fp16", "tensor(bfloat16)": "bf16"}
_OWN_GRAPH = "model.onnx"


def session_kv_dtype(session: ort.InferenceSession) -> str | None:
    """The cache precision of an opened decoder graph, from its ``past_key_values.*`` inputs (as the engine does)."""
    past = next((i for i in session.get_inputs() if i.name.startswith("past_key_values.")), None)
    return None if past is None else _KV_TYPES.get(past.type, past.type)


def kv_graph(entry: VariantEntry, requested: str, model: str) -> str:
    """The graph file of a chat variant for ``MODEL_KV_DTYPE=requested`` (``auto``, ``fp32``, ``fp16``).

    ``auto`` takes the fp16-KV graph where it passed the variant's gates at export, else the
    variant's own graph. An export with no ``kv`` entry (made before the choice existed) has
    its own graph only; `open_variant` checks its cache against an explicit request.
    """
    offered = entry.kv
    if not offered:
        return _OWN_GRAPH
    own = next((k for k, e in offered.items() if e.file == _OWN_GRAPH), None)
    if requested == "auto":
        fp16 = offered.get("fp16")
        return fp16.file if fp16 is not None and fp16.usable and fp16.file in entry.files else _OWN_GRAPH
    choice = offered.get(requested)
    if choice is not None and not choice.usable:
        failures = "; ".join(choice.quality.failures) if choice.quality else ""
        raise FailedVariantError(
            f"MODEL_KV_DTYPE={requested}: the {entry.dtype} export of {model!r} failed its quality gates with an "
            f"{requested} KV cache at export ({failures}), so that graph is not loaded. Use MODEL_KV_DTYPE=auto "
            f"or {own or 'fp32'}; 'ortmodels info {model}' shows the figures."
        )
    if choice is not None and choice.file in entry.files:
        return choice.file
    if requested == "fp32" and own == "fp16":  # the fp16 variant: its cache is fp16 under every setting
        logger.info("%s %s keeps its KV cache in fp16 (MODEL_KV_DTYPE=fp32 applies to fp32-activation variants).",
                    model, entry.dtype)
        return _OWN_GRAPH
    raise ModelNotExportedError(
        f"MODEL_KV_DTYPE={requested}: the {entry.dtype} export of {model!r} has no {requested} KV cache graph "
        f"(offered: {', '.join(offered)}; a graph without GroupQueryAttention, as optimum's, keeps its own). "
        f"Use MODEL_KV_DTYPE=auto, or re-export with 'ortmodels export {model} --dtype {entry.dtype}'."
    )


#: Variants whose sessions open from a warm copy (`engine.warm_copy`) where MODEL_PREPACKED_CACHE
#: asks for them: the quantized ones, whose weights onnxruntime packs at every opening (most of
#: its time); an fp32 or fp16 graph's copy would add its gigabytes again on disk for a smaller
#: part of its opening.
_WARM_DTYPES = ("int4", "int8")


def warm_copies(entry: VariantEntry, settings: Settings) -> bool:
    """Whether ``entry``'s chat sessions open from a warm copy of its packed weights."""
    return settings.model_prepacked_cache and entry.dtype in _WARM_DTYPES


def _open_chat_graph(folder: Path, entry: VariantEntry, requested: str, model: str, device: str,
                     threads: int, warm: bool) -> tuple[ort.InferenceSession, str | None]:
    """Open the variant's graph for the asked-for KV precision; an fp16 cache the device cannot run is refused."""
    graph = kv_graph(entry, requested, model)
    try:
        session = create_session(folder / graph, device, threads, arena=_CHAT_ARENA, warm=warm)
    except (ModelFileError, DeviceUnavailableError) as exc:
        if graph == _OWN_GRAPH:
            raise
        # The variant's own graph opens here: the device cannot run GroupQueryAttention on an fp16 cache.
        session = create_session(folder / _OWN_GRAPH, device, threads, arena=_CHAT_ARENA, warm=warm)
        if requested != "auto":
            raise DeviceUnavailableError(
                f"MODEL_KV_DTYPE={requested}: ONNX Runtime cannot run {model!r}'s {requested} KV cache graph on "
                f"{device} ({str(exc)[:200]}). Use MODEL_KV_DTYPE=auto or fp32 on this device."
            ) from exc
        logger.warning("%s: the fp16 KV cache graph does not run on %s (%s); using the fp32 cache.", model, device,
                       str(exc)[:200])
    kv_dtype = session_kv_dtype(session)
    if requested not in ("auto", kv_dtype) and not (requested == "fp32" and kv_dtype == "fp16"
                                                     and entry.dtype == "fp16"):
        raise ModelNotExportedError(
            f"MODEL_KV_DTYPE={requested}: the {entry.dtype} export of {model!r} holds its KV cache in {kv_dtype} "
            f"(exported before ortmodels offered a choice). Re-export with 'ortmodels export {model} --dtype "
            f"{entry.dtype}', or use MODEL_KV_DTYPE=auto."
        )
    return session, kv_dtype


def _lease_version(store: ModelStore, name: str, kind: ModelKind,
                   version: str | None) -> tuple[ModelInfo, VersionLease | None]:
    """The model's info and a lease on its version; the active version is read again if a
    new export replaced (and pruned) it between reading and leasing."""
    for attempt in (1, 2):
        info = store.require(name, kind, version)
        if info.manifest is None or getattr(info.manifest, kind) is None:
            raise ModelFileError(
                info.onnx_path / "manifest.json", "No ONNX export found", export_hint(info.path, info.name)
            )
        if info.export_dir is None:
            return info, None
        try:
            return info, VersionLease(info.path, info.export_dir.name)
        except UnknownVersionError:
            if version is not None or attempt == 2:
                raise
    raise AssertionError("unreachable")


def choose_variant(store: ModelStore, name: str, kind: ModelKind, version: str | None, device: str | None,
                   dtype: str | None, settings: Settings) -> VariantChoice:
    """What a load of ``name`` opens, chosen once: its info (the manifest read once), a lease on
    its export version (``None``: the active one), the device and the variant for ``dtype``
    (``None``: ``MODEL_DTYPE``). The memory estimate and the load both read this one choice."""
    info, lease = _lease_version(store, name, kind, version)
    try:
        resolved = resolve_device(device or settings.model_device)
        variant = info.variant_for(kind, resolved, dtype, settings.model_dtype)
    except BaseException:
        if lease is not None:
            lease.release()
        raise
    return VariantChoice(info, variant, resolved, lease)


def model_place(model_name: str | None, model_path: str | Path | None, default_setting: str,
                settings: Settings | None) -> tuple[str, Path, str | None]:
    """A model's name, its folder and the setting its name came from (``None``: it was given):
    ``model_path`` as given, or ``model_name`` in ``LOCAL_MODELS_DIR``, the kind's default model
    (``default_setting``) when neither is given. The folder is absolute, read against the working
    directory of now: a later ``chdir`` does not move a model (nor a copy LangChain makes of it)."""
    if model_path is not None:
        return model_name or Path(model_path).name, Path(model_path).absolute(), None
    given = settings or load_settings()
    named_by = None if model_name else setting_name(default_setting)
    model_name = validate_model_name(model_name or getattr(given, default_setting))
    return model_name, (given.local_models_dir / model_name).absolute(), named_by


class ChoosesVariant:
    """The loader's chooser for a runtime class (chat, embedding, reranker): where its model is,
    the fields a load reads, read through `choose_variant` once per load."""

    #: The setting naming this kind's default model (``DEFAULT_CHAT_MODEL``, ...).
    default_setting: str = ""

    def _place(self, model_name: str | None, model_path: str | Path | None, device: str | None,
               dtype: str | None, version: str | None, settings: Settings | None) -> None:
        """Set the fields: ``model_path``, or ``model_name`` found in ``LOCAL_MODELS_DIR`` (the
        kind's default model when neither is given)."""
        self.model_name: str | None
        self.named_by: str | None  # the setting the name came from, for the error if it is not there
        self.model_name, self.model_path, self.named_by = model_place(model_name, model_path,
                                                                      self.default_setting, settings)
        self.device, self.dtype, self.version, self.settings = device, dtype, version, settings

    def __repr__(self) -> str:
        state = "loaded" if getattr(self, "is_loaded", False) else "not loaded"
        return f"{type(self).__name__}(model_name={self.model_name!r}, {state})"

    if TYPE_CHECKING:
        kind: ModelKind
        model_path: Path
        front: Any
        version: str | None
        device: str | None
        dtype: str | None
        settings: Settings | None

    def _follow_front(self) -> None:
        """Take the fields a user may have set on the LangChain face since it was made."""
        self.device, self.dtype, self.version = self.front.device, self.front.dtype, self.front.version

    def choice(self, store: ModelStore) -> VariantChoice:
        """What the next load opens, chosen from ``store`` with this model's fields (the loader's
        chooser: the manifest read, the variant chosen and the version leased once per load)."""
        if self.front is not None:
            self._follow_front()
        return choose_variant(store, self.model_path.name, self.kind, self.version, self.device, self.dtype,
                              self.settings or load_settings())


def _checked_folder(choice: VariantChoice, settings: Settings) -> Path:
    """The chosen variant's folder, absolute (files read later, grammars, must not depend on
    the working directory), once its links stay inside the export and its files match the
    manifest (``MODEL_VERIFY_FILES``)."""
    info, variant = choice.info, choice.variant
    folder = info.variant_path(variant).absolute()
    refuse_outside_links(folder, info.onnx_path)
    if settings.model_verify_files:
        hashed = verify_variant(folder, info.variants[variant], info.name)
        logger.debug("Verified %s %s (%d files hashed)", info.name, variant, hashed)
    return folder


def open_chat_early(store: ModelStore, name: str, dtype: str | None,
                    settings: Settings) -> EarlyKey:
    """Start opening the graph a load of chat model ``name`` (active version) would open, on a
    helper thread (`open_early`), after the same choice and file checks; the load takes that
    session. A process that knows its model before importing the rest calls it first
    (``ortmodels chat``); any problem is left for the load to report. Returns the session's key
    (`open_early`'s)."""
    choice = choose_variant(store, name, "chat", None, None, dtype, settings)
    try:
        folder = _checked_folder(choice, settings)
        graph = kv_graph(choice.info.variants[choice.variant], settings.model_kv_dtype, name)
    except BaseException:
        choice.release()
        raise
    return open_early(folder / graph, choice.device, settings.model_threads, arena=_CHAT_ARENA,
                      warm=warm_copies(choice.info.variants[choice.variant], settings), done=choice.release)


def _in_store(model_dir: Path, settings: Settings) -> bool:
    """Whether ``model_dir`` is a folder of ``LOCAL_MODELS_DIR`` (a name there), not a path given outside it."""
    return model_dir.parent.resolve() == Path(settings.local_models_dir).resolve()


def open_variant(
    model_dir: Path, kind: ModelKind, device: str | None, dtype: str | None, settings: Settings,
    beside: Callable[[Path], Any] | None = None,
) -> OpenVariant:
    """Open what the loading model's life cycle chose (the loader's `choose_variant`), or, for a
    model made without the manager, choose it here: verify the files, open the session.

    ``beside(folder)`` (the variant's folder, verified) runs while a chat session opens on a
    helper thread (`open_beside`); its result is the opened variant's ``beside``.

    Called from a model's ``_load``: the export version comes from that model's
    ``version`` (``None``: the active one), and the model keeps a lease on the version
    until it is unloaded, so the version is not pruned under it.
    """
    owner = loading_model()
    life = getattr(owner, "life_cycle", None)
    choice = life.take_choice() if life is not None else None
    if choice is None:
        model_dir = model_dir.absolute()
        try:
            choice = choose_variant(ModelStore(model_dir.parent), model_dir.name, kind,
                                    getattr(owner, "version", None), device, dtype, settings)
        except UnknownModelError as exc:  # as the manager says it: the setting a default came from, the kind
            if exc.name == model_dir.name and not model_dir.exists() and not _in_store(model_dir, settings):
                raise ModelFileError(model_dir, "No model folder", "Give model_path the folder of an exported "
                                     "model, or give model_name, a model in LOCAL_MODELS_DIR "
                                     f"({settings.local_models_dir})") from None
            said = exc.asked_as(model_dir.name, getattr(owner, "named_by", None), kind)
            if said is exc:
                raise
            raise said from None
    info, variant, resolved = choice.info, choice.variant, choice.device
    try:
        folder = _checked_folder(choice, settings)
        kv_dtype, extra = None, None
        if kind == "chat":
            (session, kv_dtype), extra = open_beside(
                lambda: _open_chat_graph(folder, info.variants[variant], settings.model_kv_dtype, info.name,
                                         resolved, settings.model_threads,
                                         warm_copies(info.variants[variant], settings)),
                lambda: None if beside is None else beside(folder))
        else:
            session = create_session(folder / _OWN_GRAPH, resolved, settings.model_threads)
    except BaseException:
        choice.release()
        raise
    opened = OpenVariant(info, variant, folder, resolved, session, kv_dtype, extra)
    if owner is not None:
        owner.attach_variant(opened, choice.lease)
    else:  # opened outside a model's load(): nothing would release it later
        choice.release()
    return opened


def read_chat_files(folder: Path, checkpoint: Path
                    ) -> tuple[Tokenizer, tuple[int, int], ChatTemplate | ModelFileError | ChatTemplateError]:
    """A chat variant's tokenizer, its `vocabulary_bounds` and chat template (`find_chat_template`),
    read while the session opens (`open_variant`'s ``beside``). A template that does not compile
    is returned, for the caller to raise after its vocabulary check, as when read in turn. The
    bounds are read back where an earlier load of the same file kept them (`remembered_figures`), and
    the tokenizer is parsed from the faster form of its file an earlier load kept (`remembered_form`,
    `merges_as_text`)."""
    from .service import find_chat_template

    import tokenizers

    path = folder / "tokenizer.json"
    faster = remembered_form(path, f"tokenizer-{tokenizers.__version__}.json", lambda: merges_as_text(path))
    tokenizer = load_tokenizer(path, text=faster)
    top, chars = remembered_figures(path, "vocabulary_bounds", 2, lambda: vocabulary_bounds(tokenizer))
    bounds = top, chars
    try:
        return tokenizer, bounds, find_chat_template(folder, checkpoint)
    except ChatTemplateError as exc:
        return tokenizer, bounds, exc

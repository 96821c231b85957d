"""Opening one exported precision of a model: the steps every ONNX model class shares."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import Settings
from ..engine.session import create_session, resolve_device
from ..errors import ModelFileError, UnknownVersionError
from ..lifecycle import loading_model
from ..precision import select_variant
from ..store import ModelInfo, ModelKind, ModelStore
from ..store.integrity import refuse_outside_links, verify_variant
from ..store.versions import VersionLease

if TYPE_CHECKING:
    import onnxruntime as ort

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OpenVariant:
    info: ModelInfo
    variant: str
    folder: Path
    device: str
    session: ort.InferenceSession

    @property
    def size(self) -> int:
        """Bytes of the variant's files, as its manifest records them."""
        return self.info.variants[self.variant].size


def _lease_version(model_dir: Path, kind: ModelKind, version: str | None) -> tuple[ModelInfo, VersionLease | None]:
    """The model's info and a lease on its version; the active version is read again if a
    new export replaced (and pruned) it between reading and leasing."""
    store = ModelStore(model_dir.parent)
    for attempt in (1, 2):
        info = store.require(model_dir.name, kind, version)
        if info.manifest is None or getattr(info.manifest, kind) is None:
            raise ModelFileError(
                info.onnx_path / "manifest.json", "No ONNX export found", f"Run 'ortmodels export {info.name}'."
            )
        if info.export_dir is None:
            return info, None
        try:
            return info, VersionLease(info.path, info.export_dir.name)
        except UnknownVersionError:
            if version is not None or attempt == 2:
                raise
    raise AssertionError("unreachable")


def open_variant(
    model_dir: Path, kind: ModelKind, device: str | None, dtype: str | None, settings: Settings
) -> OpenVariant:
    """Check the model's kind and export, pick device and precision, verify the files, open the session.

    Called from a model's ``_load``: the export version comes from that model's
    ``version`` (``None``: the active one), and the model keeps a lease on the version
    until it is unloaded, so the version is not pruned under it.
    """
    owner = loading_model()
    model_dir = model_dir.absolute()  # files read later (grammars) must not depend on the working directory
    version = getattr(owner, "version", None)
    info, lease = _lease_version(model_dir, kind, version)
    try:
        resolved = resolve_device(device or settings.model_device)
        variant = select_variant(dtype or settings.model_dtype, list(info.variants), kind, resolved,
                                 failed=info.failed_variants())
        folder = info.variant_path(variant)
        refuse_outside_links(folder, info.onnx_path)
        if settings.model_verify_files:
            hashed = verify_variant(folder, info.variants[variant], info.name)
            logger.debug("Verified %s %s (%d files hashed)", info.name, variant, hashed)
        # A decoder's prefill allocates per prompt length; an arena would keep its largest for good.
        session = create_session(folder / "model.onnx", resolved, settings.model_threads, arena=kind != "chat")
    except BaseException:
        if lease is not None:
            lease.release()
        raise
    opened = OpenVariant(info, variant, folder, resolved, session)
    if owner is not None:
        owner.attach_variant(opened, lease)
    elif lease is not None:  # opened outside a model's load(): nothing would release it later
        lease.release()
    return opened

"""The on-disk side: model folders, export manifests and versions, leases, integrity, names.

Nothing here imports the runtime, the engine or LangChain.
"""

from .catalog import ModelInfo, ModelKind, ModelStore, detect_kind, read_json

__all__ = ["ModelInfo", "ModelKind", "ModelStore", "detect_kind", "read_json"]

"""Offline export of Hugging Face checkpoints to ONNX variants (needs ``ortmodels[export]``).

The flow is `pipeline` (`export_model`); each kind's exporter lives in its sub-package
(`decoder`, `encoder`), the checkpoint reading in `checkpoint`. The names below are imported
on first use: the PyTorch reference's child process (`decoder.reference_process`) imports
this package without the pipeline, onnxruntime or onnx.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..lazy import lazy_attribute

if TYPE_CHECKING:
    from .pipeline import EXPORTERS, ExportOutcome, export_model, supported_dtypes

_PUBLIC = dict.fromkeys(("EXPORTERS", "ExportOutcome", "export_model", "supported_dtypes"), ".pipeline")

__all__ = ["EXPORTERS", "ExportOutcome", "export_model", "supported_dtypes"]


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, name, _PUBLIC)


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])

"""Offline export of Hugging Face checkpoints to ONNX variants (needs ``ortmodels[export]``).

The flow is `pipeline` (`export_model`); each kind's exporter lives in its sub-package
(`decoder`, `encoder`), the checkpoint reading in `checkpoint`.
"""

from __future__ import annotations

from .pipeline import EXPORTERS, ExportOutcome, export_model, supported_dtypes

__all__ = ["EXPORTERS", "ExportOutcome", "export_model", "supported_dtypes"]

"""The one place that calls optimum's ONNX exporter and imports the heavy export stack."""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import ExportError, MissingDependencyError

logger = logging.getLogger(__name__)

_INSTALL = "pip install 'ortmodels[export]'"


def require_export_stack() -> None:
    """Fail early, with the install line, when the export extra is missing."""
    missing = []
    for module in ("torch", "transformers", "optimum.exporters.onnx", "onnx"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module.split(".")[0])
    if missing:
        raise MissingDependencyError(
            f"Exporting needs {', '.join(sorted(set(missing)))}; install the export extra: {_INSTALL}"
        )


def export_with_optimum(checkpoint: Path, output: Path, task: str, opset: int | None = None) -> None:
    """Run optimum's exporter on a local checkpoint into ``output`` (no hub access)."""
    require_export_stack()
    from optimum.exporters.onnx import main_export

    try:
        main_export(
            model_name_or_path=str(checkpoint),
            output=output,
            task=task,
            opset=opset,
            device="cpu",
            library_name="transformers",
            local_files_only=True,
            do_validation=False,  # ortmodels checks parity itself, on real probe sentences
        )
    except Exception as exc:  # optimum raises ValueError, KeyError, RuntimeError, ...
        raise ExportError(
            f"optimum could not export {checkpoint} as {task}: {type(exc).__name__}: {exc}"
        ) from exc
    if not (output / "model.onnx").is_file():
        raise ExportError(f"optimum wrote no model.onnx into {output}")

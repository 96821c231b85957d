"""The one place that calls optimum's ONNX exporter and imports the heavy export stack."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
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


class _Dropped(logging.Filter):
    """Drops one logger's records that start with ``start``."""

    def __init__(self, start: str) -> None:
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.start)


#: logger -> the start of a hint it writes that names nothing a user of ``ortmodels export`` can do
_HINTS = {
    "transformers.configuration_utils": "`torch_dtype` is deprecated",  # optimum passes torch_dtype
    "transformers.modeling_utils": "`torch_dtype` is deprecated",
    "root": "Please consider to run pre-processing before quantization",  # onnxruntime.quantization
}


@contextmanager
def third_party_hints_hidden() -> Iterator[None]:
    """The export stack's advice to its own callers hidden for the time of a step: transformers'
    ``torch_dtype`` deprecation, the tracer's note that constant tensors stay constant (the
    parity checks that follow are what proves the graph) and onnxruntime's suggestion to
    pre-process before quantizing (the quality gates measure the result); a real problem
    is still logged and every other warning still shown."""
    from torch.jit import TracerWarning

    filters = [(logging.getLogger(None if name == "root" else name), _Dropped(start))
               for name, start in _HINTS.items()]
    for hinted, dropped in filters:
        hinted.addFilter(dropped)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=TracerWarning)
            yield
    finally:
        for hinted, dropped in filters:
            hinted.removeFilter(dropped)


def export_with_optimum(checkpoint: Path, output: Path, task: str, opset: int | None = None) -> None:
    """Run optimum's exporter on a local checkpoint into ``output`` (no hub access)."""
    require_export_stack()
    from optimum.exporters.onnx import main_export

    try:
        with third_party_hints_hidden():
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

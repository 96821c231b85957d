"""Precision names, variant choice for `auto`, and execution-provider choice."""

from __future__ import annotations

import sys
from pathlib import Path

import onnxruntime as ort
import pytest

from ortmodels.engine.session import available_devices, resolve_device
from ortmodels.errors import ConfigurationError, DeviceUnavailableError
from ortmodels.precision import (
    normalize_precision,
    parse_precision_list,
    select_variant,
)


def test_precision_spellings() -> None:
    assert [normalize_precision(x) for x in ("float32", "fp16", "BFLOAT16", "q4")] == ["fp32", "fp16", "bf16", "int4"]
    assert parse_precision_list("fp32, int8,fp32") == ["fp32", "int8"]
    with pytest.raises(ConfigurationError, match="Unknown precision 'fp8'"):
        parse_precision_list("fp32,fp8")


def test_auto_picks_by_kind_and_device() -> None:
    assert select_variant("auto", ["fp32", "int8"], "embedding", "cpu") == "fp32"
    assert select_variant("auto", ["int8"], "embedding", "cpu") == "int8"
    assert select_variant("auto", ["fp32", "int8", "int4"], "chat", "cpu") == "int4"
    assert select_variant("auto", ["fp32", "fp16"], "embedding", "cuda") == "fp16"
    assert select_variant("int8", ["fp32"], "embedding", "cpu") == "int8"  # existence checked later


def test_precision_a_kind_never_has_falls_back_to_auto(caplog: pytest.LogCaptureFixture) -> None:
    assert select_variant("int4", ["fp32", "int8"], "embedding", "cpu") == "fp32"
    assert "not exported as int4" in caplog.text
    assert select_variant("float16", ["fp32", "int8"], "embedding", "cuda") == "fp32"
    with pytest.raises(ConfigurationError, match="not exported as int4"):  # asked of this model, not the setting
        select_variant("int4", ["fp32", "int8"], "embedding", "cpu", asked=True)


def test_bfloat16_needs_cuda() -> None:
    assert select_variant("bfloat16", ["fp32", "fp16"], "chat", "cuda") == "fp16"  # no bf16 export yet
    with pytest.raises(ConfigurationError, match="bfloat16 runs only on the CUDA provider"):
        select_variant("bfloat16", ["fp32"], "chat", "cpu")


def test_auto_device_is_cpu_without_accelerators() -> None:
    offered = ort.get_available_providers()
    if "CUDAExecutionProvider" in offered:
        assert resolve_device("auto") == "cuda"
    elif sys.platform == "darwin" and "CoreMLExecutionProvider" in offered:
        assert resolve_device("auto") == "coreml"
    else:
        assert resolve_device("auto") == "cpu"
    assert "cpu" in available_devices()


@pytest.mark.parametrize(("device", "hint"), [("cuda", "ortmodels-gpu"), ("mps", "macOS"), ("coreml", "macOS")])
def test_unavailable_device_says_what_to_install(device: str, hint: str) -> None:
    provider = {"cuda": "CUDAExecutionProvider"}.get(device, "CoreMLExecutionProvider")
    if provider in ort.get_available_providers():
        pytest.skip(f"{provider} is available on this machine")
    with pytest.raises(DeviceUnavailableError, match="offers only") as info:
        resolve_device(device)
    assert hint in str(info.value)


def test_unknown_device() -> None:
    with pytest.raises(DeviceUnavailableError, match="Unknown device 'tpu'"):
        resolve_device("tpu")


def test_cuda_sessions_leave_cudnn_attention_out(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """CUDA sessions name the attention backends they allow: cuDNN's plans again for every new
    sequence length (68 ms per decode step of the sample's fp16 graph on an H200, 4.8 ms with
    flash attention). CI has no GPU, so the call onnxruntime gets is what is checked here;
    scripts/check_cuda.py checks the speed and the logits on a GPU."""
    from ortmodels.engine import session as session_module

    asked: list[object] = []

    class Recorded:
        def __init__(self, path: str, sess_options: object, providers: list[object], **_: object) -> None:
            asked.extend(providers)

        def get_providers(self) -> list[str]:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]

    monkeypatch.setattr(session_module.ort, "InferenceSession", Recorded)
    session_module._open_file(tmp_path / "model.onnx", ort.SessionOptions(), "cuda")
    name, options = asked[0]  # type: ignore[misc]
    assert name == "CUDAExecutionProvider" and asked[1:] == ["CPUExecutionProvider"]
    allowed = int(options["sdpa_kernel"])
    assert allowed & 1 and not allowed & 8  # flash attention allowed, cuDNN's left out
    session_module._open_file(tmp_path / "model.onnx", ort.SessionOptions(), "cpu")
    assert asked[2] == ("CPUExecutionProvider", {})

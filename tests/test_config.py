"""Settings: the seed's names from the environment and .env, validated with clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from ortmodels.config import load_settings
from ortmodels.errors import ConfigurationError, InvalidModelNameError


def test_defaults() -> None:
    settings = load_settings()
    assert settings.model_device == "auto"
    assert settings.model_dtype == "auto"
    assert settings.default_embedding_model == "all-minilm-l6-v2"
    assert settings.default_chat_model == "smollm2-135m-instruct"


def test_names_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LOCAL_MODELS_DIR", str(tmp_path))
    monkeypatch.setenv("DEFAULT_CHAT_MODEL", "my-chat")
    monkeypatch.setenv("DEFAULT_EMBEDDING_MODEL", "my-emb")
    monkeypatch.setenv("MODEL_DEVICE", "cpu")
    monkeypatch.setenv("MODEL_DTYPE", "int8")
    settings = load_settings()
    assert settings.local_models_dir == tmp_path
    assert (settings.default_chat_model, settings.default_embedding_model) == ("my-chat", "my-emb")
    assert (settings.model_device, settings.model_dtype) == ("cpu", "int8")


def test_dotenv_file_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("LOCAL_MODELS_DIR")
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("LOCAL_MODELS_DIR=/srv/models\nMODEL_DTYPE=float16\n")
    settings = load_settings()
    assert settings.local_models_dir == Path("/srv/models")
    assert settings.model_dtype == "fp16"


def test_a_models_folder_under_home_is_expanded_and_a_missing_one_is_named(monkeypatch: pytest.MonkeyPatch,
                                                                            tmp_path: Path) -> None:
    """``~/models`` (a .env line is not read by a shell) is the home folder's; asking a folder
    that does not exist for a model says so (it said only "Known models: none")."""
    from ortmodels import ModelManager
    from ortmodels.errors import UnknownModelError

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("LOCAL_MODELS_DIR", "~/models")
    assert load_settings().local_models_dir == tmp_path / "models"
    manager = ModelManager()
    manager.configure()
    with pytest.raises(UnknownModelError, match=rf"in {tmp_path / 'models'} \(no such folder: point LOCAL_MODELS_DIR"):
        manager.get_chat_model("some-chat")


@pytest.mark.parametrize(
    ("device", "expected"),
    [("auto", "auto"), ("CPU", "cpu"), ("cuda", "cuda"), ("coreml", "coreml"), ("mps", "coreml")],
)
def test_device_values(monkeypatch: pytest.MonkeyPatch, device: str, expected: str) -> None:
    monkeypatch.setenv("MODEL_DEVICE", device)
    assert load_settings().model_device == expected


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [("auto", "auto"), ("float32", "fp32"), ("float16", "fp16"), ("bfloat16", "bf16"),
     ("int8", "int8"), ("int4", "int4"), ("FP32", "fp32")],
)
def test_dtype_values(monkeypatch: pytest.MonkeyPatch, dtype: str, expected: str) -> None:
    monkeypatch.setenv("MODEL_DTYPE", dtype)
    assert load_settings().model_dtype == expected


@pytest.mark.parametrize(
    ("var", "value", "named"),
    [("MODEL_DEVICE", "tpu", "MODEL_DEVICE"), ("MODEL_DTYPE", "int3", "MODEL_DTYPE"),
     ("MODEL_THREADS", "-2", "MODEL_THREADS")],
)
def test_bad_values_name_the_setting(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, named: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigurationError, match=named) as info:
        load_settings()
    assert value in str(info.value)


def test_default_model_name_must_be_plain(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEFAULT_EMBEDDING_MODEL", "../etc")
    with pytest.raises(ConfigurationError, match="DEFAULT_EMBEDDING_MODEL"):
        load_settings()
    assert issubclass(InvalidModelNameError, ValueError)


@pytest.mark.parametrize(("value", "fp32", "int4"), [(None, True, False), ("auto", True, False), ("on", True, True),
                                                     ("true", True, True), ("off", False, False), ("0", False, False)])
def test_speculative_switch(monkeypatch: pytest.MonkeyPatch, value: str | None, fp32: bool, int4: bool) -> None:
    if value is not None:
        monkeypatch.setenv("MODEL_SPECULATIVE", value)
    settings = load_settings()
    assert (settings.speculates("fp32"), settings.speculates("int4")) == (fp32, int4)
    monkeypatch.setenv("MODEL_SPECULATIVE", "sometimes")
    with pytest.raises(ConfigurationError, match="MODEL_SPECULATIVE"):
        load_settings()

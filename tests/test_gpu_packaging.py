"""The GPU build (packaging/gpu) is the CPU build with onnxruntime-gpu for onnxruntime, and nothing else.

onnxruntime and onnxruntime-gpu both install the module ``onnxruntime``, so a venv must hold one
of them: no requirement of either build may name the other's. scripts/check_gpu_install.sh
(`make check-gpu-install`, not run here: the wheel is large) installs both for real; this test
keeps the two pyproject files from drifting apart in the meantime.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import ortmodels

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parents[1]
CPU = tomllib.loads((ROOT / "pyproject.toml").read_text())
GPU = tomllib.loads((ROOT / "packaging" / "gpu" / "pyproject.toml").read_text())
# The CPU project's requirement -> the GPU project's; every other requirement is the same.
SWAPS = {
    "onnxruntime>=1.20": "onnxruntime-gpu>=1.20",
    "optimum-onnx[onnxruntime]==0.1.0": "optimum-onnx[onnxruntime-gpu]==0.1.0",
    "ortmodels[serve]": "ortmodels-gpu[serve]",
}
# Extras the GPU build leaves out, and why.
CPU_ONLY_EXTRAS = {"dev": "fastembed needs the plain onnxruntime; the tests run on the CPU build"}


def _requirements(project: dict) -> list[str]:
    return [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]


def _onnxruntime_builds(requirements: list[str]) -> set[str]:
    """The ONNX Runtime distributions named, directly or as an extra (optimum-onnx[onnxruntime-gpu])."""
    found = set()
    for requirement in requirements:
        name, _, extras = re.match(r"([A-Za-z0-9._-]+)(\[([^\]]*)\])?", requirement).groups()
        found |= {n.strip() for n in [name, *(extras or "").split(",")] if n.strip().startswith("onnxruntime")}
    return found


def test_the_gpu_project_is_the_cpu_project_with_onnxruntime_gpu() -> None:
    cpu, gpu = CPU["project"], GPU["project"]
    assert gpu["name"] == "ortmodels-gpu" and cpu["name"] == "ortmodels"
    for key in ("version", "requires-python", "license", "scripts"):
        assert gpu[key] == cpu[key], key
    assert cpu["version"] == ortmodels.__version__
    assert gpu["dependencies"] == [SWAPS.get(r, r) for r in cpu["dependencies"]]
    expected = {name: [SWAPS.get(r, r) for r in extra]
                for name, extra in cpu["optional-dependencies"].items() if name not in CPU_ONLY_EXTRAS}
    assert gpu["optional-dependencies"] == expected
    assert CPU["build-system"] == GPU["build-system"]
    packages = [project["tool"]["setuptools"]["packages"]["find"]["include"] for project in (CPU, GPU)]
    assert packages[0] == packages[1]
    assert CPU["tool"]["setuptools"]["package-data"] == GPU["tool"]["setuptools"]["package-data"]


def test_each_build_names_one_onnxruntime() -> None:
    assert _onnxruntime_builds(_requirements(CPU["project"])) == {"onnxruntime"}  # no gpu extra to add a second
    assert _onnxruntime_builds(_requirements(GPU["project"])) == {"onnxruntime-gpu"}


def test_the_gpu_project_builds_the_package_two_folders_up() -> None:
    setuptools = GPU["tool"]["setuptools"]
    source = (ROOT / "packaging" / "gpu" / setuptools["package-dir"][""]).resolve()
    assert source == ROOT and setuptools["packages"]["find"]["where"] == [setuptools["package-dir"][""]]
    assert (source / "ortmodels" / "__init__.py").is_file()

"""Shared fixtures: the real sample models, a clean environment and a fresh ModelManager."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from ortmodels.manager import ModelManager
from ortmodels.monitoring import stats

ROOT = Path(__file__).resolve().parents[1]
SAMPLES_DIR = Path(os.environ.get("ORTMODELS_TEST_MODELS_DIR", ROOT / "models")).resolve()
EMBEDDING_SAMPLE = "all-minilm-l6-v2"
CHAT_SAMPLE = "smollm2-135m-instruct"
_SETTINGS_VARS = (
    "LOCAL_MODELS_DIR",
    "DEFAULT_CHAT_MODEL",
    "DEFAULT_EMBEDDING_MODEL",
    "MODEL_DEVICE",
    "MODEL_DTYPE",
    "MODEL_PREPACKED_CACHE",
    "MODEL_THREADS",
    "MODEL_MEMORY_BUDGET",
    "MODEL_KEEP_ALIVE",
    "MODEL_VERIFY_FILES",
    "MODEL_UNLOAD_TIMEOUT",
    "MODEL_MAX_BATCH",
    "MODEL_KV_CACHE",
    "MODEL_KV_DTYPE",
    "MODEL_PROMPT_CACHE",
    "MODEL_SPECULATIVE",
    "MODEL_PROMPT_CACHE_DIR",
    "MODEL_RAY_ROUTING",
    "MODEL_RAY_ROUTING_IMBALANCE",
)


@pytest.fixture(autouse=True)
def clean_settings(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory):
    """No user .env or variable leaks in; models come from the sample store; a fresh manager."""
    for var in _SETTINGS_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LOCAL_MODELS_DIR", str(SAMPLES_DIR))
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))  # so no stray .env is read
    ModelManager._instance = None
    stats.registry().reset()
    yield
    if ModelManager._instance is not None:
        ModelManager._instance.configure()
    ModelManager._instance = None


def manager_on(monkeypatch: pytest.MonkeyPatch, store: Path, **env: str) -> ModelManager:
    """The process's ModelManager, configured anew on the model store ``store`` with ``env`` set."""
    monkeypatch.setenv("LOCAL_MODELS_DIR", str(store))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    manager = ModelManager()
    manager.configure()
    return manager


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    """The sample store with the embedding sample exported in fp32 and int8 (by `make test`)."""
    manifest = SAMPLES_DIR / EMBEDDING_SAMPLE / "onnx" / "manifest.json"
    if not manifest.is_file():
        pytest.fail(
            f"{manifest} is missing: run 'make test' (or 'ortmodels samples && ortmodels export "
            f"{EMBEDDING_SAMPLE} --dtype fp32,int8') first."
        )
    return SAMPLES_DIR


@pytest.fixture
def copied_embedding_model(samples_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the exported embedding sample, safe to damage."""
    models = tmp_path / "models"
    target = models / EMBEDDING_SAMPLE
    shutil.copytree(samples_dir / EMBEDDING_SAMPLE, target, symlinks=True,
                    ignore=shutil.ignore_patterns("model.safetensors"))
    return target


def _known_failure(item: pytest.Item) -> tuple[str, type[BaseException]] | None:
    known = getattr(getattr(item, "module", None), "KNOWN_MODEL_FAILURES", {})
    return known.get((item.cls.__name__ if item.cls else "", getattr(item, "originalname", item.name)))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests a module lists in ``KNOWN_MODEL_FAILURES`` as expected to fail, each with
    its own reason and the one exception type that failure raises.

    Strict: a listed test that passes fails the run, so the list cannot outlive the failure;
    and a listed test that fails with any other exception type fails as usual (see
    `pytest_runtest_makereport`: the type must match exactly, not as a base class).
    """
    for item in items:
        entry = _known_failure(item)
        if entry is None:
            continue
        reason, raises = entry
        if not (isinstance(raises, type) and issubclass(raises, BaseException)):
            raise TypeError(f"KNOWN_MODEL_FAILURES[{item.nodeid}] must name one exception type, not {raises!r}")
        item.add_marker(pytest.mark.xfail(reason=reason, raises=raises, strict=True))


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """A known failure counts as expected only if it raised exactly the type it lists."""
    outcome = yield
    report = outcome.get_result()
    entry = _known_failure(item)
    if entry is None or call.when != "call" or call.excinfo is None or not hasattr(report, "wasxfail"):
        return
    if type(call.excinfo.value) is not entry[1]:
        report.outcome = "failed"
        report.longrepr = (f"{item.nodeid} is a known failure raising {entry[1].__qualname__}, but it raised "
                           f"{type(call.excinfo.value).__qualname__}:\n{item.repr_failure(call.excinfo)}")
        del report.wasxfail


def load_example(name: str, path: Path) -> ModuleType:
    """An example file as a module (examples/ is not a package), registered in ``sys.modules``
    under ``name`` so pydantic and dataclasses can resolve its classes."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules[name] = module
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    return sys.modules[name]

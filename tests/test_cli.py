"""The ortmodels command, run as a user runs it (a subprocess), on the real samples."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import EMBEDDING_SAMPLE


def ortmodels(*args: str, models_dir: Path) -> subprocess.CompletedProcess[str]:
    import os

    env = {**os.environ, "LOCAL_MODELS_DIR": str(models_dir), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "ortmodels", *args], capture_output=True, text=True, env=env)


def test_list_table_and_json(samples_dir: Path) -> None:
    table = ortmodels("list", models_dir=samples_dir)
    assert table.returncode == 0, table.stderr
    assert EMBEDDING_SAMPLE in table.stdout and "fp32, int8" in table.stdout
    rows = json.loads(ortmodels("list", "--json", models_dir=samples_dir).stdout)
    by_name = {r["name"]: r for r in rows}
    assert by_name[EMBEDDING_SAMPLE]["kind"] == "embedding"
    assert set(by_name[EMBEDDING_SAMPLE]["variants"]) >= {"fp32", "int8"}


def test_info_shows_parity(samples_dir: Path) -> None:
    out = ortmodels("info", EMBEDDING_SAMPLE, models_dir=samples_dir)
    assert out.returncode == 0, out.stderr
    assert "cosine_min" in out.stdout and "pooling" in out.stdout


@pytest.mark.slow
def test_embed_prints_vectors(samples_dir: Path) -> None:
    out = ortmodels("embed", EMBEDDING_SAMPLE, "hello", "world", "--full", models_dir=samples_dir)
    assert out.returncode == 0, out.stderr
    vectors = json.loads(out.stdout)
    assert len(vectors) == 2 and len(vectors[0]) == 384
    cut = ortmodels("embed", EMBEDDING_SAMPLE, "hello", "--query", "--dimensions", "64", "--matryoshka", "--full",
                    models_dir=samples_dir)
    assert cut.returncode == 0, cut.stderr
    assert len(json.loads(cut.stdout)[0]) == 64
    refused = ortmodels("embed", EMBEDDING_SAMPLE, "hello", "--dimensions", "64", models_dir=samples_dir)
    assert refused.returncode == 1 and "gives 384 dimensions" in refused.stderr and "Traceback" not in refused.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("info", "nope"), "Unknown model 'nope'"),
        (("info", "../etc"), "Invalid model name"),
        (("embed", "nope", "x"), "Known models:"),
        (("export", "--dtype", "fp8", EMBEDDING_SAMPLE), "Unknown precision 'fp8'"),
        (("export",), "Give a model name or --all"),
    ],
)
def test_errors_are_one_clear_line(samples_dir: Path, args: tuple[str, ...], message: str) -> None:
    out = ortmodels(*args, models_dir=samples_dir)
    assert out.returncode == 1
    assert message in out.stderr and "Traceback" not in out.stderr


def test_empty_store_says_how_to_get_models(tmp_path: Path) -> None:
    out = ortmodels("list", models_dir=tmp_path)
    assert out.returncode == 0 and "ortmodels samples" in out.stdout


@pytest.mark.slow
def test_chat_one_prompt_streams_the_answer(samples_dir: Path) -> None:
    out = ortmodels("chat", "smollm2-135m-instruct", "What is the capital of France?", "--max-tokens", "24",
                    models_dir=samples_dir)
    assert out.returncode == 0, out.stderr
    assert "Paris" in out.stdout


@pytest.mark.slow
def test_chat_conversation_keeps_history(samples_dir: Path) -> None:
    import os

    env = {**os.environ, "LOCAL_MODELS_DIR": str(samples_dir), "MODEL_DTYPE": "fp32", "COLUMNS": "200"}
    out = subprocess.run(
        [sys.executable, "-m", "ortmodels", "chat", "--max-tokens", "24", "--system", "Be brief."],
        input="What is the capital of France?\n/exit\n", capture_output=True, text=True, env=env,
    )
    assert out.returncode == 0, out.stderr
    assert "/exit or Ctrl-D" in out.stdout and "Paris" in out.stdout

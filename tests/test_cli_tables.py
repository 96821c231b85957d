"""`list`, `versions`, `ps` and `stats` in a narrow terminal: what a user copies is never cut.

Each command runs as a user runs it (a subprocess, its width set by ``COLUMNS``) on the real
sample store; every model name and version id must appear whole on one line of its output.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ortmodels import ModelManager

from .conftest import CHAT_SAMPLE, EMBEDDING_SAMPLE

WIDTHS = (80, 60)
# A name a user may well give a fine-tuned checkpoint: longer than any table column can fold.
LONG_NAME = "all-minilm-l6-v2-finetuned-on-our-support-tickets"


def _cli(*args: str, columns: int, models_dir: Path) -> str:
    env = {**os.environ, "LOCAL_MODELS_DIR": str(models_dir), "COLUMNS": str(columns)}
    out = subprocess.run([sys.executable, "-m", "ortmodels", *args], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _assert_whole(output: str, values: list[str], columns: int) -> None:
    lines = output.splitlines()
    for value in values:
        assert any(value in line for line in lines), f"{value!r} is cut at {columns} columns:\n{output}"
    assert "…" not in output, f"a cell was cut at {columns} columns:\n{output}"


@pytest.mark.parametrize("columns", WIDTHS)
def test_list_keeps_model_names_whole(samples_dir: Path, columns: int) -> None:
    out = _cli("list", columns=columns, models_dir=samples_dir)
    _assert_whole(out, [EMBEDDING_SAMPLE, CHAT_SAMPLE], columns)
    if columns == 80:  # the sample store still fits a table at 80 columns
        assert any(line.startswith("│ " + CHAT_SAMPLE + " ") for line in out.splitlines()), out


@pytest.mark.parametrize("columns", WIDTHS)
def test_list_keeps_a_long_name_whole(samples_dir: Path, tmp_path: Path, columns: int) -> None:
    folder = tmp_path / LONG_NAME
    folder.mkdir()
    for name in ("config.json", "modules.json", "sentence_bert_config.json", "tokenizer.json",
                 "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy(samples_dir / EMBEDDING_SAMPLE / name, folder / name)
    out = _cli("list", columns=columns, models_dir=tmp_path)
    _assert_whole(out, [LONG_NAME], columns)
    assert "not exported" in out


@pytest.mark.parametrize("columns", WIDTHS)
def test_versions_keep_version_ids_whole(samples_dir: Path, columns: int) -> None:
    for name in (EMBEDDING_SAMPLE, CHAT_SAMPLE):
        ids = [v["id"] for v in json.loads(_cli("versions", name, "--json", columns=200, models_dir=samples_dir))]
        assert ids
        out = _cli("versions", name, columns=columns, models_dir=samples_dir)
        _assert_whole(out, ids, columns)
        assert "*" in out  # the active version is still marked


def test_ps_and_stats_keep_names_and_versions_whole(samples_dir: Path) -> None:
    manager = ModelManager()
    manager.get_embedding_model().embed_query("hello")
    manager.get_chat_model().invoke("hi", max_tokens=1)
    manager._publisher.publish()
    loaded = {m.name: m for m in manager.loaded()}
    assert set(loaded) == {EMBEDDING_SAMPLE, CHAT_SAMPLE}
    versions = [m["version"] for p in json.loads(_cli("ps", "--json", columns=200, models_dir=samples_dir))
                if p["pid"] == os.getpid() for m in p["loaded"]]
    assert len(versions) == 2 and all(versions)
    for columns in WIDTHS:
        _assert_whole(_cli("ps", columns=columns, models_dir=samples_dir), [*loaded, *versions], columns)
        _assert_whole(_cli("stats", columns=columns, models_dir=samples_dir), list(loaded), columns)

"""The ortmodels command, run as a user runs it (a subprocess), on the real samples."""

from __future__ import annotations

import ast
import json
import re
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


def test_every_command_is_named_with_its_module() -> None:
    """A run imports only the module of its command (`COMMANDS`), so each command must be listed."""
    from ortmodels.cli import COMMANDS, _register, app

    _register()
    names = {c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands if c.callback}
    assert names == set(COMMANDS)


def test_a_command_imports_only_its_own_module() -> None:
    """``ortmodels chat`` does not pay for the export command's imports (a quarter of a second)."""
    code = ("import atexit, sys\n"
            "atexit.register(lambda: print(sorted(m for m in sys.modules if m.startswith('ortmodels'))))\n"
            "sys.argv = ['ortmodels', 'chat', '--help']\n"
            "from ortmodels.cli import main\n"
            "main()\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "--max-tokens" in out.stdout
    imported = set(ast.literal_eval(out.stdout.strip().splitlines()[-1]))
    assert "ortmodels.cli.chat" in imported
    assert not imported & {"ortmodels.cli.export", "ortmodels.export", "ortmodels.cli.serve"}


#: Command lines `chat_run.quick_arguments` reads itself, and what typer must read (help, a root
#: option, unknown, malformed, repeated or missing values, ``--``, a third positional word).
QUICK_LINES = [["chat"], ["chat", "m"], ["chat", "m", "hello there"], ["chat", "m", "q", "--max-tokens", "16"],
               ["chat", "--max-tokens=16", "m"], ["chat", "--max-tokens", "24", "--system", "Be brief."],
               ["chat", "m", "q", "-s", "x", "-t", "0.5", "--think"], ["chat", "-", "--no-think", "--temperature", ".5"]]
TYPER_LINES = [["-v", "chat", "m"], ["chat", "--help"], ["chat", "m", "q", "--max-tokens", "abc"],
               ["chat", "m", "q", "x"], ["chat", "--unknown"], ["chat", "m", "--max-tokens"], ["chat", "--think=1"],
               ["chat", "--", "-q"], ["chat", "-t", "-1"], ["chat", "--max-tokens", "1", "--max-tokens", "2"],
               ["chat", "-t", "1e-3"], ["chat", "m", "q", "-s=x"], ["chat", "m", "q", "-t=0.5"]]


def test_a_plain_chat_line_is_read_without_typer_as_typer_reads_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """``ortmodels chat`` reads a plain command line without typer (its import and first parse
    cost 30-50 ms of every answer), into exactly the values typer gives its command; anything
    else is left to typer, which reports or helps."""
    from typer.testing import CliRunner

    from ortmodels.cli import _register, app, chat_run

    _register("chat")
    passed: list[dict[str, object]] = []
    monkeypatch.setattr(chat_run, "run_chat", lambda **values: passed.append(values))
    for argv in QUICK_LINES:
        result = CliRunner().invoke(app, argv)
        assert result.exit_code == 0, (argv, result.output)
        assert chat_run.quick_arguments(argv) == passed.pop(), argv
    for argv in TYPER_LINES:
        assert chat_run.quick_arguments(argv) is None, argv


@pytest.mark.slow
def test_chat_ends_quickly_with_its_exit_handlers_run(samples_dir: Path, tmp_path: Path) -> None:
    """The chat command skips the interpreter's teardown but still runs its exit handlers: the
    manager's state file for ``ortmodels ps`` is removed, the answer is all there."""
    import os

    env = {**os.environ, "LOCAL_MODELS_DIR": str(samples_dir), "COLUMNS": "200"}
    process = subprocess.Popen([sys.executable, "-X", "importtime", "-m", "ortmodels", "chat", "smollm2-135m-instruct",
                                "What is the capital of France?", "--max-tokens", "24"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    assert "Paris" in stdout and stdout.endswith("\n")
    assert "| ortmodels.cli.chat_run" in stderr and not re.search(r"\|\s+typer\b", stderr)  # a plain line: no typer
    assert not re.search(r"\|\s+numpy\.random\b", stderr)  # a greedy answer makes no random generator
    assert not (samples_dir / ".runtime" / f"{process.pid}.json").exists()
    failed = subprocess.run([sys.executable, "-m", "ortmodels", "chat", "no-such-model", "hi"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert failed.returncode == 1 and "Unknown model 'no-such-model'" in failed.stderr
    assert failed.stderr.count("\n") == 1 and len(failed.stderr) > 80  # one line, even into a pipe

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


def ortmodels(*args: str, models_dir: Path, columns: str = "200") -> subprocess.CompletedProcess[str]:
    import os

    env = {**os.environ, "LOCAL_MODELS_DIR": str(models_dir), "COLUMNS": columns}
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
        (("export",), "Give the model to export (ortmodels export NAME"),
        (("embed", EMBEDDING_SAMPLE, "x", "--query", "--prompt-name", "document"), "both choose the prompt"),
        (("chat", "Capital of France?"), "the model comes first, then the question"),
        (("chat", "smollm2-135m-instruct", "  "), "The question is empty: give one"),
        (("info", "a" * 200), "(200 characters)"),
        (("embed", f"{EMBEDDING_SAMPLE}:int4", "x"), "Embedding models are not exported as int4 (only fp32, int8)"),
        (("chat", "smollm2-135m-instruct", "x", "--temperature", "5"), "temperature=5.0"),
    ],
)
def test_errors_are_one_clear_line(samples_dir: Path, args: tuple[str, ...], message: str) -> None:
    out = ortmodels(*args, models_dir=samples_dir)
    assert out.returncode == 1
    assert message in out.stderr and "Traceback" not in out.stderr


def test_empty_store_says_how_to_get_models(tmp_path: Path) -> None:
    out = ortmodels("list", models_dir=tmp_path)
    assert out.returncode == 0 and "ortmodels samples" in out.stdout
    nothing = ortmodels("export", "--all", models_dir=tmp_path)  # it printed nothing and exited 0
    assert nothing.returncode == 1 and "No checkpoint to export" in nothing.stderr, nothing.stderr
    missing = ortmodels("list", models_dir=tmp_path / "nowhere")
    assert missing.returncode == 0 and "LOCAL_MODELS_DIR: no such folder" in missing.stdout
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    for args in (("list",), ("samples", EMBEDDING_SAMPLE)):  # nothing downloaded: refused first
        refused = ortmodels(*args, models_dir=a_file)
        assert refused.returncode == 1 and "is a file, not a folder" in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr


@pytest.mark.parametrize("raised", ["KeyboardInterrupt()", "ImportError('import numpy failed')", "signal"])
def test_ctrl_c_while_a_command_starts_is_a_quiet_130(raised: str) -> None:
    """It was a traceback from wherever the start was (pydantic, an import), and a death by
    SIGINT; onnxruntime turns one that lands in its numpy import into an ImportError."""
    code = f"""
import os, signal
import ortmodels.cli as cli
def start():
    if {raised!r} == "signal":
        os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C arrives, through the handler main installed
        signal.pause()
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt:
        raise {raised if raised != "signal" else "KeyboardInterrupt()"}
cli._main = start
cli.main()
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 130 and done.stderr == "Aborted!\n", (done.returncode, done.stderr)


@pytest.mark.parametrize("columns", ["0", "wide", "-3"])
def test_a_columns_that_is_no_width_is_ignored(samples_dir: Path, columns: str) -> None:
    """rich printed nothing at all with ``COLUMNS=0``, errors included."""
    table = ortmodels("list", models_dir=samples_dir, columns=columns)
    assert table.returncode == 0 and EMBEDDING_SAMPLE in table.stdout, (table.stdout, table.stderr)
    refused = ortmodels("versions", "nosuch", models_dir=samples_dir, columns=columns)
    assert refused.returncode == 1 and "Unknown model 'nosuch'" in refused.stderr, refused.stderr


def test_text_is_printed_as_text_never_as_markup(samples_dir: Path) -> None:
    """rich reads ``[bold]`` and ``[/]`` as markup: a user's text must not be (it crashed on ``[/]``)."""
    out = ortmodels("embed", EMBEDDING_SAMPLE, "[/]", "[bold red]x[/]", models_dir=samples_dir)
    assert out.returncode == 0, out.stderr
    assert "'[/]': dim 384" in out.stdout and "'[bold red]x[/]': dim 384" in out.stdout
    echoed = ortmodels("embed", EMBEDDING_SAMPLE, "ratio 3:thumbs_up: ok", models_dir=samples_dir)
    assert "'ratio 3:thumbs_up: ok': dim 384" in echoed.stdout, echoed.stdout  # not rich's emoji
    info = ortmodels("info", EMBEDDING_SAMPLE, models_dir=samples_dir)
    assert "passed" in info.stdout and "[green]" not in info.stdout  # the verdict's own style still applies


@pytest.mark.parametrize(("args", "message"), [
    (("--port", "99999"), "'--port'"),
    (("--port", "0"), "'--port'"),
    (("--replicas", "3"), "--replicas only applies with --ray"),
    (("--autoscale", "x", "--threads", "2"), "--autoscale, --threads only apply with --ray"),
])
def test_serve_refuses_what_it_could_not_do(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    """A port past 65535 was bound modulo 65536 under the port printed; Ray's options without
    --ray did nothing, silently. Both refused before anything starts (usage errors: exit 2)."""
    out = ortmodels("serve", *args, models_dir=tmp_path)
    assert out.returncode == 2 and message in out.stderr, out.stderr


def test_stats_takes_one_format(tmp_path: Path) -> None:
    out = ortmodels("stats", "--json", "--prometheus", models_dir=tmp_path)
    assert out.returncode == 2 and "give one" in out.stderr


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
    assert "Paris" in out.stdout


@pytest.mark.slow
def test_a_piped_conversation_writes_only_answers_to_stdout(samples_dir: Path) -> None:
    """Lines piped into ``ortmodels chat NAME`` are turns; stdout gets each answer on its own,
    with no banner or ``you>`` prompt in it (those are for a terminal, and go to stderr)."""
    import os

    env = {**os.environ, "LOCAL_MODELS_DIR": str(samples_dir), "COLUMNS": "200"}
    out = subprocess.run(
        [sys.executable, "-m", "ortmodels", "chat", "smollm2-135m-instruct:fp32", "--max-tokens", "12"],
        input="What is the capital of France?\n\nWhat is the capital of Italy?\n", capture_output=True, text=True,
        env=env, timeout=600,
    )
    assert out.returncode == 0, out.stderr
    assert "you>" not in out.stdout + out.stderr and "/exit" not in out.stdout + out.stderr
    answers = out.stdout.splitlines()
    assert len(answers) == 2 and "Paris" in answers[0] and "Rome" in answers[1], out.stdout


@pytest.mark.slow
def test_a_failed_turn_leaves_the_conversation_going(samples_dir: Path) -> None:
    """A question past the context is said, left out of the history, and the next one answered."""
    import os

    env = {**os.environ, "LOCAL_MODELS_DIR": str(samples_dir), "COLUMNS": "200"}
    long = "word " * 9000
    out = subprocess.run(
        [sys.executable, "-m", "ortmodels", "chat", "smollm2-135m-instruct:int4", "--max-tokens", "24"],
        input=f"{long}\nWhat is the capital of France?\n/exit\n", capture_output=True, text=True, env=env,
        timeout=600,
    )
    assert out.returncode == 1, out.stderr  # piped in: the failed turn fails the command, once all are answered
    assert "exceeds the context" in out.stderr and "not added to the conversation" in out.stderr
    assert "or pass --truncate to drop the oldest" in out.stderr and "1 of 2 turns failed" in out.stderr
    assert out.stdout.strip() and "Paris" in out.stdout and "context" not in out.stdout
    truncated = subprocess.run(
        [sys.executable, "-m", "ortmodels", "chat", "smollm2-135m-instruct:int4", long, "--max-tokens", "4",
         "--truncate"], capture_output=True, text=True, env=env, timeout=600)
    assert truncated.returncode == 0 and truncated.stdout.strip(), truncated.stderr


@pytest.mark.slow
def test_an_answer_into_a_closed_pipe_ends_quietly(samples_dir: Path) -> None:
    """``ortmodels chat ... | head -c 20``: the reader goes away; no traceback."""
    import os

    env = {**os.environ, "LOCAL_MODELS_DIR": str(samples_dir)}
    chat = subprocess.Popen(
        [sys.executable, "-m", "ortmodels", "chat", "smollm2-135m-instruct:int4", "Tell me a long story.",
         "--max-tokens", "400"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )
    assert chat.stdout is not None and chat.stderr is not None
    first = chat.stdout.read(8)  # the answer has begun; then the reader closes its end
    chat.stdout.close()
    errors = chat.stderr.read().decode()
    # 1: it wrote into the closed pipe and stopped (0 only if all 400 tokens were out before the close)
    assert chat.wait(timeout=300) in (0, 1) and first
    assert "Traceback" not in errors and "BrokenPipe" not in errors, errors


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

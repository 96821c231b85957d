"""The ``ortmodels`` command: one module per command group, wired into one typer app."""

from __future__ import annotations

import atexit
import gc
import logging
import os
import shutil
import signal
import sys
import threading
from collections.abc import Callable
from importlib import import_module
from typing import TYPE_CHECKING, Any

from ..errors import ContextLengthError, OrtModelsError

if TYPE_CHECKING:
    import typer
    from rich.console import Console

    app: typer.Typer
    console: Console
    err_console: Console


def _build(name: str) -> Any:
    """The typer app, or a console, made on first use (`__getattr__`): ``ortmodels chat``
    starts opening its model's session before it imports typer (`_open_early`), and a
    one-shot answer is written without rich."""
    if name != "app":
        from rich.console import Console

        stream = sys.stderr if name == "err_console" else sys.stdout
        # Into a pipe or a file rich assumes 80 columns and folds tables and long lines there
        # (a version id over three lines): give it room, unless COLUMNS says otherwise. A
        # COLUMNS that is no width (0, text) is ignored: rich printed nothing at all with 0.
        columns = os.environ.get("COLUMNS", "").strip()
        tty = hasattr(stream, "isatty") and stream.isatty()
        if columns.isdigit() and int(columns) > 0:
            width = None
        else:
            width = shutil.get_terminal_size().columns if tty else PIPE_WIDTH
        # emoji=False: a user's ":thumbs_up:" is text, echoed as given
        return Console(stderr=name == "err_console", width=width, emoji=False)
    import typer

    made = typer.Typer(
        name="ortmodels",
        help="Export Hugging Face checkpoints to ONNX and run them locally.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )

    @made.callback()
    def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what happens.")) -> None:
        _log(verbose)

    return made


#: Columns rich lays output out in when it goes into a pipe or a file (not a terminal).
PIPE_WIDTH = 200


def _log(verbose: bool) -> None:
    """Every command's logging: what the root option ``--verbose`` asks for."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


def __getattr__(name: str) -> Any:
    if name in ("app", "console", "err_console"):
        made = globals().get(name)
        if made is None:
            made = globals()[name] = _build(name)
        return made
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: Each command's module: a run imports only the module of the command it runs (the export
#: module alone costs a quarter of a second), all of them for help or an unknown command.
COMMANDS = {
    "chat": "chat", "demo": "demo", "embed": "embed", "export": "export", "rerank": "rerank", "samples": "samples",
    "serve": "serve", "list": "models", "info": "models",
    "versions": "lifecycle", "rollback": "lifecycle", "prune": "lifecycle", "ps": "lifecycle", "stats": "lifecycle",
}
#: Commands whose process ends without the interpreter's own teardown (see `_exit`), and whose
#: collector is off while they import and load (until `model_loaded`): at the default
#: threshold (700) a chat's start made 290 collections of young objects that were nearly all
#: still alive (0.2 s of CPU on the shared 2-core machine); at 50,000 still one, over the
#: 50,000 objects made while the tokenizer and vocabulary were read (40-60 ms). Their sessions'
#: idle threads do not spin (`stop_spinning`).
QUICK_EXIT = {"chat", "embed"}
#: Allocations between two young-generation collections in those commands, once collecting.
GC_THRESHOLD = 50_000
_collector_held = False


def said(exc: OrtModelsError) -> str:
    """An error's message as a command-line user acts on it (``--truncate``, not Python's
    ``truncate_prompt=True``)."""
    return exc.spelt("pass --truncate") if isinstance(exc, ContextLengthError) else str(exc)


def model_loaded() -> None:
    """A quick command's model is loaded: what the start made is kept out of every later
    collection (`gc.freeze`: it lives until the process ends) and collecting resumes for what
    the answers make. Nothing when `main` did not stop the collector (a test's in-process run)."""
    global _collector_held
    if _collector_held:
        _collector_held = False
        gc.freeze()
        gc.enable()


def _register(command: str | None = None) -> None:
    """Add ``command``'s module's commands to the app (every command when ``None`` or unknown)."""
    if command in COMMANDS:
        import_module(f".{COMMANDS[command]}", __name__)
        return
    from . import chat, demo, embed, export, lifecycle, models, rerank, samples, serve  # noqa: F401  (each adds its commands)


def _command(argv: list[str]) -> str | None:
    """The command word of a command line: the first argument that is not a root option."""
    return next((a for a in argv if not a.startswith("-")), None)


def _exit(code: int) -> None:
    """End a model command's process once its exit handlers have run, skipping the interpreter's
    teardown: its final garbage collections over every loaded module (and a model's session)
    took 0.3 to 0.6 s after the answer was printed. Only when no other non-daemon thread runs
    (the normal exit would wait for it)."""
    if any(t is not threading.main_thread() and not t.daemon for t in threading.enumerate()):
        sys.exit(code)
    atexit._run_exitfuncs()  # what the interpreter would run: logging, engines closed, state files
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: the normal exit would not report it either
            pass
    os._exit(code)


def _open_early(argv: list[str]) -> None:
    """``chat NAME ...``: start opening NAME's session before anything else is imported, so
    that typer, rich, the runtime and the tokenizer load while ONNX Runtime builds it
    (`ortmodels.engine.session.open_early`). A guess from the words alone: any problem,
    or a model the command line turns out not to name, is left to the command itself. The
    session of the last start opens before the settings and the store are even imported
    when nothing it was chosen from has changed (`early_hint`)."""
    words = argv[argv.index("chat") + 1:]
    if not words or words[0].startswith("-"):
        return
    from .early_hint import remember, start

    try:  # the session of the last start, if nothing it was chosen from has changed
        start(words[0])
    except Exception as exc:  # the choice below opens its own
        logging.getLogger(__name__).debug("No remembered session for %s: %s", words[0], exc)
    try:
        from ..config import Settings, load_settings
        from ..runtime.variant import open_chat_early
        from ..store import ModelStore
        from ..store.names import split_tag

        settings = load_settings()
        name, dtype = split_tag(words[0], None)
        key = open_chat_early(ModelStore(settings.local_models_dir), name, dtype or settings.model_dtype, settings)
        remember(words[0], settings.local_models_dir, key,
                 [n for field, info in Settings.model_fields.items() for n in (field, info.alias) if n])
    except Exception as exc:  # the command reports it, with its own message
        logging.getLogger(__name__).debug("No early session for %s: %s", words[0], exc)


def _quick_chat(argv: list[str]) -> Callable[[], None] | None:
    """``chat`` on a plain command line, run without typer (its import and first parse took
    30-50 ms of a one-shot answer); ``None``: typer reads the command line (`chat_run`)."""
    from .chat_run import quick_arguments, run_chat

    values = quick_arguments(argv)
    if values is None:
        return None

    def run() -> None:
        _log(False)
        try:
            run_chat(**values)
        except (EOFError, KeyboardInterrupt):  # as click ends a command it runs
            sys.stderr.write("\nAborted!\n")
            raise SystemExit(1) from None

    return run


#: What a quick command sets in its environment, where the user has not, before numpy loads:
#: OpenBLAS starts one thread per core as numpy is imported, and those spin while they wait
#: (0.09 s of CPU for ``import numpy`` on the shared 2-core machine, 0.047 s with one thread).
#: ortmodels computes nothing through BLAS (sampling and pooling are element-wise), so no
#: figure changes.
QUICK_ENVIRONMENT = {"OPENBLAS_NUM_THREADS": "1"}


def main() -> None:
    seen: list[int] = []

    def interrupted(signum: int, frame: object) -> None:  # Python's own handler, remembered
        seen.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupted)
    try:
        _main()
    except BaseException as exc:
        # seen: an import that turned it into an ImportError; SystemExit: a command that took it
        if isinstance(exc, SystemExit) or not (seen or _interrupted(exc)):
            raise
        # Ctrl-C before a command took it (while it starts): no traceback; 128 + SIGINT, as a
        # shell reports it, and a half-opened session is not waited for
        sys.stderr.write("Aborted!\n")
        sys.stderr.flush()
        os._exit(130)


def _interrupted(exc: BaseException | None) -> bool:
    """Whether ``exc`` is Ctrl-C's, or an error it caused (onnxruntime turns one that lands in its
    ``import numpy`` into an ImportError)."""
    for _ in range(8):
        if exc is None:
            return False
        if isinstance(exc, KeyboardInterrupt):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _main() -> None:
    command = _command(sys.argv[1:])
    if command in QUICK_EXIT:
        if "numpy" not in sys.modules:  # else too late to matter (a test's in-process run)
            for name, value in QUICK_ENVIRONMENT.items():
                os.environ.setdefault(name, value)
        global _collector_held
        gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])
        gc.disable()
        _collector_held = True
        from ..engine.session import stop_spinning

        stop_spinning()
    quick = None
    if command == "chat":
        _open_early(sys.argv[1:])
        quick = _quick_chat(sys.argv[1:])
    if quick is None:
        _register(command)
    try:
        if quick is not None:
            quick()
        else:
            __getattr__("app")()
    except OrtModelsError as exc:
        from rich.markup import escape

        # one line whatever the width (a pipe, a log): the terminal wraps it, rich does not cut it
        __getattr__("err_console").print(f"[bold red]error:[/] {escape(said(exc))}", highlight=False, soft_wrap=True)
        code: object = 1
    except SystemExit as exc:  # click ends every run with one
        code = exc.code
    except BrokenPipeError:  # the reader went away (`| head`): stop, quietly, as click does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
        code = 1
    else:
        code = 0
    if command not in QUICK_EXIT or not isinstance(code, int | None):
        sys.exit(code)
    _exit(code or 0)

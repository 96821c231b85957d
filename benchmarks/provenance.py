"""Where a result file comes from, and whether the code it measures changed after its run.

Every benchmark stamps its JSON with the commit its run measured (``git rev-parse HEAD``)
and whether the code had uncommitted changes (`stamp`); `judge` compares that commit with
the last commit that changed the measured code (``ortmodels/``, less the front ends a
benchmark does not run, and the benchmark's own files: `measured_paths`). The comparison is made against the history *up to a reference
commit* (the HEAD at the time the README section was rendered, which the section records),
never against whatever HEAD is current, so a later commit does not change what an already
rendered section says: the section states how old each result was when it was rendered.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmarks.targets import SIZES_PARTS

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = "benchmarks/results"

#: Shared by every benchmark: machine facts, versions, the engine settings of engine-against-engine runs.
_SHARED = ("benchmarks/report.py",)
_CHAT_WORKER = ("benchmarks/chat_worker.py", "benchmarks/chat_ortmodels.py", "benchmarks/chat_hf.py",
                "benchmarks/contenders.py", "benchmarks/prompts.py", "benchmarks/protocol.py",
                "benchmarks/measure.py", "benchmarks/peers")
#: What each result file measures besides ``ortmodels/``: its benchmark and the helpers that take its figures.
MEASURED_CODE: dict[str, tuple[str, ...]] = {part: (*_SHARED, *paths) for part, paths in {
    "chat": ("benchmarks/bench_chat.py", *_CHAT_WORKER),
    "startup": ("benchmarks/bench_startup.py", *_CHAT_WORKER),
    "quality": ("benchmarks/bench_quality.py", "benchmarks/quality.py", *_CHAT_WORKER),
    "embeddings": ("benchmarks/bench_embeddings.py", "benchmarks/quality.py", "benchmarks/corpus.py"),
    "rerank": ("benchmarks/bench_rerank.py", "benchmarks/bench_server.py", "benchmarks/checkpoints.py",
               "benchmarks/corpus.py"),
    "concurrency": ("benchmarks/bench_concurrency.py", "benchmarks/corpus.py"),
    "server": ("benchmarks/bench_server.py", "benchmarks/bench_concurrency.py", "benchmarks/corpus.py",
               "benchmarks/peers"),
    "ray": ("benchmarks/bench_ray.py", "benchmarks/bench_server.py", "benchmarks/bench_concurrency.py",
            "benchmarks/corpus.py"),
    "speculative": ("benchmarks/bench_speculative.py",),
    **{part: ("benchmarks/bench_sizes.py", "benchmarks/sizes_worker.py", "benchmarks/bench_server.py",
              "benchmarks/checkpoints.py", "benchmarks/corpus.py", *_CHAT_WORKER) for part in SIZES_PARTS.values()},
    "ray_prefix": ("benchmarks/bench_ray_prefix.py", "benchmarks/bench_server.py", "benchmarks/bench_concurrency.py",
                   "benchmarks/corpus.py"),
}.items()}


#: The front ends' code, and the parts whose processes run it. Nothing in the library imports
#: ``serve/`` or ``cli/`` (tests/test_import_direction.py: only the front ends import freely, and
#: ``import ortmodels`` imports neither), so a change there leaves the in-process benchmarks
#: (chat, quality, embeddings, concurrency, speculative) current. Ray Serve's deployments and
#: router run only in the Ray benchmarks' processes (`ortmodels serve` imports them for ``--ray``
#: only, and ``ray`` is an extra kept in ``serve/ray/`` by the same test).
RAY_CODE = "ortmodels/serve/ray"
RAY_PARTS = ("ray", "ray_prefix")
SERVER_CODE = "ortmodels/serve"
SERVER_PARTS = ("server", "rerank", *RAY_PARTS, *SIZES_PARTS.values())
"""Parts that start ``ortmodels serve`` (rerank and sizes measure a server besides their in-process rows)."""
CLI_CODE = ("ortmodels/cli", "ortmodels/__main__.py")
CLI_PARTS = ("startup", *SERVER_PARTS)
"""Parts that run the ``ortmodels`` command: ``ortmodels chat`` (startup), ``ortmodels serve`` (the rest)."""


def measured_paths(part: str) -> tuple[str, ...]:
    """The paths (git pathspecs) whose changes make ``part``'s result file older than the code."""
    left_out = [*(() if part in RAY_PARTS else (RAY_CODE,)),
                *(() if part in SERVER_PARTS else (SERVER_CODE,)),
                *(() if part in CLI_PARTS else CLI_CODE)]
    return ("ortmodels", *(f":(exclude){path}" for path in left_out), *MEASURED_CODE.get(part, ()))


def git(*args: str, root: Path = ROOT) -> str | None:
    """``git args`` in ``root``: its stripped output, or None when git fails or is missing."""
    try:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def stamp(root: Path = ROOT) -> dict[str, Any]:
    """What a result file records about the code it measured: HEAD's commit and whether
    ``ortmodels/`` or ``benchmarks/`` (results aside) had uncommitted changes; None each
    outside a git checkout."""
    commit = git("rev-parse", "HEAD", root=root)
    if commit is None:
        return {"commit": None, "dirty": None}
    changes = git("status", "--porcelain", "--", "ortmodels", "benchmarks", f":(exclude){RESULTS_DIR}", root=root)
    return {"commit": commit, "dirty": None if changes is None else bool(changes)}


def resolve(commit: str, root: Path = ROOT) -> str | None:
    """The full hash of ``commit`` when this repository has it, else None."""
    return git("rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}", root=root)


def is_ancestor(older: str, newer: str, root: Path = ROOT) -> bool:
    """Whether ``older`` is ``newer`` or one of its ancestors."""
    try:
        done = subprocess.run(["git", "merge-base", "--is-ancestor", older, newer], cwd=root,
                              capture_output=True, check=False, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def commit_date(commit: str, root: Path = ROOT) -> str:
    """The commit's committer date, UTC, to the minute (``2026-12-03 08:00``)."""
    seconds = git("show", "-s", "--format=%ct", commit, root=root)
    if not seconds:
        return "?"
    return datetime.fromtimestamp(int(seconds), timezone.utc).strftime("%Y-%m-%d %H:%M")


@dataclass(frozen=True)
class Commit:
    """A commit as the README names it: its hash and its date."""

    sha: str
    date: str

    @property
    def short(self) -> str:
        return self.sha[:7]


@dataclass(frozen=True)
class Origin:
    """One result file's provenance, judged against the code as of a reference commit."""

    part: str
    date: str  # when its run wrote it (ISO, as the file records it)
    commit: str | None  # the commit its run measured; None: the file records none
    dirty: bool | None  # the run's code had uncommitted changes; None: not recorded
    in_history: bool  # the recorded commit is the reference or one of its ancestors
    committed_in: Commit | None  # no commit recorded: the last commit that changed the file, up to the reference
    code_changed_in: Commit | None  # the measured code changed after the run, last in this commit; None: it did not
    known: bool  # whether "older than the code" could be decided
    changes_since: int = 0  # commits up to the reference that changed the measured code after the run

    @property
    def older(self) -> bool:
        return self.code_changed_in is not None

    @property
    def current(self) -> bool:
        """Measured at a commit the reference includes, on clean code that has not changed since."""
        return self.known and not self.older and self.commit is not None and self.dirty is False


def last_change(paths: tuple[str, ...], reference: str, root: Path = ROOT) -> Commit | None:
    """The last commit up to ``reference`` that changed any of ``paths``."""
    sha = git("log", "-1", "--format=%H", reference, "--", *paths, root=root)
    return Commit(sha, commit_date(sha, root)) if sha else None


def changes_between(base: str, reference: str, paths: tuple[str, ...], root: Path = ROOT) -> int:
    """How many commits in ``reference``'s history but not ``base``'s changed any of ``paths``."""
    count = git("rev-list", "--count", f"{base}..{reference}", "--", *paths, root=root)
    return int(count) if count else 0


def judge(part: str, data: Mapping[str, Any], reference: str, root: Path = ROOT) -> Origin:
    """Whether the result file of ``part`` is older than the code it measures, as of ``reference``.

    With a recorded commit: older when the last change of ``ortmodels/`` (`RAY_CODE` only for
    the Ray parts) or the part's `MEASURED_CODE` up to ``reference`` is not in that commit's
    history. Without one (files written before results were stamped), the commit that last
    changed the file bounds its run from above: older when the code changed after that
    commit, undecided otherwise."""
    paths = measured_paths(part)
    code = last_change(paths, reference, root)
    recorded = data.get("commit")
    dirty = data.get("dirty")
    date = str(data.get("date", "?"))
    if recorded:
        in_history = resolve(recorded, root) is not None and is_ancestor(recorded, reference, root)
        if not in_history:
            return Origin(part, date, recorded, dirty, False, None, None, False)
        changed = code if code is not None and not is_ancestor(code.sha, recorded, root) else None
        return Origin(part, date, recorded, dirty, True, None, changed, True,
                      changes_between(recorded, reference, paths, root) if changed else 0)
    committed = last_change((f"{RESULTS_DIR}/{part}.json",), reference, root)
    if committed is None:
        return Origin(part, date, None, dirty, False, None, None, False)
    changed = code if code is not None and not is_ancestor(code.sha, committed.sha, root) else None
    return Origin(part, date, None, dirty, False, committed, changed, changed is not None,
                  changes_between(committed.sha, reference, paths, root) if changed else 0)


def judge_all(results: Mapping[str, Mapping[str, Any]], reference: str, root: Path = ROOT) -> dict[str, Origin]:
    return {part: judge(part, data, reference, root) for part, data in results.items()}

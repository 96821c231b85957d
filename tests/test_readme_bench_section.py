"""The README's benchmark sections are what `benchmarks/readme.py` renders from the committed
results, and each result file is stamped with its run's commit and marked when the code it
measures changed after that run.

The staleness rule: a section records the commit it was rendered against, and every mark is
judged against the history up to that commit, never against the current HEAD. So a commit
made after the rendering (say, one that changes ``ortmodels/``) leaves the expected README
unchanged and this test passing; a figure edited by hand, a result file rewritten without
re-rendering, or a section rendered from other files fails it. The scratch-repository tests
below pin the rule itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import provenance
from benchmarks.provenance import judge, stamp
from benchmarks.readme import (
    END,
    START,
    check,
    chat_section,
    expected_readme,
    reference_commit,
    render,
    render_readme,
    rendered_against,
)

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout.strip()


def _history_or_skip() -> None:
    """The section's marks are judged from git history: a checkout without it cannot check them."""
    if provenance.git("rev-parse", "HEAD", root=ROOT) is None:
        pytest.skip("not a git checkout: the provenance marks need the history")
    if provenance.git("rev-parse", "--is-shallow-repository", root=ROOT) == "true":
        pytest.skip("shallow clone: the commits the results record may be missing from it")


# -- the committed README against the committed results -----------------------------------------


def test_readme_sections_equal_their_rendering_from_the_results() -> None:
    _history_or_skip()
    text = README.read_text(encoding="utf-8")
    recorded = rendered_against(text)
    assert recorded is not None, "README's benchmark section records no commit: run `python -m benchmarks.readme`"
    assert reference_commit(recorded, ROOT) is not None, (
        f"README's benchmark section was rendered against {recorded}, which this history lacks "
        "(rebased or squashed away): run `python -m benchmarks.readme` and commit the README")
    diff = check(README)
    assert not diff, "README's benchmark sections differ from benchmarks/results/*.json " \
                     "(run `python -m benchmarks.readme`):\n" + "".join(diff[:80])


def test_readme_check_exits_1_with_a_diff_when_a_figure_was_edited(tmp_path: Path) -> None:
    _history_or_skip()
    text = README.read_text(encoding="utf-8")
    section = text.split(START, 1)[1].split(END, 1)[0]
    line = next(ln for ln in section.splitlines() if ln.startswith("| chat decode tok/s, fp32"))
    cells = line.split(" | ")
    edited = " | ".join([cells[0], "9.999", *cells[2:]])
    copy = tmp_path / "README.md"
    copy.write_text(text.replace(line, edited), encoding="utf-8")
    unchanged = tmp_path / "unchanged.md"
    unchanged.write_text(text, encoding="utf-8")

    def run(readme: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "benchmarks.readme", "--check", "--readme", str(readme)],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)

    bad, good = run(copy), run(unchanged)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert f"-{edited}" in bad.stdout and f"+{line}" in bad.stdout
    assert copy.read_text(encoding="utf-8") == text.replace(line, edited), "--check must not write"
    assert good.returncode == 0, good.stdout + good.stderr


# -- the staleness rule, on a scratch repository -------------------------------------------------


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository shaped like this one: ortmodels/, two benchmarks, results/."""
    root = tmp_path / "repo"
    (root / "ortmodels").mkdir(parents=True)
    (root / "benchmarks" / "results").mkdir(parents=True)
    (root / "ortmodels" / "engine.py").write_text("STEP = 1\n")
    (root / "benchmarks" / "bench_quality.py").write_text("ROUNDS = 1\n")
    (root / "benchmarks" / "bench_embeddings.py").write_text("ROUNDS = 1\n")
    _git(root, "init", "-q")
    _git(root, "config", "user.email", "test@example.com")
    _git(root, "config", "user.name", "test")
    _commit(root, "code")
    return root


def _commit(root: Path, message: str) -> str:
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", message)
    return _git(root, "rev-parse", "HEAD")


def _touch(root: Path, path: str) -> None:
    file = root / path
    file.write_text(file.read_text() + "# changed\n")


def _quality(**extra: Any) -> dict[str, Any]:
    return {"date": "2026-12-03T10:00:00+00:00", "machine": {"cpu": "CPU X", "cores": 2, "system": "Linux",
                                                             "python": "3.11.7"},
            "versions": {"dev": {"onnxruntime": "1.32.0"}, "peers": {}}, "tokens": 8, "text": "docstrings",
            "perplexity": {"ortmodels fp32": 10.0, "ortmodels int4": 10.5},
            "figures": {"perplexity_ratio: ortmodels int4": 1.05}, **extra}


def test_stamp_records_head_and_only_code_changes_as_dirty(repo: Path) -> None:
    head = _git(repo, "rev-parse", "HEAD")
    assert stamp(repo) == {"commit": head, "dirty": False}
    (repo / "benchmarks" / "results" / "quality.json").write_text("{}")  # results are not code
    assert stamp(repo) == {"commit": head, "dirty": False}
    _touch(repo, "ortmodels/engine.py")
    assert stamp(repo) == {"commit": head, "dirty": True}


def test_a_result_is_older_than_the_code_once_ortmodels_or_its_benchmark_changes(repo: Path) -> None:
    ran = _git(repo, "rev-parse", "HEAD")
    data = _quality(commit=ran, dirty=False)
    assert judge("quality", data, ran, repo).current

    _touch(repo, "benchmarks/bench_embeddings.py")  # another benchmark: not what quality measures
    other = _commit(repo, "embeddings benchmark")
    assert judge("quality", data, other, repo).current

    _touch(repo, "ortmodels/engine.py")
    code = _commit(repo, "engine")
    (repo / "NOTES.md").write_text("not code\n")
    later = _commit(repo, "notes")
    origin = judge("quality", data, later, repo)
    assert origin.older and not origin.current
    assert origin.code_changed_in is not None and origin.code_changed_in.sha == code
    assert origin.changes_since == 1

    _touch(repo, "benchmarks/bench_quality.py")
    bench = _commit(repo, "its own benchmark")
    origin = judge("quality", data, bench, repo)
    assert origin.code_changed_in is not None and origin.code_changed_in.sha == bench
    assert origin.changes_since == 2

    rerun = _quality(commit=bench, dirty=False)  # a rerun at the new code is current again
    assert judge("quality", rerun, bench, repo).current
    assert not judge("quality", _quality(commit=bench, dirty=True), bench, repo).current


def test_a_change_to_the_ray_deployments_makes_only_the_ray_results_older(repo: Path) -> None:
    """Only the Ray benchmarks' processes import `ortmodels/serve/ray/` (`provenance.RAY_CODE`)."""
    ray = repo / "ortmodels" / "serve" / "ray"
    ray.mkdir(parents=True)
    (ray / "routing.py").write_text("IMBALANCE = 8\n")
    ran = _commit(repo, "ray routing")
    data = {"quality": _quality(commit=ran, dirty=False), "ray_prefix": _quality(commit=ran, dirty=False)}
    _touch(repo, "ortmodels/serve/ray/routing.py")
    routing = _commit(repo, "ray routing again")
    assert judge("quality", data["quality"], routing, repo).current
    origin = judge("ray_prefix", data["ray_prefix"], routing, repo)
    assert origin.older and origin.code_changed_in is not None and origin.code_changed_in.sha == routing
    _touch(repo, "ortmodels/engine.py")  # the rest of ortmodels/ counts for both
    engine = _commit(repo, "engine")
    assert judge("quality", data["quality"], engine, repo).older
    assert judge("ray_prefix", data["ray_prefix"], engine, repo).changes_since == 2


def test_a_change_to_a_front_end_makes_only_the_results_that_run_it_older(repo: Path) -> None:
    """The library imports neither `ortmodels/serve/` nor `ortmodels/cli/`: the in-process
    benchmarks (quality) stay current; the server's (server) and the command's (startup) do not."""
    for folder in ("serve", "cli"):
        (repo / "ortmodels" / folder).mkdir(parents=True, exist_ok=True)
        (repo / "ortmodels" / folder / "app.py").write_text("ROUTES = 1\n")
    ran = _commit(repo, "front ends")
    data = {part: _quality(commit=ran, dirty=False) for part in ("quality", "server", "startup")}
    _touch(repo, "ortmodels/serve/app.py")
    served = _commit(repo, "a route")
    assert judge("quality", data["quality"], served, repo).current
    assert judge("startup", data["startup"], served, repo).current
    origin = judge("server", data["server"], served, repo)
    assert origin.older and origin.code_changed_in is not None and origin.code_changed_in.sha == served
    _touch(repo, "ortmodels/cli/app.py")
    command = _commit(repo, "a command")
    assert judge("quality", data["quality"], command, repo).current
    assert judge("startup", data["startup"], command, repo).code_changed_in.sha == command  # type: ignore[union-attr]
    assert judge("server", data["server"], command, repo).changes_since == 2


def test_the_judgement_against_an_older_reference_never_changes(repo: Path) -> None:
    """What makes the README test stable: the marks as of commit X stay the marks as of X."""
    ran = _git(repo, "rev-parse", "HEAD")
    data = _quality(commit=ran, dirty=False)
    before = judge("quality", data, ran, repo)
    _touch(repo, "ortmodels/engine.py")
    _commit(repo, "engine")
    assert judge("quality", data, ran, repo) == before
    assert judge("quality", data, "HEAD", repo).older


def test_a_result_without_provenance_is_bounded_by_the_last_commit_that_wrote_it(repo: Path) -> None:
    data = _quality()  # written before results were stamped: no commit, no dirty flag
    (repo / "benchmarks" / "results" / "quality.json").write_text(json.dumps(data))
    added = _commit(repo, "results")
    origin = judge("quality", data, added, repo)
    assert not origin.known and not origin.older and not origin.current
    assert origin.committed_in is not None and origin.committed_in.sha == added

    _touch(repo, "ortmodels/engine.py")
    code = _commit(repo, "engine")
    origin = judge("quality", data, code, repo)
    assert origin.older and origin.code_changed_in is not None and origin.code_changed_in.sha == code


def test_a_commit_outside_the_history_is_unknown(repo: Path) -> None:
    origin = judge("quality", _quality(commit="0123456789abcdef0123456789abcdef01234567", dirty=False),
                   "HEAD", repo)
    assert not origin.in_history and not origin.known and not origin.current


def test_the_section_names_its_reference_and_marks_stale_files(repo: Path) -> None:
    ran = _git(repo, "rev-parse", "HEAD")
    results = {"quality": _quality(commit=ran, dirty=False)}
    reference = reference_commit(ran, repo)
    assert reference is not None
    text = f"intro\n{START}\nold\n{END}\noutro\n"

    fresh = render_readme(text, results, reference, repo)
    assert rendered_against(fresh) == ran
    assert f"`quality.json` (run 2026-12-03 10:00 UTC; commit {ran[:7]}) — current" in fresh
    assert "| perplexity int4 × fp32 | 1.050 | ≤ 1.1 | pass | quality |" in fresh

    _touch(repo, "ortmodels/engine.py")
    code = _commit(repo, "engine")
    assert expected_readme(fresh, results, repo) == fresh, "a later commit must not change the expected README"
    rerendered = render_readme(text, results, reference_commit("HEAD", repo), repo)
    assert rendered_against(rerendered) == code
    assert "**older than the code**: 1 later commit changed `ortmodels/` or its benchmark" in rerendered
    assert "| perplexity int4 × fp32 | 1.050 | ≤ 1.1 | pass | quality † |" in rerendered


def test_render_without_history_says_so() -> None:
    text = render({"quality": _quality()}, origins={}, reference=None)
    assert "No git history here" in text and "rendered against" not in text


def test_chat_section_says_whether_ortmodels_speculated() -> None:
    data = {"prompt_tokens": {"short": [39], "long": [967]}, "new_tokens": 128, "rounds": 3, "results": [],
            "figures": {}}
    off = "\n".join(chat_section({**data, "engine_settings": {"MODEL_SPECULATIVE": "off"}}))
    assert "speculative decoding off (`MODEL_SPECULATIVE=off`)" in off
    unrecorded = "\n".join(chat_section(data))
    assert "does not record ortmodels' speculative-decoding setting" in unrecorded
    assert "may not be engine against engine" in unrecorded


def test_every_result_file_names_measured_code_that_exists() -> None:
    """A renamed benchmark or helper would otherwise drop out of the staleness check unnoticed."""
    from benchmarks.provenance import MEASURED_CODE
    from benchmarks.readme import PARTS

    assert set(PARTS) <= set(MEASURED_CODE)
    missing = [path for paths in MEASURED_CODE.values() for path in paths if not (ROOT / path).exists()]
    assert not missing

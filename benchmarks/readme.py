"""Rewrite the README's benchmark section from ``benchmarks/results/*.json``.

Only the text between ``<!-- bench:start -->`` and ``<!-- bench:end -->`` is replaced, so
the rest of the README stays whoever wrote it; the section says when and where the
figures were measured and with which versions, and shows every target with pass/miss.
Rendering is pure (JSON in, markdown out) so a test can check it without running a
benchmark.

    python -m benchmarks.readme [--readme README.md] [--check]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmarks.report import RESULTS
from benchmarks.targets import (
    LLAMA_CPP_SERVER,
    TARGETS,
    Target,
    chat_concurrency_figure,
    evaluate,
)

START, END = "<!-- bench:start -->", "<!-- bench:end -->"
#: Parts whose figures the targets read (speculative keeps its own README section, written by its benchmark).
PARTS = ("chat", "startup", "quality", "embeddings", "concurrency", "server", "ray", "speculative")


def load_results(folder: Path = RESULTS) -> dict[str, dict[str, Any]]:
    """Each part's JSON that exists and has this format (a ``figures`` mapping), by part name."""
    found = {}
    for part in PARTS:
        path = folder / f"{part}.json"
        if path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            if "figures" in data:
                found[part] = data
    return found


def merged_figures(results: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    figures: dict[str, float] = {}
    for data in results.values():
        figures.update(data.get("figures", {}))
    return figures


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _number(value: Any, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def targets_table(figures: Mapping[str, float], targets: list[Target] = TARGETS) -> list[str]:
    rows = [[str(r["label"]), _number(r["value"], 3), str(r["wanted"]), f"**{r['verdict']}**"
             if r["verdict"] == "miss" else str(r["verdict"])] for r in evaluate(figures, targets)]
    return _table(["target", "measured", "wanted", "verdict"], rows)


def _about(results: Mapping[str, Mapping[str, Any]]) -> list[str]:
    first = next(iter(results.values()))
    dates = sorted(d["date"][:16].replace("T", " ") for d in results.values())
    when = dates[0] if dates[0] == dates[-1] else f"{dates[0]}–{dates[-1][11:] if dates[0][:10] == dates[-1][:10] else dates[-1]}"
    m = first["machine"]
    dev = ", ".join(f"{k} {v}" for k, v in first.get("versions", {}).get("dev", {}).items())
    peers = ", ".join(f"{k} {v}" for k, v in first.get("versions", {}).get("peers", {}).items())
    lines = [(f"Measured {when} UTC on {m['cpu']} ({m['cores']} cores), {m['system']}, "
             f"Python {m['python']}."), "", f"Dev venv: {dev}."]
    if peers:
        lines += ["", f"Peers venv: {peers}."]
    return lines


def _pair_order(figures: Mapping[str, float]) -> dict[str, None]:
    """The "ours / theirs" pairs of the chat figures, in the order the benchmark wrote them."""
    return dict.fromkeys(key.split(": ", 1)[1] for key in figures)


def chat_section(data: Mapping[str, Any]) -> list[str]:
    tokens = data.get("prompt_tokens", {})
    short, long_ = tokens.get("short", ["?"])[0], tokens.get("long", ["?"])[0]
    rows = [[r["name"], _number(r["decode_tokens_per_s"], 1), _number(r["ttft_short_ms"], 0),
             _number(r["ttft_long_ms"], 0), _number(r["peak_rss_mib"], 0)] for r in data["results"]]
    lines = [(f"SmolLM2-135M-Instruct, {short}-token chat prompt, {data['new_tokens']} greedy new tokens, "
             f"batch 1; time to first token also with a {long_}-token prompt; median of {data['rounds']} "
             "interleaved rounds, each contender in its own process:"), ""]
    lines += _table(["contender", "decode tok/s", f"first token ms ({short})", f"first token ms ({long_})",
                     "peak RSS MiB"], rows)
    figures = data.get("figures", {})
    pairs = sorted({key.split(": ", 1)[1] for key in figures}, key=list(_pair_order(figures)).index)
    ratio_rows = [[pair.replace(" / ", " ÷ "),
                   *(_number(figures.get(f"{m}: {pair}"), 2) for m in ("decode", "ttft_short", "ttft_long"))]
                  for pair in pairs]
    lines += ["", "Ratios, median of per-round ratios (decode: higher is better; first token: lower is better):", "",
              *_table(["", "decode tok/s", f"first token ({short})", f"first token ({long_})"], ratio_rows)]
    if data.get("failed"):
        lines += ["", "Not measured: " + "; ".join(f"{k} ({v.splitlines()[0][:120]})" for k, v in data["failed"].items())]
    return lines


def startup_section(data: Mapping[str, Any]) -> list[str]:
    rows = [[r["name"], _number(r["cold_start_s"], 2), _number(r["load_s"], 2), _number(r["peak_rss_mib"], 0)]
            for r in data["results"]]
    return [("Cold start: a fresh process, from its start to the first token of the short prompt "
            f"(median of {data['rounds']}); `import ortmodels` in a fresh interpreter: "
            f"{_number(data['figures'].get('import_s: ortmodels'), 3)} s."), "",
            *_table(["contender", "cold start s", "of which import + load s", "peak RSS MiB"], rows)]


def quality_section(data: Mapping[str, Any]) -> list[str]:
    reference = data["perplexity"].get("ortmodels fp32")
    rows = [[name, _number(value, 3), _number(value / reference if reference else None, 3)]
            for name, value in data["perplexity"].items()]
    return [f"Perplexity on {data['tokens']} tokens of {data['text']}, same token ids for every contender:", "",
            *_table(["model", "perplexity", "× ortmodels fp32"], rows)]


def embeddings_section(data: Mapping[str, Any]) -> list[str]:
    batches = data["batch_sizes"]
    rows = [[r["name"], *(_number(r[f"batch_{b}_sentences_per_s"], 0) for b in batches),
             f"{r['cosine_to_sentence_transformers_mean']:.6f} / {r['cosine_to_sentence_transformers_min']:.6f}"]
            for r in data["results"]]
    return [(f"all-MiniLM-L6-v2 on {data['sentences']} {data['corpus']}, median of {data['rounds']} "
            "interleaved rounds (fastembed runs ortmodels' fp32 file):"), "",
            *_table(["contender", *(f"sentences/s, batch {b}" for b in batches),
                     "cosine to sentence-transformers, mean / worst"], rows)]


def _p50_p95(row: Mapping[str, Any], key: str, digits: int = 0) -> str:
    return f"{_number(row.get(f'{key}_p50_ms'), digits)} / {_number(row.get(f'{key}_p95_ms'), digits)}"


def _load(data: Mapping[str, Any]) -> str:
    load = data.get("load_average", {})
    ones = [v[0] for v in load.values() if v]
    return f"load average (1 min) {min(ones):.2f}–{max(ones):.2f} during the run" if ones else "load not recorded"


def concurrency_section(data: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    settings = data.get("settings", {})
    if data.get("chat"):
        rows: dict[tuple[str, int], dict[str, Mapping[str, Any]]] = {}
        for r in data["chat"]:
            rows.setdefault((r["variant"], r["callers"] if r["mode"] != "sequential" else -r["callers"]), {})[r["mode"]] = r
        table = []
        for (variant, callers), by_mode in rows.items():
            if callers < 0:
                seq = by_mode["sequential"]
                table.append([variant, f"{-callers} in a row", _number(seq["tokens_per_s"], 1), "–",
                              _p50_p95(seq, "latency"), "–", _p50_p95(seq, "ttft"), "–"])
                continue
            cells = [variant, str(callers)]
            for key in ("tokens_per_s", "latency", "ttft"):
                for mode in ("threads", "asyncio"):
                    r = by_mode.get(mode)
                    cells.append("n/a" if r is None else _number(r[key], 1) if key == "tokens_per_s" else _p50_p95(r, key))
            table.append(cells)
        lines += [(f"Many callers at once on {data['model']}, through the public API "
                   "(`ModelManager().get_chat_model(\"…:int4\")`, `invoke` from threads, `asyncio.gather` of "
                   f"`ainvoke`): every caller asks a different question, {data['new_tokens']} greedy tokens each; "
                   f"MODEL_MAX_BATCH={settings.get('model_max_batch', '?')}; tokens/s are all callers' output tokens "
                   f"÷ wall time; median of {data['rounds']} interleaved rounds; {_load(data)}:"), "",
                  *_table(["variant", "callers", "tok/s, threads", "tok/s, asyncio", "latency p50 / p95 ms, threads",
                           "latency p50 / p95 ms, asyncio", "first token p50 / p95 ms, threads",
                           "first token p50 / p95 ms, asyncio"], table)]
        figures = data.get("figures", {})
        ratios = [f"{v} {m} {_number(figures.get(chat_concurrency_figure(v, m)), 2)}×"
                  for v in dict.fromkeys(r["variant"] for r in data["chat"]) for m in ("threads", "asyncio")
                  if chat_concurrency_figure(v, m) in figures]
        if ratios:
            lines += ["", f"8 concurrent callers ÷ 8 calls in a row, tokens/s (median of per-round ratios): {', '.join(ratios)}."]
        solo = data.get("same_as_solo", {})
        if solo:
            lines += ["", ("Greedy answers of the 8 concurrent callers (last round) equal to the same question asked "
                          "alone on a model without prompt cache: " + ", ".join(
                              f"{name} {v['same']}/{v['of']}" for name, v in solo.items()) + ".")]
    if data.get("embeddings"):
        rows_e = [[str(r["threads"]), _number(r["sentences_per_s"], 0), _p50_p95(r, "latency", 1)]
                  for r in data["embeddings"]]
        lines += ["", (f"`get_embedding_model().embed_query` ({data['embedding_model']} "
                       f"{data.get('embedding_variant', '')}) from many threads, {data['sentences']} short stdlib "
                       "docstring sentences shared out among them (concurrent calls are coalesced into batches):"), "",
                  *_table(["threads", "sentences/s", "latency p50 / p95 ms"], rows_e)]
    if data.get("prompt_cache"):
        rows_c = []
        for r in data["prompt_cache"]:
            prompt, hit = r["turn5_prompt_tokens"][-1], r["turn5_cached_tokens"][-1]
            same = sum(r["same_turns_per_round"])
            rows_c.append([r["variant"], f"{prompt} ({hit} cached)", _number(r["ttft_ms_cache"], 0),
                           _number(r["ttft_ms_no_cache"], 0), _number(r["ratio"], 3),
                           f"{same}/{5 * r['rounds']}"])
        lines += ["", ("Prompt cache: time to first token of the 5th turn of a conversation under a ~800-token "
                       f"system prompt, default MODEL_PROMPT_CACHE ({settings.get('model_prompt_cache', 0) >> 20} MiB) "
                       "against 0; a new conversation each round under the same system prompt:"), "",
                  *_table(["variant", "5th-turn prompt tokens", "first token ms, cache", "first token ms, no cache",
                           "cache ÷ none", "same greedy answers (turns)"], rows_c)]
    if data.get("kv"):
        lines += ["", "Engine level, one decode step of 8 rows with ~700-token pasts, slot buffers ÷ re-padding: "
                  + ", ".join(f"{v} {k['ms_per_step_slots']:.0f} ms ÷ {k['ms_per_step_padded']:.0f} ms"
                              for v, k in data["kv"].items()) + "."]
    return lines


def server_section(data: Mapping[str, Any]) -> list[str]:
    levels = data["levels"]
    clients = [str(n) for n in data.get("clients", [1, 4, 8, 16])]
    rows = [[name, *(f"{_number(by[n]['tokens_per_s'], 0)} ({_number(by[n]['ttft_p50_s'], 2)} / "
                     f"{_number(by[n]['ttft_p95_s'], 2)})" if n in by else "n/a" for n in clients)]
            for name, by in levels.items()]
    shares = [s for by in levels.values() for v in by.values() for s in v.get("foreign_cpu_share_per_round", [])
              if s is not None]
    others = f", other processes at most {max(shares):.0%} of the CPUs during any timed level" if shares else ""
    versions = data.get("versions", {})
    python_server = ""
    if LLAMA_CPP_SERVER in levels:
        python_server = (f" and llama-cpp-python's `python -m llama_cpp.server` "
                         f"({versions.get('peers', {}).get('llama-cpp-python', '?')}, same GGUF, `--n_threads 2 "
                         f"--n_ctx 2048`; no continuous batching: it serves one request at a time, the others wait, "
                         f"and its stream has no usage, so one token per content chunk)")
    lines = [(f"`ortmodels serve` and llama.cpp's `llama-server` ({versions.get('llama-server') or '?'}, "
              f"the llama.cpp that llama-cpp-python vendors; `-t 2 --parallel N -c 2048·N`, the sample's Q4_1 GGUF)"
              f"{python_server}, each a real server on a loopback port; streaming `openai.AsyncOpenAI` clients at once, each a different "
              f"question (the same for every server), at most {data['new_tokens']} greedy tokens; aggregate tokens/s "
              f"(all clients' completion tokens ÷ wall time, median of {data['rounds']} rounds) and time to first token "
              f"p50 / p95 in s; {_load(data)}{others}:"), "",
             *_table(["server", *(f"{n} client{'s' if n != '1' else ''}: tok/s (first token s)" for n in clients)], rows)]
    compared = data.get("settings", {}).get("llama_server_compared")
    figures = data.get("figures", {})
    ratios = [f"{key.split(': ', 1)[1].replace(' / ', ' ÷ ')} {_number(value, 2)}×" for key, value in figures.items()]
    if ratios:
        lines += ["", (f"Median of per-round ratios{f' (llama-server: {compared})' if compared else ''}: "
                       + "; ".join(ratios) + ".")]
    return lines


def ray_section(data: Mapping[str, Any]) -> list[str]:
    """``ortmodels serve --ray`` (replicas × threads) against ``ortmodels serve``, one client level."""
    rows = [[name, _number(v["tokens_per_s"], 0), f"{_number(v['ttft_p50_s'], 2)} / {_number(v['ttft_p95_s'], 2)}"]
            for name, v in data["summary"].items()]
    ratios = [f"{key.split(', ')[0].replace(' / ', ' ÷ ')} {_number(value, 2)}×"
              for key, value in data.get("figures", {}).items() if value is not None]
    return [(f"Ray Serve on this machine (`benchmarks/bench_ray.py`): {data['clients']} streaming `openai` clients "
             f"at once, {data['model']}, at most {data['new_tokens']} greedy tokens each, all three servers up and "
             f"timed in turn, median of {data['rounds']} rounds:"), "",
            *_table(["server", "tok/s", "first token p50 / p95 (s)"], rows), "",
            "Median of per-round ratios: " + "; ".join(ratios) + "."]


def is_quick(results: Mapping[str, Mapping[str, Any]]) -> bool:
    """Whether any part ran with fewer rounds, tokens or sentences than the full settings."""
    chat, emb, conc = results.get("chat", {}), results.get("embeddings", {}), results.get("concurrency", {})
    if conc.get("rounds", 3) < 3 or conc.get("new_tokens", 64) < 64 or conc.get("sentences", 512) < 512:
        return True
    return (chat.get("new_tokens", 128) < 128 or chat.get("rounds", 3) < 3 or emb.get("sentences", 2000) < 2000
            or emb.get("rounds", 3) < 3 or results.get("quality", {}).get("tokens", 1024) < 1024)


def _quick_warning(results: Mapping[str, Mapping[str, Any]]) -> list[str]:
    if not is_quick(results):
        return []
    return ["", ("**Short settings (`make bench BENCH_ARGS=--quick`): these figures check the wiring; "
            "do not quote them.**")]


def render(results: Mapping[str, Mapping[str, Any]]) -> str:
    """The markdown between the markers (without them)."""
    if not results:
        return "No benchmark results yet: run `make bench`."
    lines = [("`make bench` wrote these figures and this section (`benchmarks/readme.py`). The machine may be "
             "shared and noisy: read ratios, not absolute figures; every ratio is the median of per-round "
             "ratios from runs seconds apart, and the per-round figures are in `benchmarks/results/*.json`."),
             "", *_about(results), *_quick_warning(results), "", "Targets:", "", *targets_table(merged_figures(results))]
    sections = {"chat": chat_section, "startup": startup_section, "quality": quality_section,
                "embeddings": embeddings_section, "concurrency": concurrency_section, "server": server_section,
                "ray": ray_section}
    for part, make in sections.items():
        if part in results:
            lines += ["", *make(results[part])]
    charts = [f"![{p}](benchmarks/results/{p}.png)" for p in ("chat", "chat_ttft", "embeddings", "concurrency", "server", "ray")
              if (RESULTS / f"{p}.png").is_file()]
    if charts:
        lines += ["", " ".join(charts)]
    return "\n".join(lines)


def replace_section(text: str, body: str) -> str:
    """``text`` with everything between the markers replaced by ``body``; the markers must exist once."""
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise ValueError(f"README needs exactly one {START} followed by one {END}")
    head, rest = text.split(START)
    _, tail = rest.split(END)
    return f"{head}{START}\n{body}\n{END}{tail}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--readme", type=Path, default=RESULTS.parent.parent / "README.md")
    args = parser.parse_args()
    results = load_results()
    for row in evaluate(merged_figures(results)):
        print(f"{row['verdict']:5} {row['label']:62} {_number(row['value'], 3):>10}  wanted {row['wanted']}")
    text = args.readme.read_text(encoding="utf-8")
    args.readme.write_text(replace_section(text, render(results)), encoding="utf-8")
    print(f"rewrote the benchmark section of {args.readme}")


if __name__ == "__main__":
    main()

"""Rewrite the README's benchmark sections from ``benchmarks/results/*.json``.

Only the text between ``<!-- bench:start -->`` and ``<!-- bench:end -->`` (and between
``<!-- bench:speculative:start -->`` and ``<!-- bench:speculative:end -->``) is replaced, so
the rest of the README stays whoever wrote it. The section says when and where the
figures were measured and with which versions, shows every target with pass/miss, and
stamps each result file with the commit and time of its run, marking a file older than
the code it measures (`benchmarks.provenance`). It records the commit it was rendered
against, and the marks are judged against that commit, so rendering is a pure function
of the JSON files and the git history up to that commit: a later commit does not change
it, and a test can check the README against it without running a benchmark.

    python -m benchmarks.readme [--readme README.md]   # render against HEAD and rewrite
    python -m benchmarks.readme --check                # exit 1 with a diff when the README differs
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import statistics
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmarks.provenance import ROOT, Commit, Origin, commit_date, judge_all, resolve
from benchmarks.report import RESULTS
from benchmarks.targets import (
    CLI_ANSWER_VS_LLAMA_FIGURE,
    CLI_LLAMA,
    CLI_OURS,
    LLAMA_CPP_SERVER,
    ORT,
    PREFIX_TTFT_FIGURE,
    SIZES_PARTS,
    TARGETS,
    Target,
    chat_concurrency_figure,
    evaluate,
)

START, END = "<!-- bench:start -->", "<!-- bench:end -->"
#: Markers of the speculative-decoding table, which sits in the README's section on it.
SPECULATIVE_START, SPECULATIVE_END = "<!-- bench:speculative:start -->", "<!-- bench:speculative:end -->"
#: The section's first line: the commit its provenance marks were judged against.
RENDERED_AT = re.compile(r"<!-- rendered against commit ([0-9a-f]{7,40}) -->")
#: Parts whose figures the targets read (speculative's table sits in its own README section).
PARTS = ("chat", "startup", "quality", "embeddings", "rerank", "concurrency", "server", "ray", "speculative",
         "ray_prefix", *SIZES_PARTS.values())


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


def targets_table(figures: Mapping[str, float], targets: list[Target] = TARGETS,
                  sources: Mapping[str, str] | None = None) -> list[str]:
    """Target, measured value, threshold and verdict; with ``sources`` (figure → where it comes
    from), a last column naming the result file each figure comes from."""
    rows = [[str(r["label"]), _number(r["value"], 3), str(r["wanted"]), f"**{r['verdict']}**"
             if r["verdict"] == "miss" else str(r["verdict"])] for r in evaluate(figures, targets)]
    if sources is None:
        return _table(["target", "measured", "wanted", "verdict"], rows)
    for row, target in zip(rows, targets):
        row.append(sources.get(target.figure, "–"))
    return _table(["target", "measured", "wanted", "verdict", "from"], rows)


def _speculation(data: Mapping[str, Any], unrecorded: str = "") -> list[str]:
    """What the run's ortmodels did about prompt-lookup speculative decoding, as its file records it.

    Engine-against-engine figures need it off: the peers do not speculate. ``unrecorded`` is
    said when the file does not record the setting (runs before it was recorded)."""
    value = data.get("engine_settings", {}).get("MODEL_SPECULATIVE")
    if value == "off":
        return ["", ("ortmodels ran with prompt-lookup speculative decoding off (`MODEL_SPECULATIVE=off`), as the "
                     "peers run: engine against engine. Speculation has its own figures in Speculative decoding.")]
    if value is not None:
        return ["", f"**ortmodels ran with `MODEL_SPECULATIVE={value}`: these are not engine-against-engine figures.**"]
    return ["", unrecorded] if unrecorded else []


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
    lines += _speculation(data, ("**This file does not record ortmodels' speculative-decoding setting: such runs left it "
                                 "at its default, `MODEL_SPECULATIVE=auto`, under which fp32 speculates (once the code "
                                 "has speculative decoding), so the fp32 rows may not be engine against engine.**"))
    return lines


def startup_section(data: Mapping[str, Any]) -> list[str]:
    rows = [[r["name"], _number(r["cold_start_s"], 2), _number(r["load_s"], 2), _number(r["peak_rss_mib"], 0)]
            for r in data["results"]]
    return [("Cold start: a fresh process, from its start to the first token of the short prompt "
            f"(median of {data['rounds']}); `import ortmodels` in a fresh interpreter: "
            f"{_number(data['figures'].get('import_s: ortmodels'), 3)} s."), "",
            *_table(["contender", "cold start s", "of which import + load s", "peak RSS MiB"], rows),
            *_cli_answer(data)]


def _cli_answer(data: Mapping[str, Any]) -> list[str]:
    """The command-line answer against llama-cpp-python, when the run measured it."""
    cli, figures = data.get("cli"), data["figures"]
    if not cli:
        return []
    return ["", (f"`ortmodels chat {data['model']}:int4 \"{cli['question']}\" --max-tokens {cli['max_tokens']}`, "
                 f"a fresh process from start to exit: {_number(figures.get(f'cli_answer_s: {CLI_OURS}'), 3)} s; "
                 f"llama-cpp-python loading the Q4_1 GGUF and answering with `create_chat_completion` "
                 f"({cli['max_tokens']} tokens, {cli['llama_threads']} threads): "
                 f"{_number(figures.get(f'cli_answer_s: {CLI_LLAMA}'), 3)} s; ratio "
                 f"{_number(figures.get(CLI_ANSWER_VS_LLAMA_FIGURE), 3)} (median of "
                 f"{len(cli['seconds'][CLI_OURS])} interleaved rounds' ratios).")]


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


def rerank_section(data: Mapping[str, Any]) -> list[str]:
    sizes = data["documents"]
    rows = [[r["name"], *(f"{_number(r[f'q1x{n}_pairs_per_s'], 0)} ({_number(r[f'q1x{n}_p50_ms'], 1)})" for n in sizes)]
            for r in data["results"]]
    server = "; ".join(f"{s['clients']} client{'s' if s['clients'] != 1 else ''} {_number(s['pairs_per_s'], 0)} pairs/s "
                       f"(p50 {_number(s['latency_p50_ms'], 0)} ms)" for s in data.get("server", []))
    return [(f"Reranking with a cross-encoder in {data['shape']}'s shape (seeded random weights), "
             f"{data['queries']} queries of {data['corpus']}, median of {data['rounds']} interleaved rounds (fastembed's TextCrossEncoder runs "
             f"ortmodels' fp32 file); {_load(data)}:"), "",
            *_table(["contender", *(f"1 query × {n} documents: pairs/s (p50 ms)" for n in sizes)], rows),
            *(["", f"`ortmodels serve` `/v1/rerank` (fp32, 1 query × {min(sizes)} documents): {server}."]
              if server else [])]


def _mb(value: Any) -> str:
    return "-" if value is None else f"{value / 1e6:,.0f} MB"


def sizes_section(data: Mapping[str, Any]) -> list[str]:
    """bench_sizes: the 1B/3B-shaped checkpoint's contenders, their conversion and their figures."""
    export = data["export"]
    rows = [[r["name"], _mb(r["bytes"]), f"{r['kv_bytes_per_token'] / 1024:,.1f} KiB", _number(r["decode_tokens_per_s"], 1),
             _number(r["ttft_long_s"], 2), f"{r['peak_rss_mib']:,.0f}"] for r in data["results"]]
    made = [[name, _number(e.get("seconds"), 0), _mb(e.get("peak_rss_bytes"))] for name, e in export.items()
            if name != ORT and e]
    ours = export.get(ORT) or {}
    streams = "; ".join(f"{name} {statistics.median(v):.1f} tok/s" for name, v in data["streams_tokens_per_s"].items()
                        if v)
    return [(f"Real sizes: {data['shape']}'s published shape with seeded random weights (`benchmarks/checkpoints.py`), "
             f"2 threads, median of {data['rounds']} interleaved rounds; {data['new_tokens']} greedy tokens for decode, "
             f"a {data['long_tokens']:,}-token prompt for time to first token, peak RSS after a "
             f"{data['conversation_tokens']:,}-token conversation; ortmodels with fp16 keys and values:"), "",
            *_table(["contender", "file", "KV per token", "decode tok/s", "first token, long prompt (s)",
                     "peak RSS MiB"], rows), "",
            (f"ortmodels' export (from its manifest): {_number(ours.get('seconds'), 0)} s, peak "
             f"{_mb(ours.get('peak_rss_bytes'))} = {_number(ours.get('peak_rss_ratio'))}× the checkpoint's "
             f"{_mb(ours.get('checkpoint_bytes'))}. The peers' conversions:"), "",
            *_table(["step", "seconds", "peak memory"], made),
            *(["", f"{data['streams']} streaming clients at once: {streams}."] if streams else []),
            *(["", (f"Left out at this size: {', '.join(data['without'])} (`--no-genai`: its builder peaked at 4.2× "
                    "the 1B checkpoint, so here it needs more memory than the machine has).")]
              if data.get("without") else [])]


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
        lines += _speculation(data, ("**This file does not record ortmodels' speculative-decoding setting: such runs left it "
                                     "at its default, `MODEL_SPECULATIVE=auto`, under which fp32 calls in a row "
                                     "speculate (once the code has speculative decoding), so the fp32 ratios may "
                                     "measure more than batching.**"))
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
                  + ", ".join(f"{v} {k['ms_per_step_slots']:.0f} ms ÷ {k['ms_per_step_padded']:.0f} ms "
                              f"({k['ms_per_step_slots'] / k['ms_per_step_padded']:.2f}×)"
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
    return lines + _speculation(data)


def ray_section(data: Mapping[str, Any]) -> list[str]:
    """``ortmodels serve --ray`` (replicas × threads) against ``ortmodels serve``, one client level."""
    rows = [[name, _number(v["tokens_per_s"], 0), f"{_number(v['ttft_p50_s'], 2)} / {_number(v['ttft_p95_s'], 2)}"]
            for name, v in data["summary"].items()]
    ratios = [f"{key.split(', ')[0].replace(' / ', ' ÷ ')} {_number(value, 2)}×"
              for key, value in data.get("figures", {}).items() if value is not None]
    return [(f"Ray Serve on the benchmark machine (`benchmarks/bench_ray.py`): {data['clients']} streaming `openai` clients "
             f"at once, {data['model']}, at most {data['new_tokens']} greedy tokens each, all three servers up and "
             f"timed in turn, median of {data['rounds']} rounds:"), "",
            *_table(["server", "tok/s", "first token p50 / p95 (s)"], rows), "",
            "Median of per-round ratios: " + "; ".join(ratios) + ".", *_speculation(data)]


def ray_prefix_section(data: Mapping[str, Any]) -> list[str]:
    """Prefix routing against Serve's own on 2 Ray replicas: last turns finding their cache, and their TTFT."""
    rows = [[name, f"{v['whole']} / {v['conversations']}",
             f"{_number(v['last_ttft_p50_s'], 2)} / {_number(v['last_ttft_p95_s'], 2)}"]
            for name, v in data["summary"].items()]
    ratio = data.get("figures", {}).get(PREFIX_TTFT_FIGURE)
    return [(f"Prefix-aware routing on Ray (`benchmarks/bench_ray_prefix.py`): `ortmodels serve --ray --replicas 2`, "
             f"{data['model']}, {data['conversations']} conversations at once of {data['turns']} turns each under one "
             f"~{data['system_prompt_chars']}-character system prompt, at most {data['new_tokens']} greedy tokens a "
             f"turn, {_think(data)}, both servers up and timed in turn, {data['rounds']} round(s):"), "",
            *_table(["server", "last turns finding the previous prompt cached", "last turn's first token p50 / p95 (s)"],
                    rows), "",
            f"Last-turn time to first token, prefix ÷ Serve's routing (median of per-round ratios): {_number(ratio, 2)}×."]


def _think(data: Mapping[str, Any]) -> str:
    """The pause between turns, as the run had it (runs before `--think-s` had none)."""
    think = data.get("think_s") or 0
    return (f"a random pause of up to {_number(think, 1)} s before each later turn (a user reading)" if think
            else "each turn sent the moment the last one ended")


def is_quick(results: Mapping[str, Mapping[str, Any]]) -> bool:
    """Whether any part ran with fewer rounds, tokens or sentences than the full settings."""
    chat, emb, conc = results.get("chat", {}), results.get("embeddings", {}), results.get("concurrency", {})
    if conc.get("rounds", 3) < 3 or conc.get("new_tokens", 64) < 64 or conc.get("sentences", 512) < 512:
        return True
    return (chat.get("new_tokens", 128) < 128 or chat.get("rounds", 3) < 3 or emb.get("sentences", 2000) < 2000
            or emb.get("rounds", 3) < 3 or results.get("quality", {}).get("tokens", 1024) < 1024
            or bool(results.get("ray_prefix", {}).get("quick")))


def _quick_warning(results: Mapping[str, Mapping[str, Any]]) -> list[str]:
    if not is_quick(results):
        return []
    return ["", ("**Short settings (`make bench BENCH_ARGS=--quick`): these figures check the wiring; "
            "do not quote them.**")]


def speculative_table(rows: list[Mapping[str, Any]]) -> list[str]:
    """bench_speculative's rows: tokens/s without and with drafts, their ratio, and how the drafts fared."""
    lines = [("| variant | prompt | tokens | tok/s without | tok/s with | ratio (rounds' range) | identical tokens |"
              " drafts accepted | tokens / pass | modelled ratio |"),
             "| --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |"]
    for r in rows:
        same = "yes" if r["identical"] else f"no (from token {r['first_difference']})"
        share = "—" if r["accepted_share"] is None else f"{r['accepted_share']:.0%}"
        per_pass = "—" if r["tokens_per_pass"] is None else f"{r['tokens_per_pass']:.2f}"
        lines.append(f"| {r['variant']} | {r['prompt']} | {r['tokens']} | {r['off_tokens_per_s']:.1f} | "
                     f"{r['on_tokens_per_s']:.1f} | **{r['ratio']:.2f}x** ({min(r['ratios']):.2f}–{max(r['ratios']):.2f}) | {same} | {share} | {per_pass} | "
                     f"{r['modelled_ratio']:.2f}x (pass = {r['pass_cost']['c0']:.2f} + "
                     f"{r['pass_cost']['c1']:.2f}·k steps) |")
    return lines


def speculative_section(data: Mapping[str, Any], origin: Origin | None = None) -> str:
    """The body of the README's speculative-decoding table (between its own markers)."""
    m = data["machine"]
    body = [(f"Measured {_when(data['date'])} UTC on {m['cpu']} ({m['cores']} cores, shared; "
             f"load average {data['load_average']['start'][0]} at the start), {data['rounds']} rounds, "
             f"greedy, at most {data['max_tokens']} new tokens; ratio = median of per-round ratios."), "",
            *speculative_table(data["rows"])]
    if origin is not None:
        body += ["", f"From {origin_text(origin)}."]
    return "\n".join(body)


def _when(iso: str) -> str:
    return iso[:16].replace("T", " ")


def _verdict(origin: Origin) -> str:
    """How a result file stands against the code, in a few words."""
    if origin.older:
        changed = origin.code_changed_in
        assert changed is not None
        # without a recorded commit, the count starts at the last commit that wrote the file: a lower bound
        bound = "at least " if origin.commit is None else ""
        commits = f"{bound}{origin.changes_since} later commit{'s' if origin.changes_since != 1 else ''}"
        return (f"**older than the code**: {commits} changed `ortmodels/` or its benchmark, the last "
                f"{changed.short} ({changed.date} UTC)")
    if origin.commit is not None and not origin.in_history:
        return "**unknown**: its commit is not in this history"
    if not origin.known:
        return "**unknown**: no commit recorded, and the code has not changed since the file was last committed"
    if origin.dirty:
        return "**uncommitted code**: the run's tree had changes to `ortmodels/` or `benchmarks/`"
    if origin.dirty is None:
        return "current; whether its tree had uncommitted changes is not recorded"
    return "current"


def _commit_cell(origin: Origin) -> str:
    if origin.commit is not None:
        return f"{origin.commit[:7]}{' + uncommitted changes' if origin.dirty else ''}"
    if origin.committed_in is not None:
        return f"not recorded; file last committed in {origin.committed_in.short}, {origin.committed_in.date} UTC"
    return "not recorded"


def origin_text(origin: Origin) -> str:
    """One result file's provenance in a sentence: file, run time, commit, verdict."""
    return f"`{origin.part}.json` (run {_when(origin.date)} UTC; commit {_commit_cell(origin)}) — {_verdict(origin)}"


def provenance_lines(origins: Mapping[str, Origin], reference: Commit | None) -> list[str]:
    """The table of result files: when each was run, at which commit, and whether the code changed since."""
    if reference is None:
        return ["No git history here: the result files' commits were not checked against the code."]
    rows = [[f"`{o.part}.json`", _when(o.date), _commit_cell(o), _verdict(o)] for o in origins.values()]
    behind = [o for o in origins.values() if not o.current]
    summary = (f"All {len(origins)} result files measure the code as of that commit."
               if not behind else
               f"{len(behind)} of {len(origins)} result files are not current (older than the code, of unknown "
               "commit, or run on uncommitted code; their targets are marked †): their figures describe the "
               "code of their own run. `make bench` reruns them all.")
    return [(f"Each result file's run, against the code as of commit {reference.short} ({reference.date} UTC), "
             "when this section was rendered. A file is older than the code when `ortmodels/` or its own "
             "benchmark changed after the commit it records (for a file that records none, after the commit "
             "that last wrote it). The front ends count only where a benchmark runs them: `ortmodels/cli/` for "
             "those that run the `ortmodels` command (startup, and those that start `ortmodels serve`), "
             "`ortmodels/serve/` for those that start the server (server, rerank, sizes, Ray), "
             "`ortmodels/serve/ray/` for the Ray benchmarks alone; the library imports none of them:"), "",
            *_table(["result file", "run (UTC)", "commit", f"against {reference.short}"], rows), "", summary]


def _sources(results: Mapping[str, Mapping[str, Any]], origins: Mapping[str, Origin]) -> dict[str, str]:
    """Figure name → the result file it comes from, marked † when that file is not current."""
    sources: dict[str, str] = {}
    for part, data in results.items():
        origin = origins.get(part)
        mark = "" if origin is None or origin.current else " †"
        for key in data.get("figures", {}):
            sources.setdefault(key, f"{part}{mark}")
    return sources


def render(results: Mapping[str, Mapping[str, Any]], origins: Mapping[str, Origin] | None = None,
           reference: Commit | None = None) -> str:
    """The markdown between the markers (without them); with ``origins``, stamped with each
    result file's provenance as judged against ``reference``."""
    if not results:
        return "No benchmark results yet: run `make bench`."
    lines = []
    if reference is not None:
        lines += [f"<!-- rendered against commit {reference.sha} -->"]
    lines += [("`benchmarks/readme.py` renders this section from `benchmarks/results/*.json`; `make bench` runs "
               "every benchmark, then it. The machine may be shared and noisy: read ratios, not absolute "
               "figures; every ratio is the median of per-round ratios from runs seconds apart, and the "
               "per-round figures are in the JSON files."), "", *_about(results), *_quick_warning(results)]
    if origins is not None:
        lines += ["", *provenance_lines(origins, reference)]
    sources = _sources(results, origins) if origins is not None else None
    lines += ["", "Targets:", "", *targets_table(merged_figures(results), sources=sources)]
    sections = {"chat": chat_section, "startup": startup_section, "quality": quality_section,
                "embeddings": embeddings_section, "rerank": rerank_section, "concurrency": concurrency_section,
                "server": server_section,
                "ray": ray_section, "ray_prefix": ray_prefix_section,
                **{part: sizes_section for part in SIZES_PARTS.values()}}
    for part, make in sections.items():
        if part in results:
            lines += [""]
            if origins is not None and part in origins:
                lines += [f"From {origin_text(origins[part])}.", ""]
            lines += make(results[part])
    charts = [f"![{p}](benchmarks/results/{p}.png)" for p in ("chat", "chat_ttft", "embeddings", "rerank", "concurrency",
                                                               "server", "ray", "ray_prefix",
                                                               *SIZES_PARTS.values())
              if (RESULTS / f"{p}.png").is_file()]
    if charts:
        lines += ["", " ".join(charts)]
    return "\n".join(lines)


def replace_section(text: str, body: str, start: str = START, end: str = END) -> str:
    """``text`` with everything between the markers replaced by ``body``; the markers must exist once."""
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise ValueError(f"README needs exactly one {start} followed by one {end}")
    head, rest = text.split(start)
    _, tail = rest.split(end)
    return f"{head}{start}\n{body}\n{end}{tail}"


def rendered_against(text: str) -> str | None:
    """The commit a README's benchmark section says it was rendered against (as written there)."""
    if START not in text:
        return None
    found = RENDERED_AT.search(text.split(START, 1)[1].split(END, 1)[0])
    return found.group(1) if found else None


def reference_commit(commit: str, root: Path = ROOT) -> Commit | None:
    """``commit`` (a hash or ``HEAD``) as this repository has it; None without git or the commit."""
    sha = resolve(commit, root)
    return Commit(sha, commit_date(sha, root)) if sha else None


def render_readme(text: str, results: Mapping[str, Mapping[str, Any]], reference: Commit | None,
                  root: Path = ROOT) -> str:
    """``text`` with both benchmark sections rendered from ``results``, judged against ``reference``."""
    origins = judge_all(results, reference.sha, root) if reference is not None else None
    text = replace_section(text, render(results, origins, reference))
    if "speculative" in results and SPECULATIVE_START in text:
        origin = origins.get("speculative") if origins is not None else None
        text = replace_section(text, speculative_section(results["speculative"], origin),
                               SPECULATIVE_START, SPECULATIVE_END)
    return text


def expected_readme(text: str, results: Mapping[str, Mapping[str, Any]], root: Path = ROOT) -> str:
    """What the README should hold: its sections rendered against the commit the section records
    (HEAD when it records none), so a commit made after the rendering does not change it."""
    return render_readme(text, results, reference_commit(rendered_against(text) or "HEAD", root), root)


def write(readme: Path, results: Mapping[str, Mapping[str, Any]] | None = None, root: Path = ROOT) -> None:
    """Render the README's benchmark sections against HEAD and write them."""
    results = load_results() if results is None else results
    text = readme.read_text(encoding="utf-8")
    readme.write_text(render_readme(text, results, reference_commit("HEAD", root), root), encoding="utf-8")


def check(readme: Path, results: Mapping[str, Mapping[str, Any]] | None = None, root: Path = ROOT) -> list[str]:
    """The unified diff between the README and what its sections should hold; empty when equal."""
    results = load_results() if results is None else results
    text = readme.read_text(encoding="utf-8")
    return list(difflib.unified_diff(text.splitlines(keepends=True),
                                     expected_readme(text, results, root).splitlines(keepends=True),
                                     fromfile=f"{readme} (as it is)", tofile=f"{readme} (rendered from the JSON)"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 with a diff when the README's sections differ from the rendering, write nothing")
    args = parser.parse_args()
    results = load_results()
    if args.check:
        diff = check(args.readme, results)
        if diff:
            sys.stdout.writelines(diff)
            print(f"\n{args.readme}'s benchmark sections differ from benchmarks/results/*.json: "
                  "run `python -m benchmarks.readme` and commit the README.")
            raise SystemExit(1)
        print(f"{args.readme}'s benchmark sections match benchmarks/results/*.json")
        return
    for row in evaluate(merged_figures(results)):
        print(f"{row['verdict']:5} {row['label']:62} {_number(row['value'], 3):>10}  wanted {row['wanted']}")
    write(args.readme, results)
    print(f"rewrote the benchmark sections of {args.readme}")


if __name__ == "__main__":
    main()

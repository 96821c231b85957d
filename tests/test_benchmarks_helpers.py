"""The benchmarks' pure helpers on tiny inputs: no model, no peers venv, milliseconds."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from benchmarks.bench_concurrency import (
    assign_questions,
    median_ratio,
    percentile,
    rotated,
)
from benchmarks.quality import (
    cosine_rows,
    perplexity,
    top_k_agreement,
    top_k_neighbours,
)
from benchmarks.readme import END, START, render, replace_section, targets_table
from benchmarks.targets import (
    EMBED_QUERY_FIGURE,
    Target,
    chat_concurrency_figure,
    evaluate,
    faster_peer_ratio,
    prompt_cache_figure,
    ratio_key,
)


def test_perplexity_of_uniform_logits_is_the_vocabulary_size() -> None:
    assert perplexity(np.zeros((5, 7)), [1, 2, 3, 4, 5]) == pytest.approx(7.0)


def test_perplexity_of_confident_right_guesses_is_near_one() -> None:
    ids = [0, 1, 2, 3]
    logits = np.full((4, 4), -30.0)
    for row, target in enumerate(ids[1:]):
        logits[row, target] = 30.0
    assert perplexity(logits, ids) == pytest.approx(1.0, abs=1e-9)


def test_perplexity_matches_the_textbook_formula() -> None:
    rng = np.random.default_rng(0)
    logits, ids = rng.normal(size=(6, 5)).astype(np.float16), [4, 0, 3, 3, 1, 2]
    p = np.exp(logits.astype(np.float64))
    p /= p.sum(axis=1, keepdims=True)
    expected = math.exp(-np.mean([math.log(p[i, ids[i + 1]]) for i in range(5)]))
    assert perplexity(logits, ids) == pytest.approx(expected)


def test_perplexity_needs_a_logit_row_per_position() -> None:
    with pytest.raises(ValueError):
        perplexity(np.zeros((2, 3)), [0, 1, 2, 0])


def test_cosine_rows() -> None:
    got = np.array([[1.0, 0.0], [0.0, 2.0]])
    ref = np.array([[2.0, 0.0], [1.0, 1.0]])
    assert cosine_rows(got, ref) == pytest.approx([1.0, math.sqrt(0.5)])


def test_top_k_neighbours_excludes_self_and_orders_best_first() -> None:
    vectors = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.5, 0.5]])
    assert top_k_neighbours(vectors, 2)[0].tolist() == [1, 3]


def test_top_k_agreement() -> None:
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(30, 8))
    assert top_k_agreement(vectors, vectors * 3.0, k=5) == 1.0  # scale does not move neighbours
    other = rng.normal(size=(30, 8))  # unrelated vectors: about k / (n - 1) of neighbours shared by chance
    assert 0.0 <= top_k_agreement(other, vectors, k=5) < 0.6


def test_targets_pass_miss_and_missing_figures() -> None:
    figures = {"a": 1.3, "b": 0.7}
    targets = [Target("A", "a", ">=", 1.2), Target("B", "b", "<=", 0.5), Target("C", "c", ">=", 1.0)]
    assert [row["verdict"] for row in evaluate(figures, targets)] == ["pass", "miss", "n/a"]
    assert ratio_key("decode", "x", "y") == "decode: x / y"


def test_faster_peer_ratio_takes_each_rounds_faster_peer() -> None:
    # round 1: 1.0 / min(2.0, 0.5) = 2.0; round 2: 1.0 / min(0.8, 4.0) = 1.25; round 3: 0.6 / 1.0
    assert faster_peer_ratio([1.0, 1.0, 0.6], [2.0, 0.8, 1.0], [0.5, 4.0, 3.0]) == 1.25
    assert faster_peer_ratio([1.0], [2.0], []) is None  # a peer that did not run: no figure, never a pass
    assert faster_peer_ratio([], [2.0], [1.0]) is None


def test_replace_section_keeps_everything_outside_the_markers() -> None:
    text = f"intro\n{START}\nold\n{END}\noutro\n"
    assert replace_section(text, "new") == f"intro\n{START}\nnew\n{END}\noutro\n"
    with pytest.raises(ValueError):
        replace_section("no markers", "new")
    with pytest.raises(ValueError):
        replace_section(f"{END}{START}", "new")


def test_render_shows_machine_versions_targets_and_tables() -> None:
    common = {"date": "2026-11-25T12:00:00+00:00", "machine": {"cpu": "CPU X", "cores": 2, "system": "Linux",
                                                             "python": "3.11.7"},
              "versions": {"dev": {"onnxruntime": "1.32.0"}, "peers": {"onnxruntime-genai": "0.18.0"}}}
    results = {
        "quality": {**common, "tokens": 8, "text": "docstrings", "perplexity": {"ortmodels fp32": 10.0,
                                                                                 "ortmodels int4": 10.5},
                    "figures": {"perplexity_ratio: ortmodels int4": 1.05}},
    }
    text = render(results)
    assert "CPU X (2 cores)" in text and "onnxruntime 1.32.0" in text and "onnxruntime-genai 0.18.0" in text
    assert "| perplexity int4 × fp32 | 1.050 | ≤ 1.1 | pass |" in text
    assert "| ortmodels int4 | 10.500 | 1.050 |" in text
    assert render({}).startswith("No benchmark results")


def test_targets_table_marks_misses() -> None:
    lines = targets_table({"x": 0.5}, [Target("X", "x", ">=", 1.0)])
    assert lines[-1] == "| X | 0.500 | ≥ 1 | **miss** |"


def test_percentile_interpolates_as_numpy_does() -> None:
    values = [5.0, 1.0, 4.0, 2.0, 3.0, 10.0]
    for q in (0, 50, 95, 100):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    assert percentile([7.0], 95) == 7.0
    assert percentile([], 50) is None


def test_median_ratio_pairs_rounds_by_index() -> None:
    assert median_ratio([4.0, 9.0, 2.0], [2.0, 3.0, 2.0]) == 2.0
    assert median_ratio([1.0], [0.0]) is None
    assert median_ratio([], []) is None


def test_assign_questions_never_repeats_and_matches_across_variants() -> None:
    runs = [("threads", 1), ("threads", 2), ("sequential", 2)]
    got = assign_questions([f"q{i}" for i in range(10)], 2, runs)
    asked = [q for qs in got.values() for q in qs]
    assert len(asked) == len(set(asked)) == 10
    assert [len(got[r, name, n]) for r in range(2) for name, n in runs] == [1, 2, 2] * 2
    with pytest.raises(ValueError):
        assign_questions(["q"] * 9, 2, runs)
    assert rotated([1, 2, 3], 4) == [2, 3, 1]


def _fake_concurrency() -> dict:
    def row(variant: str, mode: str, callers: int, tps: float) -> dict:
        return {"variant": variant, "mode": mode, "callers": callers, "tokens_per_s": tps, "latency_p50_ms": 500.0,
                "latency_p95_ms": 900.0, "ttft_p50_ms": 40.0, "ttft_p95_ms": 120.0}

    return {
        "date": "2026-11-25T12:00:00+00:00", "machine": {"cpu": "CPU X", "cores": 2, "system": "Linux",
                                                        "python": "3.11.7"},
        "versions": {"dev": {"onnxruntime": "1.32.0"}, "peers": {}},
        "model": "smollm2-135m-instruct", "embedding_model": "all-minilm-l6-v2", "embedding_variant": "fp32",
        "new_tokens": 64, "rounds": 3, "sentences": 512,
        "settings": {"model_max_batch": 8, "model_prompt_cache": 256 << 20},
        "load_average": {"start": [1.5, 1.2, 1.1], "end": [2.0, 1.4, 1.2]},
        "chat": [row("int4", "threads", 1, 100.0), row("int4", "threads", 8, 250.0),
                 row("int4", "asyncio", 8, 260.0), row("int4", "sequential", 8, 110.0)],
        "same_as_solo": {"int4 threads": {"same": 8, "of": 8}},
        "embeddings": [{"threads": 1, "sentences_per_s": 400.0, "latency_p50_ms": 2.2, "latency_p95_ms": 4.0},
                       {"threads": 32, "sentences_per_s": 640.0, "latency_p50_ms": 49.0, "latency_p95_ms": 57.0}],
        "prompt_cache": [{"variant": "int4", "turn5_prompt_tokens": [1012], "turn5_cached_tokens": [972],
                          "ttft_ms_cache": 48.0, "ttft_ms_no_cache": 658.0, "ratio": 0.072,
                          "same_turns_per_round": [5, 5, 5], "rounds": 3}],
        "figures": {chat_concurrency_figure("int4", "threads"): 2.27, chat_concurrency_figure("int4", "asyncio"): 2.36,
                    EMBED_QUERY_FIGURE: 1.6, prompt_cache_figure("int4"): 0.072},
    }


def test_render_concurrency_section() -> None:
    results = {"concurrency": _fake_concurrency()}
    text = render(results)
    assert "| chat tok/s, 8 concurrent threads ÷ 8 calls in a row, int4 | 2.270 | ≥ 2 | pass |" in text
    assert "| chat tok/s, 8 concurrent threads ÷ 8 calls in a row, fp32 | n/a | ≥ 3.5 | n/a |" in text
    assert "| embed_query sentences/s, 32 threads ÷ 1 thread | 1.600 | ≥ 1.3 | pass |" in text
    assert "| int4 | 8 | 250.0 | 260.0 | 500 / 900 | 500 / 900 | 40 / 120 | 40 / 120 |" in text
    assert "| int4 | 8 in a row | 110.0 | – | 500 / 900 | – | 40 / 120 | – |" in text
    assert "| int4 | 1 | 100.0 | n/a |" in text
    assert "int4 threads 2.27×, int4 asyncio 2.36×" in text and "int4 threads 8/8" in text
    assert "| 32 | 640 | 49.0 / 57.0 |" in text
    assert "| int4 | 1012 (972 cached) | 48 | 658 | 0.072 | 15/15 |" in text
    assert "load average (1 min) 1.50–2.00" in text
    assert "Short settings" not in text
    assert "Short settings" in render({"concurrency": {**_fake_concurrency(), "rounds": 1}})


def _fake_server_rows() -> list[dict]:
    rows = []
    for rnd, (ours1, ours8, llama8_p8, llama8_p4) in enumerate([(80.0, 240.0, 200.0, 150.0), (90.0, 200.0, 160.0, 170.0)]):
        for name, clients, tps in (("ortmodels int4", 1, ours1), ("ortmodels int4", 8, ours8),
                                   ("llama-server Q4_1 parallel 8", 1, 100.0), ("llama-server Q4_1 parallel 8", 8, llama8_p8),
                                   ("llama-server Q4_1 parallel 4", 8, llama8_p4)):
            rows.append({"round": rnd, "clients": clients, "contender": name, "tokens_per_s": tps,
                         "tokens": 64 * clients, "ttft_s": [0.1 * clients, 0.2 * clients]})
    return rows


def test_server_summary_figures_and_section() -> None:
    from benchmarks.bench_server import figures_of, summarize
    from benchmarks.targets import SERVER_SCALING_FIGURE, SERVER_VS_LLAMA_FIGURE

    rows = _fake_server_rows()
    names = ["ortmodels int4", "llama-server Q4_1 parallel 8", "llama-server Q4_1 parallel 4"]
    levels = summarize(rows, names, [1, 8])
    assert levels["ortmodels int4"]["8"]["tokens_per_s"] == 220.0
    assert levels["ortmodels int4"]["8"]["tokens_per_round"] == [512, 512]
    assert levels["ortmodels int4"]["1"]["ttft_p50_s"] == pytest.approx(0.15)
    assert "1" not in levels["llama-server Q4_1 parallel 4"]
    figures, best = figures_of(rows, levels, ["int4"], names[1:])
    assert best == "llama-server Q4_1 parallel 8"  # median 180 against 160 at 8 clients
    assert figures[SERVER_VS_LLAMA_FIGURE] == pytest.approx(statistics.median([240 / 200, 200 / 160]), abs=1e-3)
    assert figures[SERVER_SCALING_FIGURE] == pytest.approx(statistics.median([3.0, 200 / 90]), abs=1e-3)
    data = {"date": "2026-12-01T16:00:00+00:00", "machine": {"cpu": "CPU X", "cores": 2, "system": "Linux",
                                                            "python": "3.11.7"},
            "versions": {"dev": {}, "peers": {}, "llama-server": "version: 1 (abc)"}, "new_tokens": 64, "rounds": 2,
            "clients": [1, 8], "settings": {"llama_server_compared": best},
            "load_average": {"start": [1.0, 1.0, 1.0], "end": [2.5, 1.5, 1.0]}, "levels": levels, "figures": figures}
    text = render({"server": data})
    assert "| ortmodels int4 | 85 (0.15 / 0.20) | 220 (1.20 / 1.60) |" in text
    assert "| llama-server Q4_1 parallel 4 | n/a | 160 (1.20 / 1.60) |" in text
    assert "load average (1 min) 1.00–2.50" in text and "version: 1 (abc)" in text
    assert "| `ortmodels serve` int4, 8 streaming clients: tok/s × llama-server Q4_1 | 1.225 | ≥ 1.2 | pass |" in text


def test_render_ray_section() -> None:
    data = {"date": "2026-12-01T17:00:00+00:00", "machine": {"cpu": "CPU X", "cores": 2, "system": "Linux",
                                                            "python": "3.11.7"},
            "model": "smollm2-135m-instruct:int4", "clients": 8, "new_tokens": 64, "rounds": 5, "figures": {
        "tokens/s: serve --ray 2 replicas × 1 thread / serve --ray 1 replica × 2 threads, 8 clients": 1.157,
        "TTFT p50: serve --ray 1 replica × 2 threads / ortmodels serve, 8 clients": None},
        "summary": {"ortmodels serve": {"tokens_per_s": 136.3, "ttft_p50_s": 0.486, "ttft_p95_s": 0.983}}}
    text = render({"ray": data})
    assert "| ortmodels serve | 136 | 0.49 / 0.98 |" in text
    assert "tokens/s: serve --ray 2 replicas × 1 thread ÷ serve --ray 1 replica × 2 threads 1.16×." in text


def test_server_contenders_commands_and_health_paths(tmp_path) -> None:
    from benchmarks.bench_server import (
        llama_contender,
        llama_cpp_server_contender,
        ortmodels_contender,
    )
    from benchmarks.targets import LLAMA_CPP_SERVER

    gguf, python = tmp_path / "m.gguf", tmp_path / "peers" / "bin" / "python"
    c = llama_cpp_server_contender(gguf, python)
    assert c.name == LLAMA_CPP_SERVER and c.model == "smollm2"
    assert c.command[:3] == [str(python), "-m", "llama_cpp.server"]
    flags = dict(zip(c.command[3::2], c.command[4::2]))
    assert flags == {"--model": str(gguf), "--model_alias": "smollm2", "--host": "127.0.0.1", "--port": "{port}",
                     "--n_threads": "2", "--n_threads_batch": "2", "--n_ctx": "2048",
                     "--interrupt_requests": "False", "--verbose": "False"}
    assert c.health == "/v1/models"  # llama_cpp.server has no /health
    assert ortmodels_contender("int4").health == "/health"
    llama = llama_contender(gguf, 4, tmp_path / "llama-server")
    assert llama.health == "/health" and llama.command[0] == str(tmp_path / "llama-server")
    assert llama.command[llama.command.index("-c") + 1] == "8192"


def test_peers_venv_can_be_named_by_environment(monkeypatch, tmp_path) -> None:
    from benchmarks.peers.env import PEERS_VENV, peers_python

    monkeypatch.delenv("ORTMODELS_PEERS_VENV", raising=False)
    assert peers_python() == PEERS_VENV / "bin" / "python"
    monkeypatch.setenv("ORTMODELS_PEERS_VENV", str(tmp_path))
    assert peers_python() == tmp_path / "bin" / "python"


def test_server_figures_and_section_with_llama_cpp_server() -> None:
    from benchmarks.bench_server import figures_of, summarize
    from benchmarks.targets import LLAMA_CPP_SERVER, server_figure

    rows = _fake_server_rows()
    for rnd, tps in enumerate((60.0, 40.0)):
        for clients in (1, 8):
            rows.append({"round": rnd, "clients": clients, "contender": LLAMA_CPP_SERVER, "tokens_per_s": tps,
                         "tokens": 64 * clients, "ttft_s": [0.5 * clients]})
    names = ["ortmodels int4", "llama-server Q4_1 parallel 8", "llama-server Q4_1 parallel 4", LLAMA_CPP_SERVER]
    levels = summarize(rows, names, [1, 8])
    figures, best = figures_of(rows, levels, ["int4"], names[1:3])
    assert best == "llama-server Q4_1 parallel 8"
    key = server_figure("ortmodels int4 8 clients", f"{LLAMA_CPP_SERVER} 8 clients")
    assert figures[key] == pytest.approx(statistics.median([240 / 60, 200 / 40]))
    data = {"date": "2026-12-01T16:00:00+00:00", "machine": {"cpu": "CPU X", "cores": 2, "system": "Linux",
                                                            "python": "3.11.7"},
            "versions": {"dev": {}, "peers": {"llama-cpp-python": "0.3.36"}, "llama-server": "1 (abc)"},
            "new_tokens": 64, "rounds": 2, "clients": [1, 8], "settings": {"llama_server_compared": best},
            "load_average": {"start": [1.0, 1.0, 1.0]}, "levels": levels, "figures": figures}
    text = render({"server": data})
    assert "| llama_cpp.server Q4_1 | 50 (0.50 / 0.50) | 50 (4.00 / 4.00) |" in text
    assert "`python -m llama_cpp.server` (0.3.36" in text and "one request at a time" in text
    assert "ortmodels int4 8 clients ÷ llama_cpp.server Q4_1 8 clients 4.50×" in text


def test_server_baseline_runs_that_commits_code_and_is_compared_per_level(tmp_path) -> None:
    """``--baseline REF``: REF's ortmodels/ written out and imported by its server, never today's;
    the figures are today's ÷ REF's tokens/s, per client level."""
    from benchmarks.bench_server import (
        ROOT,
        baseline_figures,
        baseline_name,
        ortmodels_contender,
        package_of,
        write_baseline,
    )
    from benchmarks.targets import server_figure

    commit = write_baseline("HEAD", tmp_path / "base")
    assert len(commit) == 40 and (tmp_path / "base" / "ortmodels" / "__init__.py").is_file()
    old = ortmodels_contender("int4", ("HEAD", tmp_path / "base"))
    assert old.name == baseline_name("int4", "HEAD") == "ortmodels int4 at HEAD" and old.model.endswith(":int4")
    assert package_of(old) == str(tmp_path / "base" / "ortmodels" / "__init__.py")
    assert package_of(ortmodels_contender("int4")) == str(ROOT / "ortmodels" / "__init__.py")
    rows = [{"round": rnd, "clients": 8, "contender": name, "tokens_per_s": tps, "tokens": 512, "ttft_s": [0.1]}
            for rnd, (ours, theirs) in enumerate(((120.0, 100.0), (90.0, 100.0)))
            for name, tps in (("ortmodels int4", ours), ("ortmodels int4 at HEAD", theirs))]
    figures = baseline_figures(rows, ["int4"], "HEAD", [1, 8])
    assert figures == {server_figure("ortmodels int4 8 clients", "ortmodels int4 at HEAD 8 clients"):
                       pytest.approx(statistics.median([1.2, 0.9]))}


def test_sizes_kv_bytes_and_figures_and_section() -> None:
    """bench_sizes: KV bytes per token from a published config (Llama 3.2 1B: 16 layers, 8 KV heads
    of 64; 32 KiB per token in f16, as ortmodels' fp16 cache reports), its ratios and its table."""
    from benchmarks.bench_sizes import GENAI, figures_of, kv_bytes
    from benchmarks.readme import sizes_section
    from benchmarks.targets import SIZES_EXPORT_PEAK_FIGURE, TARGETS, sizes_export_peak_figure, sizes_figure, sizes_part

    config = {"num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64,
              "hidden_size": 2048}
    assert kv_bytes(config, 2) == 32768
    assert kv_bytes({**config, "head_dim": None}, 4) == 65536  # head size from hidden ÷ heads
    memory = {"peak_rss_mib": 1000.0}
    single = {"ortmodels int4": {"decode": [40.0, 44.0, 42.0], "ttft_long": [8.0, 8.0, 8.0], "memory": memory},
              GENAI: {"decode": [20.0, 22.0, 21.0], "ttft_long": [10.0, 10.0, 10.0], "memory": {"peak_rss_mib": 800.0}},
              "llama.cpp Q4_K_M": {"decode": [40.0, 40.0, 40.0], "ttft_long": [16.0, 16.0, 16.0],
                                   "memory": {"peak_rss_mib": 1000.0}}}
    streams = {"ortmodels serve int4": [150.0, 160.0, 170.0], "llama-server Q4_K_M parallel 8": [100.0] * 3}
    names = {"ortmodels int4": "ortmodels serve int4", "llama": "llama-server Q4_K_M parallel 8"}
    figures = figures_of(single, streams, ["ortmodels int4"], names, {"peak_rss_ratio": 1.3})
    assert figures[sizes_figure("decode", GENAI)] == 2.0
    assert figures[sizes_figure("decode", "llama.cpp Q4_K_M")] == 1.05
    assert figures[sizes_figure("ttft_long", "llama.cpp Q4_K_M")] == 0.5
    assert figures[sizes_figure("peak_rss", GENAI)] == 1.25
    assert figures[sizes_figure("8_streams", "llama-server Q4_K_M parallel 8")] == 1.6
    assert figures[SIZES_EXPORT_PEAK_FIGURE] == 1.3
    at_3b = figures_of(single, streams, ["ortmodels int4"], names, {"peak_rss_ratio": 1.1}, sizes_part("llama-3.2-3b"))
    assert at_3b[sizes_export_peak_figure("sizes_3b")] == 1.1  # its own keys: the 1B shape's targets keep theirs
    assert at_3b[sizes_figure("decode", GENAI, part="sizes_3b")] == 2.0 and not set(at_3b) & set(figures)
    assert any(t.figure == sizes_export_peak_figure("sizes_3b") for t in TARGETS)
    row = {"name": "ortmodels int4", "bytes": 1.4e9, "kv_bytes_per_token": 32768, "decode_tokens_per_s": 42.0,
           "ttft_long_s": 8.0, "peak_rss_mib": 1000.0}
    data = {"shape": "llama-3.2-1b", "rounds": 3, "new_tokens": 64, "long_tokens": 2001, "conversation_tokens": 4003,
            "streams": 8, "results": [row], "streams_tokens_per_s": streams,
            "export": {"ortmodels": {"seconds": 4265.4, "peak_rss_bytes": 3.22e9, "checkpoint_bytes": 2.47e9,
                                     "peak_rss_ratio": 1.3},
                       "llama.cpp Q4_K_M": {"seconds": 39.0, "peak_rss_bytes": 1.7e9}}}
    text = "\n".join(sizes_section(data))
    assert "| ortmodels int4 | 1,400 MB | 32.0 KiB | 42.0 | 8.00 | 1,000 |" in text
    assert "4,265 s, peak 3,220 MB = 1.30× the checkpoint's 2,470 MB" in text
    assert "| llama.cpp Q4_K_M | 39 | 1,700 MB |" in text
    assert "ortmodels serve int4 160.0 tok/s" in text


def test_render_ray_prefix_section() -> None:
    from benchmarks.targets import (
        LOAD_FOUND_FIGURE,
        PREFIX_FOUND_FIGURE,
        PREFIX_TTFT_FIGURE,
    )

    data = {"date": "2026-12-03T17:00:00+00:00", "machine": {"cpu": "CPU X", "cores": 2, "system": "Linux",
                                                            "python": "3.11.7"},
            "model": "smollm2-135m-instruct:int4", "conversations": 16, "turns": 5, "new_tokens": 32, "rounds": 3,
            "system_prompt_chars": 3400, "quick": False,
            "figures": {PREFIX_TTFT_FIGURE: 0.312, PREFIX_FOUND_FIGURE: 1.0, LOAD_FOUND_FIGURE: 0.354},
            "summary": {"serve --ray 2 replicas, Serve's routing": {"whole": 17, "conversations": 48,
                                                                   "last_ttft_p50_s": 2.41, "last_ttft_p95_s": 5.2},
                        "serve --ray 2 replicas, prefix routing": {"whole": 48, "conversations": 48,
                                                                  "last_ttft_p50_s": 0.75, "last_ttft_p95_s": 1.9}}}
    text = render({"ray_prefix": data})
    assert "| serve --ray 2 replicas, prefix routing | 48 / 48 | 0.75 / 1.90 |" in text
    assert "prefix ÷ Serve's routing (median of per-round ratios): 0.31×." in text


def test_server_cpu_per_token_against_the_baseline() -> None:
    """Each row's server CPU per streamed token, and today's ÷ the baseline's per level (medians of
    per-round ratios); a level where a row lacks the figure gives none."""
    from benchmarks.bench_server import baseline_cpu, cpu_per_token

    assert cpu_per_token(10.0, 12.56, 512) == pytest.approx(5.0)
    assert cpu_per_token(1.0, 1.0, 0) is None
    rows = [{"round": rnd, "clients": n, "contender": name, "server_cpu_ms_per_token": cpu}
            for rnd, (ours, theirs) in enumerate(((4.0, 5.0), (6.0, 5.0), (4.5, 5.0)))
            for n in (1, 8)
            for name, cpu in (("ortmodels int8", ours), ("ortmodels int8 at HEAD", theirs if n == 8 else None))]
    assert baseline_cpu(rows, ["int8"], "HEAD", [1, 8]) == {
        "ortmodels int8 8 clients / ortmodels int8 at HEAD 8 clients": pytest.approx(0.9)}

"""int4's recipe search (`export/decoder/int4_recipes.py`, `exporter._build_checked`), its roundings
(`export/decoder/nbits.py`: rtn, kquant, hqq, gptq) and GPTQ's calibration (`export/decoder/calibration.py`).

The order and the byte estimates are checked on config shapes and on a tiny checkpoint's
real graphs; the selection on stand-in builds and gate figures (a recipe that fails, one
that passes only with its own KV cache, one that passes); the calibrated build on a tiny
checkpoint's real fp32 graph.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ortmodels.export.decoder.int4_recipes import LAST_RESORT, estimated_bytes, int4_candidates
from ortmodels.export.decoder.nbits import quantize_matrix

SAMPLE_SHAPE = {"hidden_size": 576, "intermediate_size": 1536, "num_attention_heads": 9, "num_key_value_heads": 3,
                "head_dim": 64, "num_hidden_layers": 30, "vocab_size": 49152, "tie_word_embeddings": True}


def test_candidates_go_from_the_fewest_bytes_up_and_end_with_the_last_resort() -> None:
    candidates = int4_candidates(SAMPLE_SHAPE)
    per_token = [c.per_token for c in candidates]
    assert per_token == sorted(per_token) and len(set(per_token)) < len(per_token)  # ties: several roundings
    assert candidates[-1].precision == LAST_RESORT
    assert candidates[0].precision.eight_bit == () and candidates[0].precision.head_bits == 4
    assert candidates[0].precision.rounding == "rtn"  # the cheaper rounding first at equal bytes
    assert len({c.name for c in candidates}) == len(candidates)
    # The sample's last resort is the file that was 159 MB (its tokenizer and graph file aside).
    assert 150e6 < candidates[-1].bytes < 159e6, candidates[-1].bytes
    assert candidates[0].bytes < 0.8 * candidates[-1].bytes


def test_estimated_bytes_are_the_graphs_quantized_tensors(tmp_path: Path) -> None:
    """What the estimate counts is exactly what the builder writes for the matrices and the table."""
    import json
    from dataclasses import replace

    import onnx

    from ortmodels.export.decoder.graph import build_decoder_graph
    from tests.test_decoder_graph import PROMPT, _decoder
    from tests.tiny_decoders import build_tiny_decoder

    checkpoint = build_tiny_decoder(tmp_path / "ckpt", "qwen2")  # tied embeddings
    config = json.loads((checkpoint / "config.json").read_text())
    candidates = int4_candidates(config)
    table4 = replace(LAST_RESORT, embedding_bits=4)  # an asymmetric 4-bit table, with zero points
    for n, precision in enumerate([candidates[0].precision, candidates[-1].precision, table4]):
        target = tmp_path / str(n) / "model.onnx"
        target.parent.mkdir()
        build_decoder_graph(checkpoint, target, precision)
        model = onnx.load(str(target))
        quantized = sum(onnx.numpy_helper.to_array(i).nbytes for i in model.graph.initializer
                        if i.name.endswith((".qweight", ".scales", ".zero_points")))
        assert quantized == estimated_bytes(config, precision)[0]
        assert np.isfinite(_decoder(target).all_logits(PROMPT)).all()
    assert candidates[0].bytes == estimated_bytes(config, candidates[0].precision)[0]
    assert estimated_bytes(config, table4)[0] < candidates[-1].bytes


# -- roundings -----------------------------------------------------------------------------------


def _correlated_inputs(rng: np.random.Generator, k: int) -> np.ndarray:
    mix = np.eye(k, dtype=np.float32) + 0.1 * rng.standard_normal((k, k)).astype(np.float32)
    return (rng.standard_normal((1024, k)).astype(np.float32) @ mix) * np.exp(rng.standard_normal(k)).astype(np.float32)


@pytest.mark.parametrize("method", ["kquant", "hqq", "gptq"])
def test_each_rounding_writes_the_layout_onnxruntime_reads(method: str) -> None:
    from tests.test_decoder_graph import _nbits_session

    rng = np.random.default_rng(1)
    weight = rng.standard_normal((48, 96)).astype(np.float32)
    x = _correlated_inputs(rng, 96)
    q = quantize_matrix(weight, 4, 32, method=method, hessian=x.T @ x if method == "gptq" else None)
    a = rng.standard_normal((3, 96)).astype(np.float32)
    np.testing.assert_allclose(_nbits_session(q, 96).run(None, {"A": a})[0], a @ q.dequantized().T,
                               rtol=1e-4, atol=1e-4)
    error = np.sqrt(((q.dequantized() - weight) ** 2).mean() / (weight**2).mean())
    assert error < (0.25 if method == "gptq" else 0.12), error  # GPTQ trades weight error for output error


def test_gptq_lowers_the_output_error_on_the_inputs_it_was_calibrated_on() -> None:
    rng = np.random.default_rng(2)
    weight = (0.05 * rng.standard_normal((128, 256))).astype(np.float32)
    x = _correlated_inputs(rng, 256)

    def output_error(method: str) -> float:
        q = quantize_matrix(weight, 4, 32, method=method, hessian=x.T @ x if method == "gptq" else None)
        return float(np.sqrt(((x @ (q.dequantized() - weight).T) ** 2).mean() / ((x @ weight.T) ** 2).mean()))

    assert output_error("gptq") < 0.8 * output_error("rtn")


def test_roundings_refuse_what_they_cannot_do() -> None:
    weight = np.ones((4, 64), dtype=np.float32)
    with pytest.raises(ValueError, match="Unknown rounding"):
        quantize_matrix(weight, 4, method="awq")
    with pytest.raises(ValueError, match="asymmetric"):
        quantize_matrix(weight, 4, symmetric=True, method="kquant")
    with pytest.raises(ValueError, match="Hessian"):
        quantize_matrix(weight, 4, method="gptq")


# -- calibration on a real (tiny) graph ----------------------------------------------------------


@pytest.mark.slow
def test_calibrated_gptq_graph_on_a_tiny_checkpoint(tmp_path: Path) -> None:
    """Every linear layer gets its input's Hessian (lm_head's traced back past logits_to_keep's
    Slice), and the gptq candidate builds into a graph that runs."""
    import json

    import onnx
    from tokenizers import Tokenizer

    from ortmodels.export.decoder.calibration import (
        calibration_chunks,
        collect_hessians,
        linear_inputs,
    )
    from ortmodels.export.decoder.exporter import GRAPH_PRECISIONS
    from ortmodels.export.decoder.graph import build_decoder_graph
    from tests.test_decoder_graph import PROMPT, _decoder
    from tests.tiny_decoders import build_tiny_decoder

    checkpoint = build_tiny_decoder(tmp_path / "ckpt", "llama")
    base = tmp_path / "base"
    base.mkdir()
    build_decoder_graph(checkpoint, base / "model.onnx", GRAPH_PRECISIONS["fp32"])
    names = linear_inputs(onnx.load(str(base / "model.onnx"), load_external_data=False))
    config = json.loads((checkpoint / "config.json").read_text())
    assert len(names) == 4 * config["num_hidden_layers"] + 1 and "lm_head" in names, sorted(names)

    chunks = calibration_chunks(Tokenizer.from_file(str(checkpoint / "tokenizer.json")))
    hessians = collect_hessians(base / "model.onnx", chunks, tmp_path / "hessians")
    assert hessians.tokens == sum(len(c) for c in chunks) > 500
    assert not list(base.glob("*.calibration.onnx"))  # the probe graph is gone
    down = hessians.get("layers.1.mlp.down_proj")
    assert down is not None and down.shape == (config["intermediate_size"],) * 2
    np.testing.assert_allclose(down, down.T, rtol=1e-5, atol=1e-3)
    assert hessians.get("lm_head").shape == (config["hidden_size"],) * 2  # type: ignore[union-attr]

    gptq = next(c for c in int4_candidates(config) if c.precision.rounding == "gptq")
    build_decoder_graph(checkpoint, tmp_path / "model.onnx", gptq.precision, hessians)
    logits = _decoder(tmp_path / "model.onnx").all_logits(PROMPT)
    assert np.isfinite(logits).all()


# -- the search: from the fewest bytes up, the first that passes every KV precision ---------------


def _verdict(failures: list[str]) -> Any:
    from ortmodels.store.manifest import QualityVerdict

    return QualityVerdict(passed=not failures, failures=failures)


def _search(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, outcomes: list[tuple[list[str], list[str]]]) -> Any:
    """Run `_build_checked` over stand-in recipes: each builds a file, and the gates say
    ``outcomes[n]`` = (failures with its own cache, failures with an fp16 cache)."""
    from ortmodels.export.decoder import exporter as decoder
    from ortmodels.store.manifest import KVEntry

    calls: list[int] = []

    def parity(model_file: Path, reference: Any, float_weights: bool = False, screen: Any = None,
               fp16_weights: bool = False) -> dict[str, Any]:
        return {"perplexity": 13.0 + calls[-1], "perplexity_fp32": 12.0, "top1_agreement": 0.9, "recipe": calls[-1]}

    def judge(dtype: str, figures: dict[str, Any]) -> Any:
        own, kv16 = outcomes[figures["recipe"]]
        return _verdict(kv16 if figures.get("kv16") else own)

    def kv_entries(dtype: str, folder: Path, figures: dict[str, Any], verdict: Any, reference: Any,
                   name: str) -> dict[str, KVEntry]:
        figures16 = {**figures, "kv16": True}
        return {"fp32": KVEntry(file="model.onnx", bytes_per_token=8, parity=figures, quality=verdict),
                "fp16": KVEntry(file="model.kv16.onnx", bytes_per_token=4, parity=figures16,
                                quality=judge(dtype, figures16))}

    def builder(n: int):  # type: ignore[no-untyped-def]
        def build(_src: Path, dst: Path) -> dict[str, Any]:
            calls.append(n)
            dst.write_bytes(b"x" * (100 + n))
            return {"candidate": f"recipe {n}", "bits": 4}
        return build

    monkeypatch.setattr(decoder, "onnx_parity", parity)
    monkeypatch.setattr(decoder, "judge_decoder", judge)
    monkeypatch.setattr(decoder, "_kv_entries", kv_entries)
    base = tmp_path / "_base"
    base.mkdir(parents=True)
    (base / "config.json").write_text("{}")
    entry = decoder._build_checked("int4", base, tmp_path, [builder(n) for n in range(len(outcomes))], {}, None,
                                   "stand-in")  # type: ignore[arg-type]
    return entry, calls


def test_the_first_recipe_that_passes_with_every_kv_cache_is_kept(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    entry, calls = _search(monkeypatch, tmp_path, [
        (["perplexity 1.260x fp32's > 1.1"], []),  # fails its gates
        ([], ["next-token agreement 0.790 < 0.8"]),  # passes, but not with its fp16 cache
        ([], []),  # passes both: kept
        ([], []),  # never built
    ])
    assert calls == [0, 1, 2]
    assert entry.quantization["candidate"] == "recipe 2" and entry.files and entry.quality.passed
    assert entry.quantization["seconds"] >= 0
    failed = entry.quantization["failed_recipes"]
    assert [f["recipe"]["candidate"] for f in failed] == ["recipe 0", "recipe 1"]
    assert failed[0]["failures"] == ["perplexity 1.260x fp32's > 1.1"]
    assert failed[1]["failures"] == ["with an fp16 KV cache: next-token agreement 0.790 < 0.8"]
    assert failed[0]["size"] == 100 and failed[1]["figures"]["fp16_kv"]["perplexity_ratio"] == pytest.approx(14 / 12,
                                                                                                         abs=1e-4)
    assert failed[0]["figures"]["own_kv"] == {"perplexity_ratio": pytest.approx(13 / 12, abs=1e-4),
                                              "top1_agreement": 0.9, "derailed": 0}


def test_the_last_recipe_stands_whatever_its_verdict(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The last resort is published with an fp32 cache when its fp16 one fails (as before the
    search), and recorded as failed, without files, when it fails itself."""
    entry, calls = _search(monkeypatch, tmp_path, [(["x"], []), ([], ["y"])])
    assert calls == [0, 1] and entry.files and entry.quantization["candidate"] == "recipe 1"
    assert len(entry.quantization["failed_recipes"]) == 1

    entry, _ = _search(monkeypatch, tmp_path / "again", [(["x"], []), (["z"], [])])
    assert not entry.files and entry.quality.failures == ["z"]


def test_the_search_is_opt_in_and_skipped_gates_build_one_candidate(tmp_path: Path) -> None:
    """By default int4 is the last resort alone; ``rtn`` tries the round-to-nearest candidates,
    ``gptq`` every one; random-weight benchmark checkpoints (--skip-gates) pass no gate, so a
    search there builds the smallest candidate alone, and no search the last resort."""
    import json

    from ortmodels.export.decoder.exporter import _graph_builders
    from ortmodels.export.decoder.graph import TransformersFacts
    from ortmodels.export.decoder.int4_recipes import int4_search, smallest_candidate
    from ortmodels.export.quality import gates_skipped
    from tests.tiny_decoders import build_tiny_decoder

    checkpoint = build_tiny_decoder(tmp_path / "ckpt", "llama")
    every = int4_candidates(json.loads((checkpoint / "config.json").read_text()))
    facts = TransformersFacts.of(checkpoint)

    def built() -> list[str]:
        builders = _graph_builders(checkpoint, tmp_path, facts)["int4"]
        return [b.candidate.name for b in builders]  # type: ignore[attr-defined]

    assert built() == [every[-1].name] and every[-1].precision == LAST_RESORT
    with int4_search("rtn"):
        assert built() == [c.name for c in every if c.precision.rounding == "rtn"] and len(built()) > 1
    with int4_search("gptq"):
        assert built() == [c.name for c in every]
        with gates_skipped():  # nothing can be judged: the fewest bytes per token alone
            assert built() == [smallest_candidate(json.loads((checkpoint / "config.json").read_text())).name]
    with gates_skipped():
        assert built() == [every[-1].name]  # no search asked: the last resort
    with pytest.raises(ValueError, match="Unknown int4 search 'awq'; known: off, rtn, gptq"):
        with int4_search("awq"):
            pass


def test_selection_says_which_search_was_made_and_why() -> None:
    from ortmodels.export.decoder.int4_recipes import DEFAULT_WHY, selection

    assert selection("off", 0, 1) == {"search": "off", "why": DEFAULT_WHY}
    assert "--int4-search" in DEFAULT_WHY
    assert selection("rtn", 1, 4)["why"].startswith("the fewest bytes per token of 4 candidates (rtn search)")
    assert "every smaller candidate of the gptq search failed" in selection("gptq", 6, 7)["why"]
    assert selection("off", 0, 1, gates_skipped=True)["search"] == "off"
    unjudged = selection("rtn", 0, 1, gates_skipped=True)
    assert unjudged["search"] == "rtn" and unjudged["judged"] is False
    assert unjudged["why"].startswith("not judged: the gates were skipped") and "fewest bytes per token" in unjudged["why"]


def test_the_smallest_candidate_is_all_4_bit_with_a_4_bit_table() -> None:
    """Below every searched candidate in bytes per token and on disk (the 1B shape: tied, vocabulary 128256)."""
    from ortmodels.export.decoder.int4_recipes import smallest_candidate

    config = {"hidden_size": 2048, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64,
              "intermediate_size": 8192, "num_hidden_layers": 16, "vocab_size": 128256, "tie_word_embeddings": True}
    smallest = smallest_candidate(config)
    p = smallest.precision
    assert (p.bits, p.head_bits, p.eight_bit, p.embedding_bits, p.rounding) == (4, 4, (), 4, "rtn")
    assert p.block_size == 128 and smallest.name == "rtn, all 4-bit, blocks of 128, 4-bit embedding"
    assert all((smallest.per_token, smallest.bytes) <= (c.per_token, c.bytes) for c in int4_candidates(config))
    assert smallest.bytes < int4_candidates(config)[0].bytes  # the table: 4 bits, not 8
    untied = smallest_candidate({**config, "tie_word_embeddings": False})
    assert untied.precision.embedding_bits == 8 and untied.name == "rtn, all 4-bit, blocks of 128"
    # Rows shorter than a block of 128 would be padded to it: there blocks of 32 read fewer bytes.
    tiny = smallest_candidate({**config, "hidden_size": 64, "intermediate_size": 96, "head_dim": 16,
                               "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000})
    assert tiny.precision.block_size == 32 and tiny.name == "rtn, all 4-bit, 4-bit embedding"


def test_every_mix_is_tried_in_both_block_sizes_the_coarser_first() -> None:
    """Blocks of 128 read fewer scales per weight (1B shape all 4-bit: 1.25x the decode speed of 32 on
    two cores); each mix's 128 comes before its 32, and a failure of one never rules out the other."""
    from ortmodels.export.decoder.int4_recipes import BLOCK_SIZES, skip_reason

    candidates = int4_candidates(SAMPLE_SHAPE)
    by_name = {c.name: c for c in candidates}
    assert set(BLOCK_SIZES) == {32, 128}
    for mix in ("all 4-bit", "8-bit lm_head", "8-bit lm_head, down_proj"):
        coarse, fine = by_name[f"rtn, {mix}, blocks of 128"], by_name[f"rtn, {mix}"]
        assert (coarse.precision.block_size, fine.precision.block_size) == (128, 32)
        assert coarse.per_token < fine.per_token and candidates.index(coarse) < candidates.index(fine)
    failed = {"recipe": {**by_name["rtn, all 4-bit, blocks of 128"].precision.recipe(),
                         "candidate": "rtn, all 4-bit, blocks of 128"},
              "figures": {"own_kv": {"perplexity_ratio": 3.0, "top1_agreement": 0.2}}}
    assert skip_reason(by_name["gptq, all 4-bit, blocks of 128"], [failed])  # its own sibling: out of reach
    assert skip_reason(by_name["gptq, all 4-bit"], [failed]) is None  # finer blocks: still worth a try


@pytest.mark.slow
def test_gptq_calibrates_on_an_fp32_graph_of_its_own_when_fp32_is_not_exported(tmp_path: Path) -> None:
    """The export writes the fp32 graph only when fp32 is asked for: GPTQ's calibration then
    writes one for itself and removes it once the Hessians are on disk."""
    import shutil

    from ortmodels.export.decoder.exporter import _LazyHessians
    from ortmodels.export.decoder.graph import TransformersFacts
    from tests.tiny_decoders import build_tiny_decoder

    checkpoint = build_tiny_decoder(tmp_path / "ckpt", "llama")
    base = tmp_path / "_base"
    base.mkdir()
    shutil.copy2(checkpoint / "tokenizer.json", base / "tokenizer.json")
    lazy = _LazyHessians(checkpoint, base, base / "calibration", TransformersFacts.of(checkpoint))
    hessians = lazy.get()
    assert lazy.get() is hessians and hessians.tokens > 500
    assert hessians.get("layers.0.mlp.down_proj") is not None and hessians.get("lm_head") is not None
    assert not (base / "model.onnx").exists() and not (base / "calibration" / "fp32").exists()


# -- the default path and the search, through the real exporter on a tiny checkpoint ---------------


@pytest.fixture(scope="module")
def tiny_int4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_decoders import build_tiny_decoder

    root = tmp_path_factory.mktemp("int4") / "models"
    build_tiny_decoder(root / "tiny", "llama")
    return root


def _info_output(root: Path) -> str:
    from typer.testing import CliRunner

    from ortmodels.cli import _register, app

    _register()  # the commands, as `ortmodels` adds them
    shown = CliRunner().invoke(app, ["info", "tiny"], env={"LOCAL_MODELS_DIR": str(root), "COLUMNS": "220"})
    assert shown.exit_code == 0, shown.output
    return shown.output


@pytest.mark.slow
def test_default_int4_export_records_its_recipe_and_why(tiny_int4: Path) -> None:
    from ortmodels.export import export_model
    from ortmodels.export.decoder.int4_recipes import DEFAULT_WHY
    from ortmodels.store import ModelStore

    outcome = export_model(ModelStore(tiny_int4), "tiny", ["fp32", "int4"])  # random weights: int4 may fail
    recipe = outcome.manifest.variants["int4"].quantization or {}
    assert recipe["candidate"] == int4_candidates(
        __import__("json").loads((tiny_int4 / "tiny" / "config.json").read_text()))[-1].name
    assert recipe["selection"] == {"search": "off", "why": DEFAULT_WHY}
    assert list(recipe["eight_bit"]) == list(LAST_RESORT.eight_bit) and recipe["lm_head_bits"] == 8
    assert "failed_recipes" not in recipe and recipe["seconds"] > 0
    shown = _info_output(tiny_int4)
    assert recipe["candidate"] in shown and "default recipe" in shown, shown
    # Asked again without a search: up to date; with one: exported anew.
    assert export_model(ModelStore(tiny_int4), "tiny", ["fp32", "int4"]).skipped


@pytest.mark.slow
def test_an_int4_search_tries_the_smaller_candidates_first(tiny_int4: Path) -> None:
    """Random weights: whether a smaller candidate passes is the gates' call, but every one before
    the kept one is recorded as rejected with its figures, in order."""
    import json

    from ortmodels.export import export_model
    from ortmodels.store import ModelStore

    outcome = export_model(ModelStore(tiny_int4), "tiny", ["fp32", "int4"], int4="rtn")
    assert not outcome.skipped
    recipe = outcome.manifest.variants["int4"].quantization or {}
    names = [c.name for c in int4_candidates(json.loads((tiny_int4 / "tiny" / "config.json").read_text()))
             if c.precision.rounding == "rtn"]
    kept = names.index(recipe["candidate"])
    assert recipe["selection"]["search"] == "rtn"
    assert recipe["selection"]["why"].startswith(
        "the fewest bytes" if kept < len(names) - 1 else "every smaller candidate")
    assert [r["recipe"]["candidate"] for r in recipe.get("failed_recipes", [])] == names[:kept]
    for row in recipe.get("failed_recipes", []):
        assert row["failures"] and row["size"] > 0 and row["figures"]["own_kv"]["perplexity_ratio"] > 0, row
    assert export_model(ModelStore(tiny_int4), "tiny", ["fp32", "int4"], int4="rtn").skipped
    assert "rtn search" in _info_output(tiny_int4)


@pytest.mark.slow
def test_a_search_with_the_gates_skipped_keeps_the_smallest_candidate_not_judged(tmp_path: Path) -> None:
    """Nothing can be judged, so nothing is searched: the all-4-bit candidate, and on a tied model
    (Qwen2 here, Llama 3.2 1B) its embedding table at 4 bits too, said so by the manifest and `info`."""
    import json

    from ortmodels.export import export_model
    from ortmodels.export.decoder.int4_recipes import UNJUDGED_WHY, smallest_candidate
    from ortmodels.store import ModelStore
    from tests.tiny_decoders import build_tiny_decoder

    root = tmp_path / "models"
    build_tiny_decoder(root / "tiny", "qwen2")
    outcome = export_model(ModelStore(root), "tiny", ["fp32", "int4"], skip_gates=True, int4="rtn")
    entry = outcome.manifest.variants["int4"]
    recipe = entry.quantization or {}
    smallest = smallest_candidate(json.loads((root / "tiny" / "config.json").read_text()))
    assert recipe["candidate"] == smallest.name == "rtn, all 4-bit, 4-bit embedding"
    assert not recipe["eight_bit"] and recipe["lm_head_bits"] is None and recipe["embedding_bits"] == 4
    assert recipe["selection"] == {"search": "rtn", "judged": False, "why": UNJUDGED_WHY.format(mode="rtn")}
    assert "failed_recipes" not in recipe and entry.quality is not None and not entry.quality.judged
    assert entry.files  # published, its 4-bit GatherBlockQuantized table run through the checks
    assert "rtn search, not judged" in _info_output(root)


def test_a_calibrated_rounding_is_built_only_where_round_to_nearest_came_close() -> None:
    from ortmodels.export.decoder.int4_recipes import skip_reason

    candidates = int4_candidates(SAMPLE_SHAPE)
    rtn, gptq = candidates[0], candidates[1]
    assert (rtn.precision.rounding, gptq.precision.rounding) == ("rtn", "gptq")
    assert rtn.precision.recipe()["lm_head_bits"] == gptq.precision.recipe()["lm_head_bits"]

    def tried(ratio: float, top1: float) -> list[dict[str, Any]]:
        return [{"recipe": {**rtn.precision.recipe(), "candidate": rtn.name},
                 "figures": {"own_kv": {"perplexity_ratio": ratio, "top1_agreement": top1}}}]

    assert skip_reason(rtn, []) is None and skip_reason(gptq, []) is None
    assert "1.449x" in skip_reason(gptq, tried(1.449, 0.683))  # type: ignore[operator]  # the sample's
    assert "0.700" in skip_reason(gptq, tried(1.15, 0.70))  # type: ignore[operator]
    assert skip_reason(gptq, tried(1.137, 0.81)) is None  # near: worth calibrating
    other_mix = next(c for c in candidates if c.precision.rounding == "gptq" and c.precision.lm_head_bits == 8)
    assert skip_reason(other_mix, tried(1.449, 0.683)) is None

"""The benchmarks' pure helpers on tiny inputs: no model, no peers venv, milliseconds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks.quality import (
    cosine_rows,
    perplexity,
    top_k_agreement,
    top_k_neighbours,
)
from benchmarks.readme import END, START, render, replace_section, targets_table
from benchmarks.targets import Target, evaluate, ratio_key


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

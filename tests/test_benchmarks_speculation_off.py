"""Engine-against-engine benchmarks run ortmodels without speculative decoding, as the peers run.

``MODEL_SPECULATIVE=auto`` (the default) speculates on fp32, so a benchmark that left it
alone compared ortmodels with speculation against peers without it.
"""

from __future__ import annotations

import os

import pytest

from benchmarks.report import ENGINE_SETTINGS, use_engine_settings
from ortmodels.config import load_settings
from tests.conftest import SAMPLES_DIR


def test_engine_settings_turn_speculation_off_for_what_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """bench_concurrency's ModelManager and the `ortmodels serve` processes of bench_server and
    bench_ray read their settings from the environment the benchmark sets."""
    monkeypatch.setenv("MODEL_SPECULATIVE", "auto")  # restored after the test
    assert load_settings().speculates("fp32")
    recorded = use_engine_settings()
    assert recorded == ENGINE_SETTINGS == {"MODEL_SPECULATIVE": "off"}
    assert os.environ["MODEL_SPECULATIVE"] == "off"
    assert not load_settings().speculates("fp32")


@pytest.mark.slow
def test_the_chat_benchmarks_ortmodels_fp32_does_not_speculate() -> None:
    from benchmarks.chat_ortmodels import OrtModelsEngine

    contender = OrtModelsEngine(SAMPLES_DIR, "fp32")
    try:
        assert contender.model.loaded.variant == "fp32"
        assert contender.model.loaded.engine.speculative is False
        result = contender.run({"messages": [{"role": "user", "content": "Repeat: one two three four."}]}, 8)
        assert result["tokens"] > 0
    finally:
        contender.model.unload(timeout=30)

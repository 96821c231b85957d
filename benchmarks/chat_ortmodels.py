"""ortmodels as a chat contender, through its public API only (`OnnxChatModel`).

Measured as users run it: ``stream()`` with ``max_tokens`` as the cap, greedy, but with
speculative decoding off, as the peers run (bench_speculative measures it apart). The
checkpoint's chat template renders the messages, as in every other contender. For
perplexity the loaded model's `DecoderSession` gives the logits of a whole text in one
pass (through its engine), whatever graph the export produced.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.contenders import now, timings

MODEL = "smollm2-135m-instruct"


class OrtModelsEngine:
    def __init__(self, models_dir: Path, dtype: str, model: str = MODEL, **settings: Any) -> None:
        from ortmodels import OnnxChatModel
        from ortmodels.config import load_settings

        # No prompt cache: every round repeats the same prompt, and the peers prefill it each time.
        # No speculative decoding: the peers do not speculate (benchmarks.report.ENGINE_SETTINGS;
        # not imported here, so a cold start measures ortmodels' imports only). ``settings``: more
        # of them (bench_sizes: ``model_kv_dtype="fp16"``).
        given = load_settings(model_prompt_cache=0, model_speculative="off", **settings)
        self.model = OnnxChatModel(model_path=models_dir / model, dtype=dtype, device="cpu", temperature=0.0,
                                   settings=given).load()

    def kv_bytes_per_token(self) -> int | None:
        """What one token of context holds in the loaded variant's KV cache, in bytes."""
        return self.model.runtime.kv_bytes_per_token

    @staticmethod
    def _messages(prompt: dict[str, Any]) -> list[Any]:
        from langchain_core.messages import HumanMessage, SystemMessage

        kinds = {"system": SystemMessage, "user": HumanMessage}
        return [kinds[m["role"]](m["content"]) for m in prompt["messages"]]

    def prompt_tokens(self, prompt: dict[str, Any]) -> int:
        # What the engine runs: the template's markup as control ids, the messages' text as text
        # (`get_token_ids` would read the markup as text too).
        return len(self.model.prompt_token_ids(self._messages(prompt)))

    def run(self, prompt: dict[str, Any], new_tokens: int) -> dict[str, Any]:
        pieces: list[str] = []
        first = None
        usage: dict[str, Any] = {}
        finish = None
        start = now()
        for chunk in self.model.stream(self._messages(prompt), max_tokens=new_tokens):
            if chunk.content and first is None:
                first = now()
            pieces.append(chunk.content)
            if chunk.usage_metadata:
                usage = dict(chunk.usage_metadata)
                finish = chunk.response_metadata.get("finish_reason")
        end = now()
        return timings(start, first, end, int(usage.get("output_tokens", 0)), "".join(pieces), finish_reason=finish)

    def logits(self, ids: list[int]) -> np.ndarray:
        return np.asarray(self.model.loaded.engine.all_logits(ids))


def load_ortmodels(models_dir: Path, dtype: str) -> OrtModelsEngine:
    return OrtModelsEngine(models_dir, dtype)

"""onnxruntime-genai and llama.cpp (llama-cpp-python) as chat contenders, in the peers venv.

Never imports ortmodels (it is not installed there). Both are fed the token ids the
parent made with the checkpoint's own tokenizer (see `benchmarks.prompts` for why:
genai's tokenizer misreads this checkpoint's); their tokenizers only turn the answer
back into text, for the record.
Both run greedy and are stopped after exactly ``new_tokens`` tokens (end-of-sequence is
not honoured: the same number of tokens is timed in every contender).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.contenders import now, timings
from benchmarks.peers.env import genai_model_dir, gguf_path


class GenaiEngine:
    """onnxruntime-genai's own loop over the graph its model builder made from the checkpoint."""

    def __init__(self, folder: Path) -> None:
        import onnxruntime_genai as og

        self.og = og
        config = og.Config(str(folder))
        config.clear_providers()  # CPU
        self.model = og.Model(config)
        self.tokenizer = og.Tokenizer(self.model)

    def _ids(self, prompt: dict[str, Any]) -> np.ndarray:
        return np.asarray(prompt["ids"], dtype=np.int32)

    def prompt_tokens(self, prompt: dict[str, Any]) -> int:
        return len(self._ids(prompt))

    def run(self, prompt: dict[str, Any], new_tokens: int) -> dict[str, Any]:
        og = self.og
        start = now()
        ids = self._ids(prompt)
        params = og.GeneratorParams(self.model)
        # min_length = max_length: end-of-sequence is masked until the cap, as in transformers
        params.set_search_options(do_sample=False, max_length=len(ids) + new_tokens, min_length=len(ids) + new_tokens)
        generator = og.Generator(self.model, params)
        generator.append_tokens(ids)
        out: list[int] = []
        first = None
        while len(out) < new_tokens and not generator.is_done():
            generator.generate_next_token()
            out.append(int(generator.get_next_tokens()[0]))
            if first is None:
                first = now()
        end = now()
        text = self.tokenizer.decode(np.asarray(out, dtype=np.int32))
        return timings(start, first, end, len(out), text, finish_reason="length")

    def logits(self, ids: list[int]) -> np.ndarray:
        og = self.og
        params = og.GeneratorParams(self.model)
        params.set_search_options(do_sample=False, max_length=len(ids) + 1)
        generator = og.Generator(self.model, params)
        generator.append_tokens(np.asarray(ids, dtype=np.int32))
        logits = np.asarray(generator.get_output("logits"))
        return logits.reshape(-1, logits.shape[-1])


class LlamaCppEngine:
    """llama.cpp through llama-cpp-python, on a GGUF (the sample's original Q4_1 unless told another)."""

    def __init__(self, path: Path, threads: int, n_ctx: int = 2048) -> None:
        from llama_cpp import Llama

        self.path, self.threads = path, threads
        self.llm = Llama(model_path=str(path), n_threads=threads, n_threads_batch=threads, n_ctx=n_ctx,
                         verbose=False)

    def _ids(self, prompt: dict[str, Any]) -> list[int]:
        return list(prompt["ids"])

    def prompt_tokens(self, prompt: dict[str, Any]) -> int:
        return len(self._ids(prompt))

    def run(self, prompt: dict[str, Any], new_tokens: int) -> dict[str, Any]:
        start = now()
        ids = self._ids(prompt)
        self.llm.reset()  # no reuse of the previous run's cached prefix: every run prefills
        out: list[int] = []
        first = None
        for token in self.llm.generate(ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0):
            out.append(int(token))
            if first is None:
                first = now()
            if len(out) == new_tokens:
                break
        end = now()
        text = self.llm.detokenize(out).decode("utf-8", errors="replace")
        return timings(start, first, end, len(out), text, finish_reason="length")

    def logits(self, ids: list[int]) -> np.ndarray:
        from llama_cpp import Llama

        llm = Llama(model_path=str(self.path), n_threads=self.threads, n_threads_batch=self.threads,
                    n_ctx=max(2048, len(ids) + 1), logits_all=True, verbose=False)
        llm.eval(ids)
        return np.asarray(llm.scores[: len(ids)], dtype=np.float32)


def load_genai(models_dir: Path, precision: str) -> GenaiEngine:
    return GenaiEngine(genai_model_dir(precision))


def load_llama_cpp(models_dir: Path, threads: int) -> LlamaCppEngine:
    return LlamaCppEngine(gguf_path(), threads)

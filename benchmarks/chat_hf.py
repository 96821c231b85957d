"""optimum's ORTModelForCausalLM and transformers on PyTorch as chat contenders (dev venv).

Both go through ``generate`` with ``min_new_tokens == max_new_tokens``, which masks the
end-of-sequence token until the cap, so they always generate exactly the tokens asked for.
optimum runs its own export of the checkpoint (``text-generation-with-past``, made once and
cached in ``benchmarks/.cache/optimum``, remade when the checkpoint changes), as a user of
optimum would. PyTorch keeps its default thread count.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.contenders import now, timings
from benchmarks.measure import TokenTimer
from benchmarks.protocol import ROOT

MODEL = "smollm2-135m-instruct"


class HfEngine:
    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model, self.tokenizer = model, tokenizer

    def _inputs(self, prompt: dict[str, Any]) -> Any:
        return self.tokenizer.apply_chat_template(
            prompt["messages"], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )

    def prompt_tokens(self, prompt: dict[str, Any]) -> int:
        return int(self._inputs(prompt)["input_ids"].shape[1])

    def run(self, prompt: dict[str, Any], new_tokens: int) -> dict[str, Any]:
        timer = TokenTimer()
        start = now()
        inputs = self._inputs(prompt)
        output = self.model.generate(
            **inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
            temperature=None, top_p=None, top_k=None, pad_token_id=self.tokenizer.eos_token_id,
            streamer=timer,
        )
        end = now()
        answer = output[0, inputs["input_ids"].shape[1]:]
        text = self.tokenizer.decode(answer, skip_special_tokens=True)
        return timings(start, timer.first_token_at, end, int(answer.shape[0]), text, finish_reason="length")


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()


def _optimum_export(checkpoint: Path) -> Path:
    """optimum's own fp32 export of ``checkpoint``, made once per checkpoint hash."""
    from optimum.onnxruntime import ORTModelForCausalLM
    from transformers import AutoTokenizer

    from ortmodels.export.checkpoint.source import source_sha256

    folder = ROOT / "benchmarks" / ".cache" / "optimum" / MODEL
    stamp = folder / ".checkpoint-sha256"
    wanted = source_sha256(checkpoint)
    if not (stamp.is_file() and stamp.read_text() == wanted and (folder / "model.onnx").is_file()):
        model = ORTModelForCausalLM.from_pretrained(checkpoint, export=True, use_cache=True)
        model.save_pretrained(folder)
        AutoTokenizer.from_pretrained(checkpoint).save_pretrained(folder)
        stamp.write_text(wanted)
    return folder


def load_optimum(models_dir: Path) -> HfEngine:
    from optimum.onnxruntime import ORTModelForCausalLM
    from transformers import AutoTokenizer

    _quiet_transformers()
    folder = _optimum_export(models_dir / MODEL)
    model = ORTModelForCausalLM.from_pretrained(
        folder, use_cache=True, provider="CPUExecutionProvider", use_io_binding=False
    )
    return HfEngine(model, AutoTokenizer.from_pretrained(folder))


def load_pytorch(models_dir: Path) -> HfEngine:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet_transformers()
    folder = models_dir / MODEL
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    return HfEngine(model, AutoTokenizer.from_pretrained(folder))

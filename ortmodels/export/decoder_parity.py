"""How faithful an exported decoder is to its PyTorch original.

Three figures per variant: greedy-token agreement over 32 new tokens on probe prompts
(the share of tokens before the first difference), the largest logit difference on a
prompt, and perplexity on a fixed real text next to the PyTorch model's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..engine.chat_template import ChatTemplate
from ..engine.decoder import DecoderSession
from ..engine.engine import Engine
from ..engine.request import Request
from ..engine.session import create_session
from ..errors import ModelFileError
from .probes import PROBE_PROMPTS, perplexity_text

NEW_TOKENS = 32
PERPLEXITY_TOKENS = 512


def _prompt_ids(base: Path, tokenizer: Any) -> list[list[int]]:
    """Probe prompts through the chat template when there is one, else as plain text."""
    try:
        template = ChatTemplate.from_folder(base)
    except ModelFileError:
        return [tokenizer.encode(p).ids for p in PROBE_PROMPTS]
    texts = [template.render([{"role": "user", "content": p}]) for p in PROBE_PROMPTS]
    return [tokenizer.encode(t, add_special_tokens=False).ids for t in texts]


def perplexity(logits: np.ndarray, ids: list[int]) -> float:
    """exp of the mean negative log-likelihood of ``ids[1:]`` given the logits before each."""
    scores = logits[:-1].astype(np.float64)
    scores -= scores.max(axis=1, keepdims=True)
    log_probs = scores - np.log(np.exp(scores).sum(axis=1, keepdims=True))
    nll = -log_probs[np.arange(len(ids) - 1), ids[1:]]
    return float(np.exp(nll.mean()))


def reference_model(checkpoint: Path) -> Any:
    """The fp32 PyTorch model the exports are compared with.

    Eager attention where the config soft-caps attention logits (Gemma 2): transformers' SDPA
    path silently drops the cap, so it computes another model than the checkpoint's.
    """
    import json

    import torch
    from transformers import AutoModelForCausalLM

    config = json.loads((checkpoint / "config.json").read_text())
    extra = {"attn_implementation": "eager"} if config.get("attn_logit_softcapping") else {}
    return AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32, **extra).eval()


@dataclass
class DecoderReference:
    """What the PyTorch model does on the probes, computed once per export."""

    prompts: list[list[int]]
    greedy: list[list[int]]
    prompt_logits: np.ndarray
    text_ids: list[int]
    perplexity: float

    @classmethod
    def compute(cls, checkpoint: Path, base: Path, tokenizer: Any, context_length: int) -> DecoderReference:
        import torch

        model = reference_model(checkpoint)
        prompts = _prompt_ids(base, tokenizer)
        greedy = []
        with torch.inference_mode():
            for ids in prompts:
                out = model(input_ids=torch.tensor([ids]), use_cache=True)
                tokens: list[int] = []
                for _ in range(NEW_TOKENS):
                    tokens.append(int(out.logits[0, -1].argmax()))
                    out = model(input_ids=torch.tensor([[tokens[-1]]]), past_key_values=out.past_key_values,
                                use_cache=True)
                greedy.append(tokens)
            prompt_logits = model(input_ids=torch.tensor([prompts[0]])).logits[0].float().numpy()
            text_ids = tokenizer.encode(perplexity_text()).ids[: min(PERPLEXITY_TOKENS, context_length)]
            text_logits = model(input_ids=torch.tensor([text_ids])).logits[0].float().numpy()
        return cls(prompts, greedy, prompt_logits, text_ids, perplexity(text_logits, text_ids))


def greedy_tokens(decoder: DecoderSession, ids: list[int], count: int = NEW_TOKENS) -> list[int]:
    """``count`` greedy tokens after ``ids``, through the engine every chat runs on (no end token)."""
    engine = Engine(decoder, max_batch=1)
    request = Request(ids, max_tokens=count)
    engine.add_request(request)
    while engine.step():
        pass
    return request.generated


def common_prefix(a: Sequence, b: Sequence) -> int:
    """How many leading items two sequences share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def onnx_parity(model_file: Path, reference: DecoderReference) -> dict[str, Any]:
    """The parity figures of one exported graph against ``reference``, on the CPU."""
    decoder = DecoderSession(create_session(model_file, "cpu"))
    agreements = [
        common_prefix(greedy_tokens(decoder, ids), expected) / NEW_TOKENS
        for ids, expected in zip(reference.prompts, reference.greedy)
    ]
    prompt_logits = decoder.all_logits(reference.prompts[0])  # the engine's Engine.all_logits
    text_logits = decoder.all_logits(reference.text_ids)
    return {
        "reference": "pytorch fp32",
        "prompts": len(reference.prompts),
        "new_tokens": NEW_TOKENS,
        "greedy_agreement": round(float(np.mean(agreements)), 4),
        "max_logit_diff": float(np.abs(prompt_logits - reference.prompt_logits).max()),
        "perplexity": round(perplexity(text_logits, reference.text_ids), 4),
        "perplexity_fp32": round(reference.perplexity, 4),
        "perplexity_tokens": len(reference.text_ids),
    }

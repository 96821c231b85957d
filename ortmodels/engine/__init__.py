"""The generation engine: decoder steps, KV slots, sampling, detokenizing, batching, prompt cache.

Imports only onnxruntime, tokenizers, numpy, jinja2 and the standard library (plus
`ortmodels.errors`): no LangChain, no model store, so the LangChain adapters, an HTTP
server and the exporter's parity checks all run on the same engine.

    engine = Engine(DecoderSession(session), tokenizer, max_batch=8, prompt_cache_bytes=256 << 20)
    for event in engine.generate(Request(prompt_ids, max_tokens=64, eos_token_ids=[2])):
        ...  # TextDelta(text, token_ids) ..., then Finished(reason, usage, ttft)
    engine.close()
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .decoder import DecoderSession, DecoderState
    from .detokenizer import TextAssembler
    from .engine import DEFAULT_KV_CACHE_BYTES, Engine, EngineGauges
    from .prompt_cache import PromptCache
    from .request import Event, Finished, FinishReason, Request, TextDelta
    from .sampling import BannedTokens, LogitsProcessor, SamplingParams, choose_token

#: Public name → its submodule, imported on first use (PEP 562): a module that needs only the
#: tokenizer or the tool formats (`ortmodels.runtime.messages`) does not load onnxruntime.
_PUBLIC = {
    "DecoderSession": ".decoder", "DecoderState": ".decoder", "TextAssembler": ".detokenizer",
    "DEFAULT_KV_CACHE_BYTES": ".engine", "Engine": ".engine", "EngineGauges": ".engine",
    "PromptCache": ".prompt_cache", "Event": ".request", "Finished": ".request", "FinishReason": ".request",
    "Request": ".request", "TextDelta": ".request", "BannedTokens": ".sampling", "LogitsProcessor": ".sampling",
    "SamplingParams": ".sampling", "choose_token": ".sampling",
}


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "DEFAULT_KV_CACHE_BYTES",
    "BannedTokens",
    "DecoderSession",
    "DecoderState",
    "Engine",
    "EngineGauges",
    "Event",
    "FinishReason",
    "Finished",
    "LogitsProcessor",
    "PromptCache",
    "Request",
    "SamplingParams",
    "TextAssembler",
    "TextDelta",
    "choose_token",
]

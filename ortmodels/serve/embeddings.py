"""``/v1/embeddings``: texts → the embedding model's coalesced batches → floats or base64.

base64 is the vector as little-endian float32 bytes, as OpenAI sends it (and as the
``openai`` client asks for by default, decoding it with numpy).
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import numpy as np

from ..errors import ModelNotLoadedError
from ..runtime.embedding_options import prompt_for
from .errors import bad_request
from .protocol import EmbeddingData, EmbeddingList, EmbeddingRequest, Usage


def texts_of(request: EmbeddingRequest) -> list[str]:
    given = request.input
    texts = [given] if isinstance(given, str) else given
    if not texts:
        raise bad_request("input is empty; give a string or a list of strings.", "input")
    if not all(isinstance(t, str) for t in texts):
        raise bad_request("Token ids as input are not supported; send the text.", "input", "unsupported_parameter")
    return texts  # type: ignore[return-value]


def _token_count(model: Any, texts: list[str], options: dict[str, Any]) -> int:
    """Tokens the model read (each text with its prompt, cut to its window, as embedding does).

    A keep-alive of 0 may have unloaded the model since its vectors were made: it is loaded
    again for the count rather than failing an answer that is already computed.
    """
    if not hasattr(type(model), "runner"):  # a user's own class: no tokenizer to count with
        return 0
    try:
        runner = model.load().runner
    except ModelNotLoadedError:  # unloaded again in between: load once more
        runner = model.load().runner
    limit = runner.text_chars
    prompt = prompt_for(runner.spec, str(model.model_name), options.get("input_type"), options.get("prompt_name"))
    return sum(len(e.ids) for e in runner.tokenizer.encode_batch([(prompt + t)[:limit] for t in texts]))


def options_of(request: EmbeddingRequest) -> dict[str, Any]:
    """The request's embedding options, as keywords of `BaseEmbeddingModel.embed`."""
    return {"input_type": request.input_type, "prompt_name": request.prompt_name,
            "dimensions": request.dimensions, "matryoshka": bool(request.matryoshka)}


async def embed_counted(model: Any, texts: list[str],
                        options: dict[str, Any] | None = None) -> tuple[list[list[float]], int]:
    """The vectors of ``texts`` and the tokens the model read, computed where the model is.
    ``options``: `options_of`; a model that has no ``aembed`` (a plain LangChain class) takes none."""
    options = options or {}
    if hasattr(model, "aembed"):
        vectors = await model.aembed(texts, **options)
    elif any(options.get(k) is not None for k in ("input_type", "prompt_name", "dimensions")):
        raise bad_request("This model takes no input_type, prompt_name or dimensions.", "input_type")
    else:
        vectors = await model.aembed_documents(texts)
    tokens = await asyncio.to_thread(_token_count, model, texts, options)
    return vectors, tokens


async def embed(model: Any, model_id: str, request: EmbeddingRequest) -> dict[str, Any]:
    """The answer; ``model`` is a model here, or a stand-in whose ``aembed_counted`` runs
    `embed_counted` where the model is (`ortmodels.serve.ray`)."""
    texts = texts_of(request)
    options = options_of(request)
    counted = getattr(model, "aembed_counted", None)
    vectors, tokens = await (counted(texts, options) if counted is not None else embed_counted(model, texts, options))
    data = []
    for index, vector in enumerate(vectors):
        value: list[float] | str = vector
        if request.encoding_format == "base64":
            value = base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
        data.append(EmbeddingData(index=index, embedding=value))
    body = EmbeddingList(data=data, model=model_id, usage=Usage(prompt_tokens=tokens, total_tokens=tokens))
    return body.model_dump(exclude_none=True)

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


def _token_count(model: Any, texts: list[str]) -> int:
    """Tokens the model read (each text cut to its window, as embedding does).

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
    return sum(len(e.ids) for e in runner.tokenizer.encode_batch([t[:limit] for t in texts]))


async def embed_counted(model: Any, texts: list[str]) -> tuple[list[list[float]], int]:
    """The vectors of ``texts`` and the tokens the model read, computed where the model is."""
    vectors = await model.aembed_documents(texts)
    tokens = await asyncio.to_thread(_token_count, model, texts)
    return vectors, tokens


async def embed(model: Any, model_id: str, request: EmbeddingRequest) -> dict[str, Any]:
    """The answer; ``model`` is a model here, or a stand-in whose ``aembed_counted`` runs
    `embed_counted` where the model is (`ortmodels.serve.ray`)."""
    texts = texts_of(request)
    if request.dimensions is not None:
        dimension = await asyncio.to_thread(lambda: model.dimension)
        if request.dimensions != dimension:
            raise bad_request(f"{model_id} gives {dimension} dimensions; it cannot give {request.dimensions}.",
                              "dimensions", "unsupported_parameter")
    counted = getattr(model, "aembed_counted", None)
    vectors, tokens = await (counted(texts) if counted is not None else embed_counted(model, texts))
    data = []
    for index, vector in enumerate(vectors):
        value: list[float] | str = vector
        if request.encoding_format == "base64":
            value = base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
        data.append(EmbeddingData(index=index, embedding=value))
    body = EmbeddingList(data=data, model=model_id, usage=Usage(prompt_tokens=tokens, total_tokens=tokens))
    return body.model_dump(exclude_none=True)

"""``/v1/embeddings``: texts → the embedding model's coalesced batches → floats or base64.

base64 is the vector as little-endian float32 bytes, as OpenAI sends it (and as the
``openai`` client asks for by default, decoding it with numpy).
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from .errors import bad_request
from .protocol import EmbeddingData, EmbeddingList, EmbeddingRequest, Usage
from .protocols import EmbeddingModel


#: Texts one request may hold: OpenAI's limit, so the work one request makes is bounded.
MAX_INPUTS = 2048


def texts_of(request: EmbeddingRequest) -> list[str]:
    given = request.input
    texts = [given] if isinstance(given, str) else given
    if not texts:
        raise bad_request("input is empty; give a string or a list of strings.", "input")
    if len(texts) > MAX_INPUTS:
        raise bad_request(f"input has {len(texts)} items; this server embeds at most {MAX_INPUTS} per request "
                          "(as OpenAI): send them in several requests.", "input")
    if not all(isinstance(t, str) for t in texts):
        raise bad_request("Token ids as input are not supported; send the text.", "input", "unsupported_parameter")
    return texts  # type: ignore[return-value]


def options_of(request: EmbeddingRequest) -> dict[str, Any]:
    """The request's embedding options, as keywords of `BaseEmbeddingModel.embed`."""
    return {"input_type": request.input_type, "prompt_name": request.prompt_name,
            "dimensions": request.dimensions, "matryoshka": bool(request.matryoshka)}


async def embed(model: EmbeddingModel, model_id: str, request: EmbeddingRequest) -> dict[str, Any]:
    """The answer; ``model`` is a model here, or a stand-in whose ``aembed_counted`` runs
    where the model is (`ortmodels.serve.ray`)."""
    texts = texts_of(request)
    vectors, tokens = await model.aembed_counted(texts, options_of(request))
    data = []
    for index, vector in enumerate(vectors):
        value: list[float] | str = vector
        if request.encoding_format == "base64":
            value = base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
        data.append(EmbeddingData(index=index, embedding=value))
    body = EmbeddingList(data=data, model=model_id, usage=Usage(prompt_tokens=tokens, total_tokens=tokens))
    return body.model_dump(exclude_none=True)

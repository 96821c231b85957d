"""``/v1/rerank`` (and ``/rerank``): a query and documents → each document's relevance, best first.

The shape Jina's, Cohere's, vLLM's and llama-server's clients send: ``model``, ``query``,
``documents`` (strings, or objects with a ``text`` field), ``top_n``, ``return_documents``;
the answer ``{"model", "results": [{"index", "relevance_score", "document"?}], "usage"}``,
``document`` as ``{"text": ...}`` when asked for. The model scores every pair in the
coalesced, length-sorted batches of `ortmodels.runtime.rerank`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .errors import bad_request
from .protocols import RerankModel

#: The most documents one request may rank (Cohere's and Jina's limit).
MAX_DOCUMENTS = 1000


class RerankRequest(BaseModel):
    """A rerank request; unknown fields are refused, as on every other route."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str | None = None
    query: str
    documents: list[Any]
    """Strings, or objects with a ``text`` field (Jina, Cohere)."""
    top_n: int | None = Field(default=None, ge=1)
    """How many results to return, best first; all when left out."""
    return_documents: bool = False
    """Include each result's document as ``{"text": ...}``."""


class RerankResult(BaseModel):
    index: int
    relevance_score: float
    document: dict[str, str] | None = None


class RerankUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class RerankResponse(BaseModel):
    model: str
    object: str = "list"
    results: list[RerankResult]
    usage: RerankUsage


def documents_of(request: RerankRequest) -> list[str]:
    """The documents' texts, or a 400 naming the first document that is neither a string nor ``{"text": str}``."""
    given = request.documents
    if not given:
        raise bad_request("documents is empty; give the texts to rank (strings or objects with a 'text').",
                          "documents")
    if len(given) > MAX_DOCUMENTS:
        raise bad_request(f"documents has {len(given)} items; this server ranks at most {MAX_DOCUMENTS} per "
                          "request. Split them into several requests.", "documents")
    texts = []
    for index, item in enumerate(given):
        if isinstance(item, dict) and set(item) == {"text"} and isinstance(item["text"], str):
            item = item["text"]
        if not isinstance(item, str):
            raise bad_request(f"documents[{index}] must be a string or an object with only a string 'text' "
                              f"field, not {type(item).__name__} {str(item)[:60]!r}.", f"documents[{index}]")
        texts.append(item)
    return texts


async def rerank(model: RerankModel, model_id: str, request: RerankRequest) -> dict[str, Any]:
    """The answer; ``model`` is a model here, or a stand-in whose ``arerank_counted`` runs
    where the model is (`ortmodels.serve.ray`)."""
    documents = documents_of(request)
    ranked, tokens = await model.arerank_counted(request.query, documents, request.top_n)
    results = [RerankResult(index=i, relevance_score=score,
                            document={"text": documents[i]} if request.return_documents else None)
               for i, score in ranked]
    body = RerankResponse(model=model_id, results=results, usage=RerankUsage(prompt_tokens=tokens,
                                                                            total_tokens=tokens))
    return body.model_dump(exclude_none=True)

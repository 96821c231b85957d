"""A caller's texts (to embed, to rerank), checked before any model work: a clear error per bad item."""

from __future__ import annotations

from .errors import SURROGATE_CAUSES, EmbeddingInputError, RerankInputError


def check_texts(texts: object, what: str = "embed_documents", error: type[ValueError] = EmbeddingInputError,
                where: str = "") -> list[str]:
    """``texts`` as a list of valid Unicode str, or the error naming the item and the fix.
    ``what`` names the call in the message, ``error`` is raised for invalid Unicode, ``where``
    prefixes the item's place (``"pair 3: "``)."""
    if isinstance(texts, str):
        raise TypeError(f"{what} expects a list of str, got a single str; wrap it in a list.")
    try:
        items = list(texts)  # type: ignore[call-overload]
    except TypeError:
        raise TypeError(
            f"{what} expects a list of str, got {type(texts).__name__}."
        ) from None
    for index, item in enumerate(items):
        if not isinstance(item, str):
            raise TypeError(
                f"{what} expects str items; {where}item {index} is {type(item).__name__}: "
                f"{item!r:.60}"
            )
        try:
            item.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise error(
                f"{where}Text {index} is not valid Unicode: {exc.object[exc.start:exc.end]!r} at character "
                f"{exc.start} is a lone surrogate, not a character ({SURROGATE_CAUSES}). Send UTF-8 text."
            ) from None
    return items


def rerank_pairs(query: object, documents: object, top_n: object) -> list[tuple[str, str]]:
    """The (query, document) pairs of a rerank call, after checking its arguments."""
    if not isinstance(query, str):
        raise TypeError(f"rerank expects the query as a str, got {type(query).__name__}.")
    if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1):
        raise ValueError(f"top_n must be a whole number of at least 1 (or None for all), not {top_n!r:.40}.")
    check_texts([query], "rerank", RerankInputError, "the query: ")
    return [(query, d) for d in check_texts(documents, "rerank", RerankInputError)]


def ranked(scores: list[float], top_n: int | None) -> list[tuple[int, float]]:
    """``(index, score)`` best first (a stable sort: equal scores keep their order), the first ``top_n``."""
    order = sorted(enumerate(scores), key=lambda item: -item[1])
    return order[:top_n] if top_n is not None else order

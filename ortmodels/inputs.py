"""A caller's texts for embedding, checked before any model work: a clear error per bad item."""

from __future__ import annotations

from .errors import EmbeddingInputError


def check_texts(texts: object) -> list[str]:
    """``texts`` as a list of valid Unicode str, or the error naming the item and the fix."""
    if isinstance(texts, str):
        raise TypeError("embed_documents expects a list of str, got a single str; wrap it in a list.")
    try:
        items = list(texts)  # type: ignore[call-overload]
    except TypeError:
        raise TypeError(
            f"embed_documents expects a list of str, got {type(texts).__name__}."
        ) from None
    for index, item in enumerate(items):
        if not isinstance(item, str):
            raise TypeError(
                f"embed_documents expects str items; item {index} is {type(item).__name__}: "
                f"{item!r:.60}"
            )
        try:
            item.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise EmbeddingInputError(
                f"Text {index} is not valid Unicode: {exc.object[exc.start:exc.end]!r} at character "
                f"{exc.start} is a lone surrogate. Decode the input with errors='replace' first."
            ) from None
    return items

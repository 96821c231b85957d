"""A caller's texts (to embed, to rerank), checked before any model work: a clear error per bad item."""

from __future__ import annotations

from .errors import EmbeddingInputError


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
                f"{exc.start} is a lone surrogate. Decode the input with errors='replace' first."
            ) from None
    return items

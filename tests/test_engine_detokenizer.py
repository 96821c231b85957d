"""The incremental detokenizer on the real sample tokenizer: same text as one decode of all ids."""

from __future__ import annotations

import pytest

from ortmodels.engine import TextAssembler
from tests.engine_samples import tokenizer

pytestmark = pytest.mark.slow

TEXTS = (
    "Café crème, naïve façade — déjà vu! Straße, Ærøskøbing, São Paulo.",
    "Emoji: 🎉🚀👩‍👩‍👧 and flags 🇫🇷🇮🇹, then 日本語のテキスト and 한국어 and Ελληνικά.",
    "Plain ASCII text with numbers 12345 and code: def f(x): return x ** 2\n\tindented.",
)


def _stream(ids: list[int], stop: tuple[str, ...] = ()) -> tuple[list[str], TextAssembler, list[int]]:
    sizes: list[int] = []
    tok = tokenizer()

    def decode(window: list[int]) -> str:
        sizes.append(len(window))
        return tok.decode(window, skip_special_tokens=True)

    assembler = TextAssembler(decode, stop)
    pieces = []
    for token in ids:
        pieces.append(assembler.add(token))
        if assembler.stopped:
            break
    pieces.append(assembler.flush())
    return [p for p in pieces if p], assembler, sizes


@pytest.mark.parametrize("text", TEXTS)
def test_pieces_join_to_one_decode_and_never_split_a_character(text: str) -> None:
    ids = tokenizer().encode(text, add_special_tokens=False).ids
    pieces, _, sizes = _stream(ids)
    assert "".join(pieces) == tokenizer().decode(ids, skip_special_tokens=True) == text
    assert all("\ufffd" not in p for p in pieces)
    assert max(sizes) <= 8  # a short window per token, not every id again


@pytest.mark.parametrize("text", TEXTS)
def test_output_cut_inside_a_character_ends_before_it(text: str) -> None:
    """``max_tokens`` reached after part of a character's byte tokens: the text ends with the
    last whole character (it ended with U+FFFD, shown by LangChain and every client)."""
    ids = tokenizer().encode(text, add_special_tokens=False).ids
    for end in range(1, len(ids) + 1):
        pieces, _, _ = _stream(ids[:end])
        joined = "".join(pieces)
        assert "\ufffd" not in joined and text.startswith(joined.rstrip()), (end, joined)
        whole = tokenizer().decode(ids[:end], skip_special_tokens=True)
        assert joined == whole or whole.endswith("\ufffd"), (end, joined, whole)  # only a half character goes


def test_long_output_decodes_short_windows() -> None:
    ids = tokenizer().encode(" ".join(TEXTS) * 10, add_special_tokens=False).ids
    pieces, _, sizes = _stream(ids)
    assert "".join(pieces) == tokenizer().decode(ids)
    assert len(ids) > 500 and max(sizes) <= 8


@pytest.mark.parametrize(("text", "stop"), [
    (TEXTS[0], "déjà vu"),
    (TEXTS[1], "🇫🇷🇮🇹"),
    (TEXTS[1], "日本語"),
    (TEXTS[2], "return x"),
])
def test_stop_strings_across_tokens(text: str, stop: str) -> None:
    ids = tokenizer().encode(text, add_special_tokens=False).ids
    pieces, assembler, _ = _stream(ids, (stop, "never in the text"))
    assert assembler.stopped and assembler.stopped_by == stop
    assert "".join(pieces) == text[: text.index(stop)]
    assert all(stop not in p for p in pieces)


def test_special_tokens_are_left_out() -> None:
    tok = tokenizer()
    ids = tok.encode("<|im_start|>assistant\nHello 👋<|im_end|>", add_special_tokens=False).ids
    pieces, _, _ = _stream(ids)
    assert "".join(pieces) == tok.decode(ids, skip_special_tokens=True) == "assistant\nHello 👋"

"""Opening a model's ``tokenizer.json`` with the `tokenizers` library alone."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import SURROGATE_CAUSES, ModelFileError

if TYPE_CHECKING:
    from tokenizers import Tokenizer


def load_tokenizer(path: Path, max_length: int | None = None, text: str | None = None) -> Tokenizer:
    """Open ``tokenizer.json`` unpadded (callers pad per batch), truncated to ``max_length`` if given.

    ``text``: the same tokenizer in another form (`merges_as_text`), parsed instead of the file
    (the file is read if it does not parse)."""
    from tokenizers import Tokenizer

    if not path.is_file():
        raise ModelFileError(path, "Missing tokenizer file", "Re-run 'ortmodels export' for this model.")
    tokenizer = None
    if text is not None:
        try:
            tokenizer = Tokenizer.from_str(text)
        except Exception:  # a damaged form: the file itself decides
            tokenizer = None
    try:
        if tokenizer is None:
            tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception on bad JSON
        raise ModelFileError(path, f"Corrupt tokenizer file ({exc})") from exc
    tokenizer.no_padding()
    if max_length is None:
        tokenizer.no_truncation()
    else:
        tokenizer.enable_truncation(max_length=max_length)
    return tokenizer


def merges_as_text(path: Path) -> str | None:
    """``tokenizer.json`` with a BPE model's merges written as ``"a b"`` strings instead of
    ``["a", "b"]`` pairs, which tokenizers parses about a third faster (40 against 58 ms for the
    sample's 48,900 merges); ``None`` where that form would not be the same tokenizer: not BPE,
    a merge part holding a space (the string form splits on it), or the two forms not
    serializing identically once parsed (`Tokenizer.to_str`)."""
    import json

    from tokenizers import Tokenizer

    try:
        source = path.read_text(encoding="utf-8")
        data = json.loads(source)
    except (OSError, ValueError):
        return None
    model = data.get("model") if isinstance(data, dict) else None
    merges = model.get("merges") if isinstance(model, dict) and model.get("type") == "BPE" else None
    if not merges or not all(isinstance(m, list) and len(m) == 2 and all(isinstance(p, str) and p and " " not in p
                                                                         for p in m) for m in merges):
        return None
    model["merges"] = [f"{a} {b}" for a, b in merges]
    text = json.dumps(data, ensure_ascii=False)
    try:
        same = Tokenizer.from_str(text).to_str() == Tokenizer.from_str(source).to_str()
    except Exception:  # tokenizers raises a bare Exception on what it cannot read
        return None
    return text if same else None


#: WordPiece maps a word of up to this many characters to tokens (longer ones to one unknown token).
_WORDPIECE_WORD = 100


def max_token_chars(tokenizer: Tokenizer) -> int:
    """The most characters of input one token can stand for (from the vocabulary).

    ``len(text) > tokens * max_token_chars`` proves a text is longer than ``tokens`` tokens
    without tokenizing it, which is how huge inputs are refused or cut before the tokenizer
    spends seconds and gigabytes on them.
    """
    return vocabulary_bounds(tokenizer)[1]


def vocabulary_bounds(tokenizer: Tokenizer) -> tuple[int, int]:
    """`highest_id` and `max_token_chars` from one read of the vocabulary (30 ms for 49k tokens)."""
    vocabulary = tokenizer.get_vocab(with_added_tokens=True)
    longest = max(map(len, vocabulary), default=1)
    if type(tokenizer.model).__name__ == "WordPiece":
        longest = max(longest, _WORDPIECE_WORD)
    return max(vocabulary.values(), default=0), max(longest, 1)


def check_unicode(text: str, what: str) -> None:
    """Refuse text that cannot be encoded as UTF-8 (lone surrogates such as ``"\\ud800"``)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{what} is not valid Unicode: {exc.object[exc.start:exc.end]!r} at character {exc.start} "
            f"is a lone surrogate, not a character ({SURROGATE_CAUSES}). Send UTF-8 text."
        ) from None


def highest_id(tokenizer: Tokenizer) -> int:
    """The largest token id the tokenizer can produce (added tokens may sit past the vocabulary)."""
    return vocabulary_bounds(tokenizer)[0]


def check_vocabulary(folder: Path, tokenizer: Tokenizer, graph_vocab: int | None,
                     special: dict[str, int | None], size: int | None = None) -> None:
    """Refuse at load a tokenizer whose ids, or a special token id, would index past the graph's
    vocabulary (else ONNX Runtime fails with a raw Gather error at the first call). ``size``:
    the tokenizer's largest id + 1 when the caller has it (reading the vocabulary takes 30 ms)."""
    size = highest_id(tokenizer) + 1 if size is None else size
    if graph_vocab is not None and size > graph_vocab:
        raise ModelFileError(
            folder / "tokenizer.json",
            f"The tokenizer has token ids up to {size - 1} but the graph's vocabulary has {graph_vocab}",
            "The tokenizer and model.onnx come from different checkpoints: re-run 'ortmodels export'.",
        )
    limit = max(size, graph_vocab or 0)
    for name, value in special.items():
        if value is not None and not 0 <= value < limit:
            raise ModelFileError(
                folder.parent / "manifest.json",
                f"The manifest's {name} {value} is outside the vocabulary of {limit} tokens",
                "The manifest was changed or damaged: re-run 'ortmodels export'.",
            )


_GGUF_DECODER_STEPS = ["ByteFallback", "Fuse", "Replace", "ByteLevel"]


def repaired_tokenizer_json(data: dict[str, Any]) -> dict[str, Any] | None:
    """A copy of ``tokenizer.json`` with the plain ByteLevel decoder, if it has the GGUF quirk.

    transformers' GGUF converter writes a byte-level BPE tokenizer whose decoder is
    ``Sequence[ByteFallback, Fuse, Replace "▁", ByteLevel]``; the text decodes the same, but
    tools that read the vocabulary through the decoder (llguidance, onnxruntime-genai)
    misread byte-level tokens (``Ġ"`` as the bytes ``Ä…``). ``None`` when no repair is needed.
    """
    decoder = data.get("decoder") or {}
    pre = data.get("pre_tokenizer") or {}
    steps = [d.get("type") for d in decoder.get("decoders", [])] if decoder.get("type") == "Sequence" else []
    if steps != _GGUF_DECODER_STEPS or pre.get("type") != "ByteLevel":
        return None
    byte_level = dict(decoder["decoders"][-1])
    return {**data, "decoder": byte_level}


#: A token as text, or as its bytes where they are part of a UTF-8 character (`token_piece`).
Piece = str | tuple[int, ...]


def token_piece(tokenizer: Tokenizer, token: int) -> Piece:
    """One token's text; its bytes where it holds part of a UTF-8 character (byte-level BPE),
    which as text is only U+FFFD (``/tokenize``'s pieces, logprobs' ``bytes``)."""
    text = str(tokenizer.decode([token], skip_special_tokens=False))
    if "\ufffd" not in text:
        return text
    raw = _byte_level(tokenizer.id_to_token(token) or "")
    if raw is None:
        return text
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return tuple(raw)
    return text


def _byte_level(token: str) -> bytes | None:
    """A byte-level BPE token's bytes (GPT-2's mapping of bytes to printable characters), or
    ``None`` for a token of another kind of vocabulary."""
    table = _UNICODE_TO_BYTE
    if not token or any(ch not in table for ch in token):
        return None
    return bytes(table[ch] for ch in token)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table: printable bytes stand for themselves, the others for characters from U+0100."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + extra)
            extra += 1
    return table


_UNICODE_TO_BYTE = {char: byte for byte, char in _bytes_to_unicode().items()}

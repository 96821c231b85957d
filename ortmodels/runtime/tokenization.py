"""Opening a model's ``tokenizer.json`` with the `tokenizers` library alone."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ModelFileError

if TYPE_CHECKING:
    from tokenizers import Tokenizer


def load_tokenizer(path: Path, max_length: int | None = None) -> Tokenizer:
    """Open ``tokenizer.json`` unpadded (callers pad per batch), truncated to ``max_length`` if given."""
    from tokenizers import Tokenizer

    if not path.is_file():
        raise ModelFileError(path, "Missing tokenizer file", "Re-run 'ortmodels export' for this model.")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception on bad JSON
        raise ModelFileError(path, f"Corrupt tokenizer file ({exc})") from exc
    tokenizer.no_padding()
    if max_length is None:
        tokenizer.no_truncation()
    else:
        tokenizer.enable_truncation(max_length=max_length)
    return tokenizer

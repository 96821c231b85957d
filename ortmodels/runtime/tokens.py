"""A chat model's tokens as a client sees them: text to ids and back, and the ids of a chat
prompt exactly as the service builds it (llama-server's ``/tokenize``, ``/detokenize`` and
``/apply-template``; vLLM's ``/tokenize`` with ``messages``), so a client can fit its text to
the window before it asks.

Text is data here as in a prompt: tokenizing it never makes a control token from a special
token's text (`PromptTokenizer.encode_text`); ``add_special`` adds only what the tokenizer's
own post-processor adds (the model's BOS, where it has one). No LangChain.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..engine.tokenizer import Piece, check_unicode, highest_id, token_piece
from ..errors import ChatInputError
from .options import ChatOptions

if TYPE_CHECKING:  # the type only: a Ray ingress unpickling `Tokens` opens no engine
    from .service import ChatService


@dataclass(frozen=True)
class Tokens:
    """Token ids, with their pieces when asked for, the model's context length and (for a chat)
    the rendered prompt they are the tokens of."""

    ids: tuple[int, ...]
    context_length: int
    pieces: tuple[Piece, ...] | None = None
    prompt: str | None = None


def tokenize(service: ChatService, text: str, add_special: bool = False, with_pieces: bool = False) -> Tokens:
    """``text``'s ids as text (a special token's text stays text); ``add_special``: with the
    tokens the tokenizer adds around an input (the model's BOS, if it has one)."""
    _check_text(service, text)
    ids = service.prompt_tokens.encode_text(text, add_special=add_special)
    return _tokens(service, ids, with_pieces)


def chat_tokens(service: ChatService, messages: list[dict[str, Any]], options: ChatOptions | None = None,
                with_pieces: bool = False) -> Tokens:
    """The prompt a chat call with ``messages`` and ``options`` runs: its ids as the service builds
    them (the count ``usage.prompt_tokens`` reports: the whole prompt, or with ``truncate_prompt``
    what is left of it; tools' prompt and template switches included) and the text those ids
    spell (special tokens written out)."""
    ids = service.prompt_ids(messages, options or ChatOptions())
    prompt = str(service.tokenizer.decode(ids, skip_special_tokens=False))
    return _tokens(service, ids, with_pieces, prompt)


def detokenize(service: ChatService, ids: list[int]) -> str:
    """The text of ``ids`` (special tokens written out); an id outside the vocabulary is refused."""
    top = _highest_id(service)
    for index, token in enumerate(ids):
        if not 0 <= token <= top:
            raise ChatInputError(f"tokens[{index}] is {token}: this model's token ids are 0 to {top}.")
    return str(service.tokenizer.decode(list(ids), skip_special_tokens=False))


def _highest_id(service: ChatService) -> int:
    """The tokenizer's largest id, read once per loaded service (a read of the vocabulary: 30 ms)."""
    top = _TOP_IDS.get(service)
    if top is None:
        top = _TOP_IDS[service] = highest_id(service.tokenizer)
    return top


_TOP_IDS: weakref.WeakKeyDictionary[ChatService, int] = weakref.WeakKeyDictionary()


def _check_text(service: ChatService, text: str) -> None:
    try:
        check_unicode(text, "The content")
    except ValueError as exc:
        raise ChatInputError(str(exc)) from None
    if len(text) > service.prompt_chars:  # the service's one character bound: past it, no prompt fits
        raise ChatInputError(
            f"The content has {len(text):,} characters; the context of {service.spec.context_length} tokens "
            f"holds at most {service.prompt_chars:,} with this tokenizer, so no more is tokenized. Send it in parts.")


def _tokens(service: ChatService, ids: list[int], with_pieces: bool, prompt: str | None = None) -> Tokens:
    pieces = tuple(token_piece(service.tokenizer, token) for token in ids) if with_pieces else None
    return Tokens(tuple(ids), service.spec.context_length, pieces, prompt)

"""Non-ASCII tool arguments come back exactly, through the grammar, the detokenizer and the
tool-call parser, on the real sample and whatever the model would choose.

LangChain's ``test_unicode_tool_call_integration`` fails on the 135M sample because of what
it writes (see ``KNOWN_MODEL_FAILURES``), so it cannot tell an escaping or detokenizing bug
from the model's limit. Here every argument's schema admits exactly one value (``const``, or
an ``enum`` of one), so the grammar decides every character and the model only the
whitespace: the arguments must equal those values, byte for byte. The sample's byte-level
BPE splits ``東京`` and the emoji into tokens that are not UTF-8 on their own, and the quote
needs JSON escapes.
"""

from __future__ import annotations

from typing import Any

import pytest
from tokenizers import Tokenizer

from ortmodels.runtime.chat import OnnxChatModel

from .conftest import CHAT_SAMPLE, SAMPLES_DIR

pytestmark = pytest.mark.slow

VALUES = {
    "city": "Zürich",
    "capital": "東京",
    "mood": "🙂👍🏽",  # a skin-tone modifier: two code points, eight byte tokens
    "quote": 'Ünï "quoted" \\ back\\slash',
}
RECORD = {"type": "function", "function": {
    "name": "record_places",
    "description": "Record a city, a capital, a mood and a quote.",
    "parameters": {
        "type": "object",
        "properties": {
            "city": {"type": "string", "const": VALUES["city"]},
            "capital": {"type": "string", "enum": [VALUES["capital"]]},
            "mood": {"type": "string", "const": VALUES["mood"]},
            "quote": {"type": "string", "const": VALUES["quote"]},
        },
        "required": list(VALUES),
        "additionalProperties": False,
    },
}}
PROMPT = "Record the places."


@pytest.fixture(scope="module", params=["int8", "int4"])
def forced(request: pytest.FixtureRequest) -> Any:
    """The sample, forced to call ``record_places``; greedy, with room for the whole call."""
    chat = OnnxChatModel(model_path=str(SAMPLES_DIR / CHAT_SAMPLE), dtype=request.param, device="cpu",
                         max_tokens=200, temperature=0)
    return chat.load().bind_tools([RECORD], tool_choice="record_places")


def test_the_values_split_into_tokens_that_are_not_text_on_their_own() -> None:
    """What makes the test below a test of the detokenizer: a token alone decodes to U+FFFD."""
    tokenizer = Tokenizer.from_file(str(SAMPLES_DIR / CHAT_SAMPLE / "tokenizer.json"))
    for key in ("capital", "mood"):
        ids = tokenizer.encode(VALUES[key], add_special_tokens=False).ids
        assert len(ids) > len(VALUES[key]) and "\ufffd" in "".join(tokenizer.decode([i]) for i in ids), key


def test_non_ascii_arguments_come_back_exactly(forced: Any) -> None:
    reply = forced.invoke(PROMPT)
    assert reply.response_metadata["finish_reason"] == "tool_calls", reply
    assert not reply.invalid_tool_calls, reply.invalid_tool_calls
    (call,) = reply.tool_calls
    assert call["name"] == "record_places"
    assert call["args"] == VALUES


def test_non_ascii_arguments_come_back_exactly_when_streamed(forced: Any) -> None:
    chunks = list(forced.stream(PROMPT))
    message = chunks[0]
    for chunk in chunks[1:]:
        message += chunk
    assert not message.invalid_tool_calls, message.invalid_tool_calls
    (call,) = message.tool_calls
    assert call["name"] == "record_places"
    assert call["args"] == VALUES

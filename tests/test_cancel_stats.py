"""A call its caller gave up on counts as cancelled, not as an error, in the stats and on /metrics.

A cancelled task (a client that left a non-streamed answer) and a stream closed early (a client
that left a stream) are the same event for the model: neither inflates the error rate.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks import AsyncCallbackHandler

from ortmodels.monitoring import prometheus, stats
from ortmodels.runtime.chat import OnnxChatModel

from .conftest import CHAT_SAMPLE

pytestmark = pytest.mark.slow

WAIT_S = 60.0
LONG = "Write a long story about a lighthouse keeper."


@pytest.fixture(scope="module")
def chat(samples_dir: Path) -> Iterator[OnnxChatModel]:
    model = OnnxChatModel(model_path=samples_dir / CHAT_SAMPLE, dtype="int4", max_tokens=512).load()
    yield model
    model.unload(timeout=WAIT_S)


def _counts() -> tuple[int, int, int]:
    """(calls, errors, cancelled) of the chat sample in the stats."""
    rows = [r for r in stats.registry().snapshot() if r["model"] == CHAT_SAMPLE]
    assert len(rows) == 1, rows
    return rows[0]["calls"], rows[0]["errors"], rows[0]["cancelled"]


def _exposed(name: str) -> float:
    text = prometheus.exposition()
    found = re.search(rf'^ortmodels_{name}_total{{[^}}]*model="{CHAT_SAMPLE}"[^}}]*}} (\S+)$', text, re.MULTILINE)
    assert found, f"ortmodels_{name}_total is not exposed:\n{text}"
    return float(found.group(1))


class _HoldAtFirstToken(AsyncCallbackHandler):
    """Tells when the first token came, then holds the generation there: the cancel lands mid-stream."""

    def __init__(self) -> None:
        self.first = asyncio.Event()

    async def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        self.first.set()
        await asyncio.Event().wait()  # until the task is cancelled


def test_a_cancelled_ainvoke_counts_as_cancelled_not_as_an_error(chat: OnnxChatModel) -> None:
    async def main() -> None:
        hold = _HoldAtFirstToken()
        call = asyncio.create_task(chat.ainvoke(LONG, config={"callbacks": [hold]}))
        await asyncio.wait_for(hold.first.wait(), WAIT_S)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call

    asyncio.run(main())
    assert chat.active_calls == 0
    assert _counts() == (1, 0, 1)
    assert (_exposed("errors"), _exposed("cancelled")) == (0, 1)


def test_a_stream_closed_early_counts_as_cancelled(chat: OnnxChatModel) -> None:
    stream = chat.stream(LONG)
    assert next(stream) is not None
    stream.close()

    async def main() -> None:
        astream = chat.astream(LONG)
        await anext(astream)
        await astream.aclose()

    asyncio.run(main())
    assert chat.active_calls == 0
    assert _counts() == (2, 0, 2)
    assert (_exposed("errors"), _exposed("cancelled")) == (0, 2)


def test_a_failed_call_is_still_an_error(chat: OnnxChatModel) -> None:
    with pytest.raises(Exception, match="temperature"):
        chat.invoke("hi", temperature=-1)
    assert _counts() == (1, 1, 0)
    assert (_exposed("errors"), _exposed("cancelled")) == (1, 0)

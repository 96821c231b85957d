"""The page at ``/`` of `ortmodels serve`, driven in headless Chromium (Debian's ``chromium``
package) by Playwright: a real server process on the chat sample, a real browser.

One server and one browser for the module. The page's own code does everything (models, a
streamed answer, Stop, the figures); the test only types, clicks and reads the DOM, and waits
on the page's state (``data-state`` of an answer), never on a clock. Two tests rewrite the
page's request on its way out (Playwright's routing) to add a ``response_format``, so that
the answer is forced: one that cannot end before Stop is pressed, one whose text is HTML.
A screenshot is kept in ``$ORTMODELS_TEST_ARTIFACTS`` (default ``tests/.artifacts/``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
sync_api = pytest.importorskip("playwright.sync_api",
                               reason="Playwright is not installed: pip install playwright (in the dev extra)")

from .conftest import CHAT_SAMPLE, ROOT
from .servers import module_server
from .waiting import wait_until

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("ORTMODELS_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
ANSWER_TIMEOUT_MS = 120_000  # a short answer on 2 shared cores, with the variant's first load
PAYLOAD = "<img src=x onerror=window.__pwned=1>"


@dataclass
class Watched:
    """A page and what it did: console errors, every request, the failed ones, chat bodies sent."""

    page: Any
    console_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    chat_bodies: list[dict[str, Any]] = field(default_factory=list)


server = module_server("serve-page", "--models", CHAT_SAMPLE)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    chromium = shutil.which(CHROMIUM)
    if chromium is None:
        pytest.skip(f"No Chromium at {CHROMIUM}: apt-get install chromium (or set ORTMODELS_CHROMIUM)")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=chromium, headless=True,
            args=ARGS, viewport={"width": 1200, "height": 800})
        yield context
        context.close()


@pytest.fixture
def watched(browser: Any, server: Any) -> Iterator[Watched]:
    page = browser.new_page()
    page.set_default_timeout(ANSWER_TIMEOUT_MS)
    seen = Watched(page)
    page.on("console", lambda m: seen.console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: seen.console_errors.append(str(e)))
    page.on("request", lambda r: seen.requests.append(r.url))
    page.on("requestfailed", lambda r: seen.failed.append(f"{r.url}: {r.failure}"))
    page.on("request", lambda r: seen.chat_bodies.append(json.loads(r.post_data))
            if r.url.endswith("/v1/chat/completions") else None)
    response = page.goto(f"{server.url}/")
    assert response is not None and response.status == 200
    assert response.headers["content-security-policy"].startswith("default-src 'self'")
    page.wait_for_selector(f'#models li[data-model="{CHAT_SAMPLE}"]')
    yield seen
    page.close()


def _force(page: Any, response_format: dict[str, Any]) -> None:
    """Add ``response_format`` to the page's chat requests on their way to the server."""
    def rewrite(route: Any) -> None:
        body = json.loads(route.request.post_data)
        route.continue_(post_data=json.dumps({**body, "response_format": response_format}))

    page.route("**/v1/chat/completions", rewrite)


def _ask(page: Any, question: str, max_tokens: int) -> Any:
    """Type ``question`` and press Enter; the new answer's element (added as the key is handled)."""
    before = page.locator(".msg.assistant").count()
    page.fill("#max-tokens", str(max_tokens))
    page.fill("#prompt", question)
    page.press("#prompt", "Enter")
    assert page.locator(".msg.assistant").count() == before + 1
    return page.locator(".msg.assistant").last.element_handle()


def _wait_state(page: Any, answer: Any, *states: str) -> str:
    page.wait_for_function("([el, states]) => states.includes(el.dataset.state)",
                           arg=[answer, list(states)], timeout=ANSWER_TIMEOUT_MS)
    return answer.get_attribute("data-state")


def _metric(server: Any, name: str) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE))


def _artifacts() -> Path:
    folder = Path(os.environ.get("ORTMODELS_TEST_ARTIFACTS", ROOT / "tests" / ".artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_the_page_lists_the_models_and_streams_a_conversation(watched: Watched, server: Any) -> None:
    page = watched.page
    served = httpx.get(f"{server.v1}/models", timeout=30).json()["data"]
    variants = sorted(m["id"].split(":")[1] for m in served if m["id"].startswith(f"{CHAT_SAMPLE}:"))
    assert variants, "the sample has no exported variant"
    shown = page.locator(f'#models li[data-model="{CHAT_SAMPLE}"] .tag')
    assert sorted(shown.all_text_contents()) == variants
    assert sorted(page.locator("#variant option").all_text_contents()) == sorted(["default", *variants])
    page.select_option("#model", CHAT_SAMPLE)
    page.select_option("#variant", variants[-1])
    page.fill("#system", "You are a geography teacher. Answer in one short sentence.")

    first = _ask(page, "What is the capital of France?", 24)
    assert _wait_state(page, first, "done", "error", "stopped") == "done", first.inner_text()
    text = first.query_selector(".text").text_content()
    assert text.strip() and int(first.get_attribute("data-updates")) > 1  # streamed: several updates
    assert first.get_attribute("data-finish") in ("stop", "length")

    second = _ask(page, "And of Italy?", 24)  # the page sends the whole conversation again
    assert _wait_state(page, second, "done", "error", "stopped") == "done", second.inner_text()
    assert [body["model"] for body in watched.chat_bodies] == [f"{CHAT_SAMPLE}:{variants[-1]}"] * 2
    assert [(m["role"], m["content"]) for m in watched.chat_bodies[1]["messages"]] == [
        ("system", "You are a geography teacher. Answer in one short sentence."),
        ("user", "What is the capital of France?"), ("assistant", text), ("user", "And of Italy?")]

    # the figures are read from /metrics after each answer and every 3 s; a function, not a bare
    # expression: Playwright evaluates a bare expression with eval, which the page's CSP forbids
    page.wait_for_function(
        "() => Number(document.querySelector('[data-figure=requests]').textContent) >= 2"
        " && Number(document.querySelector('[data-figure=tokens]').textContent) > 0", timeout=30_000)
    assert page.text_content("[data-figure=memory]").endswith("MiB")
    assert float(page.text_content("[data-figure=memory]").split()[0]) > 0
    assert " of " in page.text_content("[data-figure=kv-cache]")
    assert float(page.text_content("[data-figure=tokens-per-second]")) > 0
    page.screenshot(path=str(_artifacts() / "page.png"), full_page=True)

    assert watched.console_errors == []
    assert watched.failed == []
    assert [url for url in watched.requests if not url.startswith(f"{server.url}/")] == []


def test_stop_ends_a_long_answer_and_the_server_cancels_it(watched: Watched, server: Any) -> None:
    page = watched.page
    # an array of at least 4000 numbers: the answer cannot end on its own before Stop
    _force(page, {"type": "json_schema", "json_schema": {
        "name": "numbers", "schema": {"type": "array", "items": {"type": "integer"}, "minItems": 4000}}})
    cancelled = _metric(server, "ortmodels_cancelled_total")
    answer = _ask(page, "Numbers.", 4000)
    page.wait_for_function("el => Number(el.dataset.updates) >= 3", arg=answer)
    assert _metric(server, "ortmodels_engine_running_requests") == 1
    page.click("#stop")
    assert _wait_state(page, answer, "stopped", "done", "error") == "stopped"
    # the server saw the client leave: the request is cancelled and its row freed
    wait_until(lambda: _metric(server, "ortmodels_engine_running_requests") == 0, 10, "the row freed", 0.05)
    wait_until(lambda: _metric(server, "ortmodels_server_requests_in_flight") == 0, 10, "released", 0.05)
    wait_until(lambda: _metric(server, "ortmodels_cancelled_total") > cancelled, 10, "counted as cancelled", 0.05)
    updates = answer.get_attribute("data-updates")
    assert page.is_enabled("#send") and page.is_disabled("#stop")
    assert answer.get_attribute("data-updates") == updates  # the reader loop has ended
    assert watched.console_errors == []
    assert all("/v1/chat/completions" in f for f in watched.failed), watched.failed  # only the aborted stream


def test_text_from_a_model_or_the_server_stays_text(watched: Watched, server: Any) -> None:
    page = watched.page
    _force(page, {"type": "json_schema", "json_schema": {"name": "html", "schema": {"type": "string",
                                                                                   "enum": [PAYLOAD]}}})
    page.fill("#system", PAYLOAD)
    answer = _ask(page, PAYLOAD, 40)
    assert _wait_state(page, answer, "done", "error", "stopped") == "done", answer.inner_text()
    assert answer.query_selector(".text").text_content() == json.dumps(PAYLOAD)  # the model's HTML, as text
    assert page.locator(".msg.user .text").last.text_content() == PAYLOAD

    # the server's 404 repeats the model id it was sent. The id is set on the request, not added
    # to the page's select: the page reloads its model list after each answer, which would drop it
    page.unroute("**/v1/chat/completions")
    page.route("**/v1/chat/completions", lambda route: route.continue_(
        post_data=json.dumps({**json.loads(route.request.post_data), "model": PAYLOAD})))
    failed = _ask(page, "Hello?", 8)
    assert _wait_state(page, failed, "error", "done", "stopped") == "error"
    assert PAYLOAD in failed.query_selector(".error").text_content()

    assert page.locator("#log img").count() == 0
    assert page.evaluate("window.__pwned") is None
    assert [e for e in watched.console_errors if "404" not in e] == []  # the 404 itself is logged

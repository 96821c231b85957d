"""Every route of the server, each a few lines: parse, admit, hand to its serving module.

Bodies are parsed here rather than by FastAPI's signature binding so that every way a body
can be wrong (not JSON, not an object, too deep, a 5,000-digit number, a wrong type) comes
out as the same OpenAI 400, with the field it is about.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel

from ..engine.json_text import NotJsonNumber, loads
from ..errors import ContextLengthError
from ..runtime.events import ChatEvent
from . import chat, completions, embeddings, grammar, messages, rerank, responses, tokenize
from .admission import RETRY_AFTER_S, Slot
from .anthropic import CountTokensRequest, MessagesRequest
from .errors import ApiError, bad_request, from_exception, validated
from .metrics import metrics_text
from .models import ModelId
from .protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    ModelCard,
    ModelList,
    unsupported_field,
)
from .protocol_responses import ResponsesRequest
from .protocols import ChatModel
from .sse import error_events, respond
from .state import ServerState
from .webpage import page_file

MAX_BODY_BYTES = 32 << 20

Body = TypeVar("Body", bound=BaseModel)
TokenBody = TypeVar("TokenBody", tokenize.TokenizeRequest, tokenize.DetokenizeRequest, tokenize.ApplyTemplateRequest)


def _state(request: Request) -> ServerState:
    return request.app.state.server  # type: ignore[no-any-return]


def _check_key(request: Request) -> None:
    """With an API key set, ``Authorization: Bearer <key>`` is required (compared in constant time)."""
    key = _state(request).api_key
    if key is None:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip().encode(), key.encode()):
        raise ApiError(401, "Incorrect or missing API key: send 'Authorization: Bearer <key>' with the key the "
                       "server was started with (--api-key).", code="invalid_api_key",
                       headers={"WWW-Authenticate": "Bearer"})


def _check_anthropic_key(request: Request) -> None:
    """Anthropic's clients send the key as ``x-api-key``; ``Authorization: Bearer`` is taken too."""
    key, given = _state(request).api_key, request.headers.get("x-api-key")
    if key is None or (given is None and "authorization" in request.headers):
        return _check_key(request)
    if given is None or not secrets.compare_digest(given.strip().encode(), key.encode()):
        raise ApiError(401, "Incorrect or missing API key: send 'x-api-key: <key>' (or 'Authorization: Bearer "
                       "<key>') with the key the server was started with (--api-key).", code="invalid_api_key")
    return None


router = APIRouter()
v1 = APIRouter(prefix="/v1", dependencies=[Depends(_check_key)])


def documented(model: type[BaseModel]) -> dict[str, Any]:
    """The body's schema, its fields' descriptions included, for ``/openapi.json`` (bodies are
    parsed by `_parse`, not by FastAPI, so it does not see them)."""
    schema = model.model_json_schema(by_alias=True)
    definitions = schema.pop("$defs", {})

    def inline(node: Any, depth: int = 0) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/") and depth < 8:
                return inline(definitions[ref.removeprefix("#/$defs/")], depth + 1)
            return {key: inline(value, depth) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(item, depth) for item in node]
        return node

    return {"requestBody": {"required": True, "content": {"application/json": {"schema": inline(schema)}}}}


async def _read_body(request: Request) -> bytes:
    """The body, read only up to `MAX_BODY_BYTES`: a huge upload is refused, never buffered whole."""
    def too_large() -> ApiError:
        return ApiError(413, f"The body is larger than {MAX_BODY_BYTES:,} bytes, the most this server reads.",
                        code="body_too_large")

    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_large()
    parts, size = [], 0
    async for part in request.stream():
        size += len(part)
        if size > MAX_BODY_BYTES:
            raise too_large()
        parts.append(part)
    return b"".join(parts)


def _json_kind(value: object) -> str:
    """What JSON calls a parsed value's type (``null``, ``an array``), not Python's name for it."""
    kinds = ((type(None), "null"), (bool, "a boolean"), (int, "a number"), (float, "a number"), (str, "a string"),
             (list, "an array"))
    return next(name for kind, name in kinds if isinstance(value, kind))


async def _parse(request: Request, model: type[Body]) -> Body:
    raw = await _read_body(request)
    try:
        data = loads(raw)
    except NotJsonNumber as exc:
        raise bad_request(f"We could not parse the JSON body of your request: {exc}.", code="invalid_json") from None
    except UnicodeDecodeError:  # a ValueError too: said apart, since the fix differs
        raise bad_request("We could not parse the JSON body of your request: it is not UTF-8 text; send it "
                          "encoded as UTF-8.", code="invalid_json") from None
    except (ValueError, RecursionError):  # bad JSON, a number past int's digit limit, too deep
        raise bad_request("We could not parse the JSON body of your request: it is not valid JSON.",
                          code="invalid_json") from None
    if not isinstance(data, dict):
        raise bad_request(f"The body must be a JSON object, not {_json_kind(data)}.", code="invalid_json")
    parsed = validated(model, data)
    field = unsupported_field(parsed)
    if field is not None:
        value = getattr(parsed, field)
        raise bad_request(f"{field}={value!r:.60} is not supported by this server; leave it out"
                          f"{' (n must be 1)' if field == 'n' else ''}.", field, "unsupported_parameter")
    return parsed


def _ready(state: ServerState) -> None:
    if state.status == "loading":
        raise ApiError(503, "The server is loading its models; retry in a moment.", type="server_error",
                       code="loading", headers={"Retry-After": str(RETRY_AFTER_S)})


async def _client_left(request: Request) -> None:
    """Returns when the client disconnects (the body is already read, so only that can arrive)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _guarded(request: Request, slot: Slot, work: Coroutine[Any, Any, dict[str, Any]]) -> Response:
    """Run a non-streamed answer; a client that leaves first cancels it (and its engine request),
    and so does the shutdown timeout (then the client gets a 503)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_client_left(request))
    try:
        try:
            await _state(request).shutdown.bounded(asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED))
        except ApiError:  # cut at the shutdown timeout: the answer is cancelled before the 503 is sent
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            raise
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return Response(status_code=499)  # nobody reads it; nginx's "client closed request"
        return JSONResponse(task.result())
    finally:
        watcher.cancel()
        if not task.done():  # this handler itself was cancelled
            task.cancel()
        slot.release()


async def _prime(request: Request, slot: Slot, events: AsyncIterator[str],
                 errors: Callable[[BaseException], list[str]] = error_events) -> Response:
    return await respond(events, slot, _state(request).shutdown, errors)


# -- health and metrics -----------------------------------------------------------------------

@router.api_route("/health", methods=["GET", "HEAD"])  # HEAD: what load balancers probe with
async def health(request: Request) -> JSONResponse:
    """503 while the models load (or if one failed), 200 once they are ready (as llama.cpp)."""
    state = _state(request)
    body: dict[str, Any] = {"status": state.status, "models": state.preload}
    if state.error:
        body["error"] = state.error
    return JSONResponse(body, status_code=200 if state.status == "ok" else 503)


@router.get("/metrics")
async def metrics(request: Request) -> PlainTextResponse:
    text = await asyncio.to_thread(metrics_text, _state(request))
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")


# -- the OpenAI API ---------------------------------------------------------------------------

@v1.get("/models")
async def list_models(request: Request) -> dict[str, Any]:
    catalog = _state(request).catalog
    ids = await asyncio.to_thread(catalog.ids, True)
    loaded = await asyncio.to_thread(catalog.loaded_ids)
    return ModelList(data=[_card(m, loaded) for m in ids]).model_dump()


@v1.get("/models/{model_id}")
async def retrieve_model(request: Request, model_id: str) -> dict[str, Any]:
    """One model's card (the ``openai`` client's ``models.retrieve``); an unknown id is a 404."""
    catalog = _state(request).catalog
    ids = await asyncio.to_thread(catalog.ids, True)
    found = next((m for m in ids if m.id == model_id), None)
    if found is None:
        raise ApiError(404, f"The model {model_id!r:.80} does not exist; models here: "
                            f"{', '.join(m.id for m in ids if m.exported) or 'none'}.",
                       param="model", code="model_not_found")
    return _card(found, await asyncio.to_thread(catalog.loaded_ids)).model_dump()


def _card(model: ModelId, loaded: set[str]) -> ModelCard:
    return ModelCard(id=model.id, created=0, kind=model.kind, exported=model.exported, loaded=model.id in loaded)


@v1.post("/chat/completions", openapi_extra=documented(ChatCompletionRequest))
async def chat_completions(request: Request) -> Response:
    state = _state(request)
    body = await _parse(request, ChatCompletionRequest)
    entry = state.catalog.resolve(body.model, "chat")
    messages = chat.to_messages(body.messages)
    options = chat.chat_options(body)

    def open_stream(model: ChatModel) -> AsyncIterator[ChatEvent]:
        return grammar.named(model.achat_events(messages, options), body)

    return await _answer(request, state, entry, open_stream, chat.ChatAnswer(body.model or entry.id), body)


@v1.post("/completions", openapi_extra=documented(CompletionRequest))
async def text_completions(request: Request) -> Response:
    state = _state(request)
    body = await _parse(request, CompletionRequest)
    entry = state.catalog.resolve(body.model, "chat")
    prompt = completions.prompt_of(body)
    options = completions.text_options(body)

    def open_stream(model: ChatModel) -> AsyncIterator[ChatEvent]:
        return grammar.named(model.atext_events(prompt, options), body)

    return await _answer(request, state, entry, open_stream, completions.TextAnswer(body.model or entry.id), body)


async def _answer(request: Request, state: ServerState, entry: ModelId,
                  open_stream: Callable[[ChatModel], AsyncIterator[ChatEvent]],
                  answer: chat.ChatAnswer | completions.TextAnswer | responses.ResponseAnswer | messages.MessageAnswer,
                  body: Any) -> Response:
    """Admit the request, open the model's stream, and answer it streamed (SSE) or whole;
    the admission slot is released however it ends."""
    _ready(state)
    slot = state.queue.enter()
    try:
        chunks = open_stream(await state.catalog.chat(entry))
    except BaseException:
        slot.release()
        raise
    try:
        if body.stream:
            stream_options = getattr(body, "stream_options", None)  # OpenAI's; Anthropic's stream always ends with usage
            include_usage = bool(stream_options and stream_options.include_usage)
            return await _prime(request, slot, answer.stream(chunks, include_usage), answer.error_events)
        return await _guarded(request, slot, answer.complete(chunks))
    except ContextLengthError as exc:  # found as the prompt is prepared: its options as this API names them
        raise from_exception(exc, answer.spelling) from None


@v1.post("/embeddings")
async def create_embeddings(request: Request) -> Response:
    state = _state(request)
    body = await _parse(request, EmbeddingRequest)
    entry = state.catalog.resolve(body.model, "embedding")
    embeddings.texts_of(body)
    return await _whole(request, state, state.catalog.embedding(entry),
                        lambda model: embeddings.embed(model, body.model or entry.id, body))


@v1.post("/rerank")
@router.post("/rerank", dependencies=[Depends(_check_key)])  # where llama-server and TEI serve it
async def create_rerank(request: Request) -> Response:
    state = _state(request)
    body = await _parse(request, rerank.RerankRequest)
    entry = state.catalog.resolve(body.model, "reranker")
    rerank.documents_of(body)
    return await _whole(request, state, state.catalog.reranker(entry),
                        lambda model: rerank.rerank(model, body.model or entry.id, body))


async def _whole(request: Request, state: ServerState, model_of: Coroutine[Any, Any, Any],
                 work: Callable[[Any], Coroutine[Any, Any, dict[str, Any]]]) -> Response:
    """Admit a non-streamed request, get its model (``model_of``: the catalog's getter, awaited
    only once admitted), and answer with ``work(model)``."""
    try:
        _ready(state)
        slot = state.queue.enter()
    except BaseException:
        model_of.close()  # never awaited: closed so no "never awaited" warning
        raise
    try:
        model = await model_of
    except BaseException:
        slot.release()
        raise
    return await _guarded(request, slot, work(model))


@v1.post("/responses")
async def create_response(request: Request) -> Response:
    state = _state(request)
    body = await _parse(request, ResponsesRequest)
    entry = state.catalog.resolve(body.model, "chat")
    turn = responses.prepare(body, state.responses)

    def open_stream(model: ChatModel) -> AsyncIterator[ChatEvent]:
        return grammar.named(model.achat_events(turn.messages, turn.options), body, responses.FORMAT_FIELD)

    answer = responses.ResponseAnswer(body.model or entry.id, body, turn, state.responses)
    return await _answer(request, state, entry, open_stream, answer, body)


@v1.get("/responses/{response_id}")
async def get_response(request: Request, response_id: str) -> dict[str, Any]:
    return _state(request).responses.get(response_id).body


@v1.delete("/responses/{response_id}")
async def delete_response(request: Request, response_id: str) -> dict[str, Any]:
    _state(request).responses.delete(response_id)
    return {"id": response_id, "object": "response", "deleted": True}


# -- tokens (llama-server's routes; vLLM's /tokenize with messages) -------------------------

async def _on_chat_model(request: Request, body_type: type[TokenBody],
                         answer: Callable[[object, str, TokenBody], Coroutine[Any, Any, dict[str, Any]]],
                         check: Callable[[TokenBody], object] = lambda body: None,
                         check_messages: Callable[[TokenBody], object] = lambda body: None) -> Response:
    """The token routes' one shape: the body parsed and ``check``ed, the chat model it names (or
    the server's default) resolved, its messages checked, then ``answer`` of that model, whole."""
    state = _state(request)
    body = await _parse(request, body_type)
    check(body)
    entry = state.catalog.resolve(body.model or state.catalog.manager.settings.default_chat_model, "chat")
    check_messages(body)
    return await _whole(request, state, state.catalog.get(entry), lambda model: answer(model, entry.id, body))


@router.post("/tokenize", dependencies=[Depends(_check_key)], openapi_extra=documented(tokenize.TokenizeRequest))
async def tokenize_text(request: Request) -> Response:
    """Text (``content``) or a chat (``messages``) → ``{"tokens", "count", "max_model_len"}``."""
    return await _on_chat_model(request, tokenize.TokenizeRequest, tokenize.tokenize,
                                tokenize.check, tokenize.messages_of)


@router.post("/detokenize", dependencies=[Depends(_check_key)],
             openapi_extra=documented(tokenize.DetokenizeRequest))
async def detokenize_ids(request: Request) -> Response:
    """``{"tokens": [ids]}`` → ``{"content"}``; an id outside the vocabulary is a 400 naming the range."""
    return await _on_chat_model(request, tokenize.DetokenizeRequest, tokenize.detokenize)


@router.post("/apply-template", dependencies=[Depends(_check_key)],
             openapi_extra=documented(tokenize.ApplyTemplateRequest))
async def apply_template(request: Request) -> Response:
    """``{"messages"}`` → ``{"prompt"}``: the chat as the model reads it, with its token count."""
    return await _on_chat_model(request, tokenize.ApplyTemplateRequest, tokenize.apply_template,
                                check_messages=tokenize.messages_of)


router.include_router(v1)


# -- Anthropic's Messages API: its own error shape (`messages.AnthropicRoute`) and key header ---------

anthropic = APIRouter(prefix="/v1", route_class=messages.AnthropicRoute,
                      dependencies=[Depends(_check_anthropic_key)])


@anthropic.post("/messages")
async def create_message(request: Request) -> Response:
    state = _state(request)
    body = await _parse(request, MessagesRequest)
    entry = state.catalog.resolve(body.model, "chat")
    conversation = messages.to_messages(body)
    options = messages.message_options(body)

    def open_stream(model: ChatModel) -> AsyncIterator[ChatEvent]:
        return model.achat_events(conversation, options)

    return await _answer(request, state, entry, open_stream, messages.MessageAnswer(body.model or entry.id), body)


@anthropic.post("/messages/count_tokens")
async def count_message_tokens(request: Request) -> Response:
    state = _state(request)
    body = await _parse(request, CountTokensRequest)
    entry = state.catalog.resolve(body.model, "chat")
    conversation = messages.to_messages(body)
    options = messages.count_options(body)
    return await _whole(request, state, state.catalog.chat(entry), lambda model: messages.count_tokens(
        tokenize.tokenizing(model, entry.id), conversation, options))


router.include_router(anthropic)


# -- the page ---------------------------------------------------------------------------------

@router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
async def page() -> Response:
    """The built-in chat page (`webpage`): it calls the routes above, with the key typed in it."""
    return page_file("index.html")


@router.api_route("/page/{name}", methods=["GET", "HEAD"], include_in_schema=False)
async def page_asset(name: str) -> Response:
    return page_file(name)

"""One mapping from what can go wrong to OpenAI's error body and an HTTP status.

OpenAI answers every failure as ``{"error": {"message", "type", "param", "code"}}``; clients
(the ``openai`` package, LangChain) read that body to raise their own typed errors. A
client's mistake or a model's odd output is a 4xx with a message that names the fix;
only a bug here is a 500, and it is logged and still answered with a JSON body.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from .. import errors as ort

logger = logging.getLogger(__name__)

#: ortmodels' errors → (status, OpenAI error type, code); the first matching class wins.
_STATUS: tuple[tuple[type[BaseException], int, str, str | None], ...] = (
    (ort.UnknownModelError, 404, "invalid_request_error", "model_not_found"),
    (ort.UnknownVersionError, 404, "invalid_request_error", "model_not_found"),
    (ort.InvalidModelNameError, 404, "invalid_request_error", "model_not_found"),
    (ort.ModelNotExportedError, 404, "invalid_request_error", "model_not_found"),
    (ort.ModelKindError, 404, "invalid_request_error", "model_not_found"),
    (ort.FailedVariantError, 404, "invalid_request_error", "model_not_found"),
    (ort.ModelBusyError, 503, "server_error", "unavailable"),
    (ort.EngineClosedError, 503, "server_error", "unavailable"),
    (ort.ModelNotLoadedError, 503, "server_error", "unavailable"),
    (ort.ReplicaUnavailableError, 503, "server_error", "unavailable"),
    (ort.ModelFileError, 500, "server_error", "model_files"),
    (ort.DeviceUnavailableError, 500, "server_error", None),
    (ort.MissingDependencyError, 500, "server_error", None),
    (ort.ContextLengthError, 400, "invalid_request_error", "context_length_exceeded"),
    (ort.ChatInputError, 400, "invalid_request_error", None),
    (ort.EmbeddingInputError, 400, "invalid_request_error", None),
    (ort.RerankInputError, 400, "invalid_request_error", None),
    (ort.ChatTemplateError, 400, "invalid_request_error", None),
    (ort.GrammarError, 400, "invalid_request_error", "invalid_grammar"),
    (ort.StructuredOutputError, 400, "invalid_request_error", None),
    (ort.RequestTooLargeError, 400, "invalid_request_error", "context_length_exceeded"),
    (ort.InvalidVersionError, 400, "invalid_request_error", None),
    (ort.ConfigurationError, 400, "invalid_request_error", None),
    (ort.OrtModelsError, 500, "server_error", None),
)


class ApiError(Exception):
    """An error answered as OpenAI answers it; raised by the routes themselves."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type = status, message, type
        self.param, self.code, self.headers = param, code, headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


@dataclass(frozen=True)
class Spelling:
    """How a route's body names the chat service's options, for the errors that name them (a
    prompt past the context): the Responses API says ``max_output_tokens`` and ``truncation``."""

    names: Mapping[str, str] = field(default_factory=dict)
    truncate: str = 'set "truncate_prompt": true in the body'


#: Chat Completions', Completions' and Anthropic's Messages' spelling: the service's own names.
CHAT_SPELLING = Spelling()


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def from_exception(exc: BaseException, spelling: Spelling = CHAT_SPELLING) -> ApiError:
    """The API error for any exception, the options it names spelt as the route's body spells
    them; an unexpected one is logged with its traceback."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, (RequestValidationError, ValidationError)):
        return from_validation(list(exc.errors()))
    for cls, status, kind, code in _STATUS:
        if isinstance(exc, cls):
            if status >= 500:
                logger.error("Request failed: %s", exc)
            param = getattr(exc, "param", None)
            if isinstance(exc, ort.ContextLengthError):
                said, param = exc.spelt(spelling.truncate, spelling.names), spelling.names.get(param, param)
            else:
                said = str(exc)
            return ApiError(status, said, type=kind, code=code, param=param)
    logger.error("Unexpected error while answering a request", exc_info=exc)
    return ApiError(500, f"Internal error ({type(exc).__name__}); the server log has the details.",
                    type="server_error", code="internal_error")


def _is_branch(part: str) -> bool:
    """A union's branch name in an error's location (``str``, ``list[str]``, ``function-after[...]``):
    pydantic's, not the client's."""
    return part[:1].islower() and ("[" in part or part in {"str", "int", "float", "bool", "dict", "list", "none",
                                                             "is-instance"})


def _where(loc: tuple[Any, ...] | list[Any]) -> str | None:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(p for p in parts if not _is_branch(p)) or None


#: A union branch's type as a message names it.
_SHAPES = {"str": "a string", "int": "a whole number", "float": "a number", "bool": "true or false",
           "dict": "an object", "list[str]": "a list of strings", "list[dict[str,any]]": "a list of objects"}


def _shapes(errors: list[dict[str, Any]], param: str) -> tuple[list[str], dict[str, Any] | None]:
    """For a field a union types: the shapes it takes (from the branches its errors came from),
    and the error inside a branch of the right shape (an item of a list, say), if any."""
    shapes, inner = [], None
    for error in errors:
        parts = [str(p) for p in error.get("loc", ()) if p != "body"]
        branches = [i for i, p in enumerate(parts) if _is_branch(p)]
        if not branches or ".".join(p for p in parts[:branches[0]]) != param:
            continue
        branch = parts[branches[0]]
        if branch not in _SHAPES:
            return [], None  # a validator's branch, not a type: its own message says more
        shapes.append(_SHAPES[branch])
        if len(parts) > branches[0] + 1 and inner is None:
            inner = error
    return list(dict.fromkeys(shapes)), inner


Validated = TypeVar("Validated", bound=BaseModel)


def validated(model: type[Validated], data: object) -> Validated:
    """``data`` as ``model``, or the 400 `from_validation` gives (never a logged traceback);
    the routes' bodies and the bodies they build from them (the tokenize route's chat)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise from_validation(list(exc.errors())) from None
    except RecursionError:
        raise bad_request("The body is nested too deeply.", code="invalid_json") from None


def from_validation(errors: list[dict[str, Any]]) -> ApiError:
    """A 400 from pydantic's errors: the first one, with the field it is about as ``param``."""
    if not errors:
        return bad_request("The request body is not valid.")
    error = errors[0]
    param = _where(error.get("loc", ()))
    if error.get("type") == "extra_forbidden":
        return bad_request(f"Unrecognized request argument supplied: {param}.", param, "unknown_parameter")
    if error.get("type") == "missing":
        return bad_request(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")
    given = error.get("input")
    shown = "" if isinstance(given, (dict, list)) or given is None else f" (got {given!r:.60})"
    shapes, inner = _shapes(errors, param) if param else ([], None)
    if len(shapes) > 1:  # a union's branches each said no: name the shapes, not the first branch's type
        detail = f" ({_where(inner['loc'])}: {inner.get('msg', 'invalid value')})" if inner else shown
        return bad_request(f"Invalid value for '{param}': give {', or '.join(shapes)}{detail}.", param, "invalid_value")
    cause = (error.get("ctx") or {}).get("error")
    # a check of ours inside a validator (`check_stop`, `check_tools`, ...): its own words
    text = str(cause).rstrip(".") if isinstance(cause, ort.OrtModelsError) else str(error.get("msg", "invalid value"))
    return bad_request(f"Invalid value for '{param}': {text}{shown}." if param else f"{text}.", param,
                       "invalid_value")


def install(app: FastAPI, shapes: dict[str, Callable[[ApiError], Response]] | None = None) -> None:
    """Answer every error the app can meet with OpenAI's body; ``shapes``: another API's answer
    for a no-route error under a path prefix (Anthropic's under ``/v1/messages``), whose routes
    shape their own errors."""

    async def api_error(request: Request, exc: Exception) -> JSONResponse:
        return from_exception(exc).response()

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        message = f"No route {request.method} {request.url.path}." if exc.status_code in (404, 405) else str(exc.detail)
        error = ApiError(exc.status_code, message, code=code, headers=dict(exc.headers or {}))
        shape = next((s for prefix, s in (shapes or {}).items() if request.url.path.startswith(prefix)), None)
        return error.response() if shape is None else shape(error)

    async def client_left(request: Request, exc: Exception) -> Response:
        logger.info("The client went away while sending its request (%s %s)", request.method, request.url.path)
        return Response(status_code=499)  # nobody reads it; nginx's "client closed request"

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(ClientDisconnect, client_left)
    app.add_exception_handler(RequestValidationError, api_error)
    app.add_exception_handler(ort.OrtModelsError, api_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, api_error)

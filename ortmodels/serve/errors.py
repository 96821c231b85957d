"""One mapping from what can go wrong to OpenAI's error body and an HTTP status.

OpenAI answers every failure as ``{"error": {"message", "type", "param", "code"}}``; clients
(the ``openai`` package, LangChain) read that body to raise their own typed errors. A
client's mistake or a model's odd output is a 4xx with a message that names the fix;
only a bug here is a 500, and it is logged and still answered with a JSON body.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
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


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def from_exception(exc: BaseException) -> ApiError:
    """The API error for any exception; an unexpected one is logged with its traceback."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, (RequestValidationError, ValidationError)):
        return from_validation(list(exc.errors()))
    for cls, status, kind, code in _STATUS:
        if isinstance(exc, cls):
            if status >= 500:
                logger.error("Request failed: %s", exc)
            said = exc.spelt('set "truncate_prompt": true in the body') if isinstance(exc, ort.ContextLengthError) else str(exc)
            return ApiError(status, said, type=kind, code=code, param=getattr(exc, "param", None))
    logger.error("Unexpected error while answering a request", exc_info=exc)
    return ApiError(500, f"Internal error ({type(exc).__name__}); the server log has the details.",
                    type="server_error", code="internal_error")


def _where(loc: tuple[Any, ...] | list[Any]) -> str | None:
    parts = [str(p) for p in loc if p != "body"]
    # a union's branch names (``str``, ``list[str]``, ``function-after[...]``) are not the client's
    parts = [p for p in parts if not (p[:1].islower() and ("[" in p or p in {"str", "int", "float", "bool", "dict",
                                                                               "list", "none", "is-instance"}))]
    return ".".join(parts) or None


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
    cause = (error.get("ctx") or {}).get("error")
    # a check of ours inside a validator (`check_stop`, `check_tools`, ...): its own words
    text = str(cause).rstrip(".") if isinstance(cause, ort.OrtModelsError) else str(error.get("msg", "invalid value"))
    given = error.get("input")
    shown = "" if isinstance(given, (dict, list)) or given is None else f" (got {given!r:.60})"
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

"""Grammars in the body: OpenAI's ``response_format``, vLLM's ``structured_outputs`` and
llama.cpp's ``grammar`` (GBNF) and ``json_schema``, each mapped onto the chat service's one
``response_format`` option (`ortmodels.runtime.output_plan.grammar_of`: llguidance compiles
them all, a GBNF grammar read as Lark by llguidance's own converter).

One constraint per request: two are a 400 naming both. A grammar the model's compiler refuses
(it does not compile, or no text can match it) is the chat service's one-line `GrammarError`,
answered as a 400 whose ``param`` is the field that held it (`named`).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from ..engine.json_text import loads
from ..errors import GrammarError
from ..runtime.events import ChatEvent
from .errors import ApiError, bad_request
from .protocol import GrammarFields, ResponseFormat


def _response_format(fmt: ResponseFormat) -> dict[str, Any] | None:
    """OpenAI's ``response_format`` as the service's (``text``: none)."""
    if fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return {"type": "json_object"}
    if fmt.json_schema is None or fmt.json_schema.schema_ is None:  # no schema: not "any JSON"
        where = "response_format.json_schema" + (".schema" if fmt.json_schema is not None else "")
        raise bad_request("response_format json_schema needs {'json_schema': {'name': ..., 'schema': {...}}}.", where)
    return {"type": "json_schema", "json_schema": fmt.json_schema.model_dump(by_alias=True, exclude_none=True)}


def _schema(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}


def _json(value: dict[str, Any] | str, field: str) -> dict[str, Any]:
    """vLLM's ``json``: a schema, or the same as a JSON string."""
    if isinstance(value, str):
        try:
            value = loads(value)
        except (ValueError, RecursionError):
            value = None
        if not isinstance(value, dict):
            raise bad_request(f"{field} must be a JSON schema: an object, or a string holding one.", field)
    return _schema(value)


def _choice(choices: list[str]) -> dict[str, Any]:
    """vLLM's ``choice``: a Lark grammar of the strings as literals (JSON's escapes, as llguidance
    writes its own choice grammars)."""
    return {"type": "lark", "lark": "start: " + " | ".join(json.dumps(c, ensure_ascii=False) for c in choices)}


def constraints(body: Any) -> list[tuple[str, dict[str, Any]]]:
    """Every constraint the body gives: (the field that holds it, the service's ``response_format``)."""
    given: list[tuple[str, dict[str, Any]]] = []
    fmt = getattr(body, "response_format", None)
    if fmt is not None and (mapped := _response_format(fmt)) is not None:
        given.append(("response_format", mapped))
    if not isinstance(body, GrammarFields):
        return given
    outputs = body.structured_outputs
    if outputs is not None:
        if outputs.regex is not None:
            given.append(("structured_outputs.regex", {"type": "regex", "regex": outputs.regex}))
        if outputs.choice is not None:
            given.append(("structured_outputs.choice", _choice(outputs.choice)))
        if outputs.grammar is not None:
            given.append(("structured_outputs.grammar", {"type": "gbnf", "gbnf": outputs.grammar}))
        if outputs.json_ is not None:
            given.append(("structured_outputs.json", _json(outputs.json_, "structured_outputs.json")))
        if outputs.json_object:
            given.append(("structured_outputs.json_object", {"type": "json_object"}))
        if not any(name.startswith("structured_outputs.") for name, _ in given):
            raise bad_request("structured_outputs needs one of regex, choice, grammar, json or json_object: true.",
                              "structured_outputs")
    if body.grammar is not None:
        given.append(("grammar", {"type": "gbnf", "gbnf": body.grammar}))
    if body.json_schema is not None:
        given.append(("json_schema", _schema(body.json_schema)))
    return given


def constraint(body: Any) -> tuple[str, dict[str, Any]] | None:
    """The body's one constraint, or none; two are a 400 naming both."""
    given = constraints(body)
    if len(given) > 1:
        names = " and ".join(name for name, _ in given[:2])
        raise bad_request(f"{names} both constrain the answer; give one grammar per request.", given[1][0],
                          "conflicting_parameters")
    return given[0] if given else None


async def named(events: AsyncIterator[ChatEvent], body: Any, field: str | None = None) -> AsyncIterator[ChatEvent]:
    """``events``, with a grammar the model refuses answered as a 400 naming the body's field
    (``field`` where the body's constraint is not one of chat's: the Responses API's ``text.format``)."""
    found = constraint(body)
    param = found[0] if found is not None else field
    async with aclosing(events):
        try:
            async for item in events:
                yield item
        except GrammarError as exc:
            if param is None:
                raise
            raise ApiError(400, str(exc), param=param, code="invalid_grammar") from None

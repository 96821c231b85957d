"""What DRY ("don't repeat yourself", llama.cpp's sampler) does to the sample's structured output.

The int8 and int4 samples answer `with_structured_output` calls greedily (temperature 0,
``max_tokens`` 100 as LangChain's standard suite runs them), without DRY and with it
(llama.cpp's settings: ``dry_multiplier`` 0.8, base 1.75, allowed length 2, its four
sequence breakers). Two schema sets:

- ``langchain-standard``: the distinct calls of LangChain's standard integration suite
  (``test_structured_output`` per schema type, ``_pydantic_2_v1``, ``_optional_param``,
  ``test_json_mode``): schemas written outside the project, where the sample loops inside a
  JSON string (``"A cat is a cat, right? A cat is a cat, …"``) until ``max_tokens``.
- ``ortmodels``: the schemas of tests/test_structured_output.py, both methods.

An answer counts when it finished (not cut at ``max_tokens``) and validates. Also counted: the
answers valid without DRY that DRY changes (the default may turn DRY on inside constrained
output only if it lifts the count without changing those).

    python -m benchmarks.bench_dry [--precisions int8 int4] [--max-tokens 100] [--multiplier 0.8]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Annotated, Any, TypedDict

import jsonschema
from langchain_core.utils.function_calling import convert_to_json_schema
from pydantic import BaseModel, Field
from pydantic.v1 import BaseModel as BaseModelV1
from pydantic.v1 import Field as FieldV1

from benchmarks.report import machine, versions, write_json
from ortmodels.runtime.chat import OnnxChatModel

ROOT = Path(__file__).resolve().parents[1]
MODEL = "smollm2-135m-instruct"
JOKE = "Tell me a joke about cats."
JOKE_JSON = ("Tell me a joke about cats. Return the result as a JSON with 'setup' and 'punchline' keys. "
             "Return nothing other than JSON.")


# -- LangChain's standard suite's schemas (langchain_tests.integration_tests.chat_models) ---------

class Joke(BaseModel):
    """Joke to tell user."""

    setup: str = Field(description="question to set up a joke")
    punchline: str = Field(description="answer to resolve the joke")


class JokeDict(TypedDict):
    """Joke to tell user."""

    setup: Annotated[str, ..., "question to set up a joke"]
    punchline: Annotated[str, ..., "answer to resolve the joke"]


class JokeV1(BaseModelV1):
    """Joke to tell user."""

    setup: str = FieldV1(description="question to set up a joke")
    punchline: str = FieldV1(description="answer to resolve the joke")


class OptionalJoke(BaseModel):
    """Joke to tell user."""

    setup: str = Field(description="question to set up a joke")
    punchline: str | None = Field(default=None, description="answer to resolve the joke")


class OptionalJokeDict(TypedDict):
    """Joke to tell user."""

    setup: Annotated[str, ..., "question to set up a joke"]
    punchline: Annotated[str | None, None, "answer to resolve the joke"]


#: (name, schema, method, prompt)
STANDARD: list[tuple[str, Any, str, str]] = [
    ("structured_output[pydantic]", Joke, "json_schema", JOKE),
    ("structured_output[typeddict]", JokeDict, "json_schema", JOKE),
    ("structured_output[json_schema]", Joke.model_json_schema(), "json_schema", JOKE),
    ("pydantic_2_v1[class]", JokeV1, "json_schema", JOKE),
    ("pydantic_2_v1[schema]", JokeV1.schema(), "json_schema", JOKE),
    ("optional_param[setup only]", OptionalJoke, "json_schema", "Give me the setup to a joke about cats, no punchline."),
    ("optional_param[with punchline]", OptionalJoke, "json_schema", "Give me a joke about cats, include the punchline."),
    ("optional_param[schema]", OptionalJoke.model_json_schema(), "json_schema", JOKE),
    ("optional_param[typeddict]", OptionalJokeDict, "json_schema", JOKE),
    ("json_mode[pydantic]", Joke, "json_mode", JOKE_JSON),
    ("json_mode[schema]", Joke.model_json_schema(), "json_mode", JOKE_JSON),
]


def _own() -> list[tuple[str, Any, str, str]]:
    """tests/test_structured_output.py's cases, with each of its two methods."""
    from tests.test_structured_output import CASES

    return [(f"{case}[{method}]", schema, method, prompt)
            for case, (schema, prompt) in CASES.items() for method in ("json_schema", "function_calling")]


def answer(model: OnnxChatModel, schema: Any, method: str, prompt: str) -> dict[str, Any]:
    """One call: whether it finished and validates, and what it parsed."""
    result = model.with_structured_output(schema, method=method, include_raw=True).invoke(prompt)
    raw = result["raw"]
    parsed = result["parsed"]
    value = parsed.dict() if isinstance(parsed, BaseModelV1) else (
        parsed.model_dump(mode="json") if isinstance(parsed, BaseModel) else parsed)
    finished = raw.response_metadata.get("finish_reason") in ("stop", "tool_calls")
    valid = finished and result["parsing_error"] is None and value is not None
    if valid:
        try:
            jsonschema.validate(value, schema if isinstance(schema, dict) else convert_to_json_schema(schema))
        except jsonschema.ValidationError:
            valid = False
    return {"finished": finished, "valid": valid, "value": value, "text": str(raw.content)[:400],
            "tokens": (raw.usage_metadata or {}).get("output_tokens")}


def measure(precision: str, sets: dict[str, list[tuple[str, Any, str, str]]], max_tokens: int,
            multiplier: float, models: Path) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for setting, options in (("off", {}), ("dry", {"dry_multiplier": multiplier})):
        model = OnnxChatModel(model_path=str(models / MODEL), dtype=precision, device="cpu",
                              max_tokens=max_tokens, temperature=0, **options).load()
        began = time.perf_counter()
        for set_name, calls in sets.items():
            for name, schema, method, prompt in calls:
                rows.setdefault(set_name, {}).setdefault(name, {})[setting] = answer(model, schema, method, prompt)
        print(f"{precision} {setting}: {time.perf_counter() - began:.1f} s", flush=True)
        model.unload()
    figures = {}
    for set_name, calls in rows.items():
        off = sum(r["off"]["valid"] for r in calls.values())
        dry = sum(r["dry"]["valid"] for r in calls.values())
        changed = [name for name, r in calls.items() if r["off"]["valid"] and r["off"]["value"] != r["dry"]["value"]]
        lost = [name for name, r in calls.items() if r["off"]["valid"] and not r["dry"]["valid"]]
        figures[set_name] = {"calls": len(calls), "valid_without_dry": off, "valid_with_dry": dry,
                             "valid_answers_changed_by_dry": changed, "valid_answers_lost_to_dry": lost}
    return {"figures": figures, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=Path, default=ROOT / "models")
    parser.add_argument("--precisions", nargs="+", default=["int8", "int4"])
    parser.add_argument("--max-tokens", type=int, default=100)
    parser.add_argument("--multiplier", type=float, default=0.8)
    parser.add_argument("--sets", nargs="+", default=["langchain-standard", "ortmodels"])
    args = parser.parse_args()
    every = {"langchain-standard": STANDARD, "ortmodels": _own()}
    sets = {name: every[name] for name in args.sets}
    results = {p: measure(p, sets, args.max_tokens, args.multiplier, args.models) for p in args.precisions}
    print(f"{'precision':9} {'schema set':20} {'calls':>5} {'valid off':>9} {'valid DRY':>9}  valid answers DRY changed")
    for precision, result in results.items():
        for set_name, f in result["figures"].items():
            print(f"{precision:9} {set_name:20} {f['calls']:5} {f['valid_without_dry']:9} {f['valid_with_dry']:9}  "
                  f"{', '.join(f['valid_answers_changed_by_dry']) or '-'}")
    path = write_json("dry", {
        "benchmark": "dry", "model": MODEL, "max_tokens": args.max_tokens,
        "dry": {"dry_multiplier": args.multiplier, "dry_base": 1.75, "dry_allowed_length": 2,
                "dry_penalty_last_n": -1, "dry_sequence_breakers": ["\n", ":", '"', "*"]},
        "machine": machine(), "versions": versions(), "results": results,
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

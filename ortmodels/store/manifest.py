"""The export manifest: what was exported, from what, with which tools, and how faithful it is.

Written by `ortmodels.export`, read by `ortmodels.store`; both go through these models
so the file's shape is defined once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from ..errors import ModelFileError

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1

Kind = Literal["embedding", "chat", "reranker"]


def check_relative_path(value: str) -> str:
    """A path a manifest names: relative, inside its folder, no ``..``, no drive, no NUL.

    The manifest is data on disk that anyone with write access may have changed, so it is
    never trusted to point outside its export version (`integrity.resolve_inside` then
    checks the real path, links included).
    """
    parts = value.replace("\\", "/").split("/")
    if (not value or "\x00" in value or value.startswith(("/", "\\")) or ":" in parts[0]
            or any(part in ("..",) for part in parts) or len(value) > 4096):
        raise ValueError(
            f"{value[:80]!r} is not a relative path inside the export version (absolute, '..' or empty)"
        )
    return value


#: The parts of a manifest build their validators when first used on their own (an export making
#: one), not at import: `Manifest`'s validator holds them already, and a chat's start, which only
#: reads manifests, built each twice (3-7 ms of its main thread).
_PART = ConfigDict(defer_build=True)


class FileEntry(BaseModel):
    """One file of a variant, as it was written."""

    model_config = _PART

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class QualityVerdict(BaseModel):
    """Whether a variant passed the export's quality gates, and the figures that decided it."""

    model_config = ConfigDict(extra="allow", defer_build=True)

    passed: bool
    failures: list[str] = Field(default_factory=list)
    bounds: dict[str, Any] = Field(default_factory=dict)
    judged: bool = True
    """False when exported with ``--skip-gates``: the figures and what the gates would say are
    recorded, but the variant is published whatever they say ("not judged")."""

    @property
    def publishable(self) -> bool:
        """Whether the variant's files are kept and it may be loaded: it passed, or was not judged."""
        return self.passed or not self.judged


class KVEntry(BaseModel):
    """One KV cache precision of a chat variant: its graph file, gate figures and verdict.

    The figures are those of the variant's gates (`export.quality`) run on that graph, so
    each variant's manifest entry says how good it is with the cache it will run with.
    """

    model_config = ConfigDict(extra="allow", defer_build=True)

    file: str
    bytes_per_token: int = Field(ge=0)
    """Cache bytes one token takes in the graph's full-history layers: every layer of most models;
    a model with sliding-window layers (Gemma 2/3, Mistral) counts its global layers only here
    (exports before ortmodels recorded ``window_bytes`` counted every layer)."""
    window_bytes: int = Field(default=0, ge=0)
    """Bytes the sliding-window layers' caches of one sequence hold at most, however long it is
    (the window, plus the positions the engine lets them pass it by between cuts); 0 without
    such layers. A sequence of n tokens takes at most ``n * bytes_per_token + window_bytes``."""
    parity: dict[str, Any] = Field(default_factory=dict)
    quality: QualityVerdict | None = None

    @property
    def usable(self) -> bool:
        return self.quality is None or self.quality.publishable

    @field_validator("file")
    @classmethod
    def _relative_file(cls, value: str) -> str:
        return check_relative_path(value)


class VariantEntry(BaseModel):
    """One precision of the export (a sub-folder of ``onnx/``).

    A variant that failed its quality gates keeps its entry (its figures, its verdict) but
    no files: nothing loads it, and asking for it names the figures that failed. One exported
    with ``--skip-gates`` keeps its files whatever its figures (``quality.judged`` is False).
    """

    model_config = ConfigDict(extra="allow", defer_build=True)

    dtype: str
    path: str
    files: dict[str, FileEntry]
    size: int
    created_at: str
    quantization: dict[str, Any] | None = None
    parity: dict[str, Any] = Field(default_factory=dict)
    quality: QualityVerdict | None = None  # None: exported before the gates existed
    kv: dict[str, KVEntry] | None = None
    """Chat variants: each KV cache precision offered (``fp32``, ``fp16``), keyed by precision;
    ``None`` in exports made before there was a choice: ``model.onnx``'s own cache only."""

    @property
    def usable(self) -> bool:
        return self.quality is None or self.quality.publishable

    @field_validator("path")
    @classmethod
    def _relative_folder(cls, value: str) -> str:
        return check_relative_path(value)

    @field_validator("files")
    @classmethod
    def _relative_files(cls, value: dict[str, FileEntry]) -> dict[str, FileEntry]:
        for name in value:
            check_relative_path(name)
        return value


class Matryoshka(BaseModel):
    """Where the export found that a model was trained to be truncated (Matryoshka
    representation learning), and the sizes it was trained at when that is said."""

    model_config = _PART

    source: str = Field(max_length=200)
    """The file and the key or tag that says so (``README.md: tags loss:MatryoshkaLoss``)."""
    dimensions: list[Annotated[int, Field(ge=1)]] = Field(default_factory=list, max_length=64)
    """The trained sizes, largest first; empty when the card says Matryoshka without them."""


class EmbeddingSpec(BaseModel):
    """How token vectors become one sentence vector, read from the sentence-transformers files."""

    model_config = _PART

    pooling: Literal["mean", "cls", "lasttoken", "max"]
    normalize: bool
    max_seq_length: int = Field(ge=1, le=1 << 20)
    dimension: int = Field(ge=1, le=1 << 20)
    pad_token_id: int = Field(ge=0)
    prompts: dict[Annotated[str, Field(max_length=100)], Annotated[str, Field(max_length=4096)]] = Field(
        default_factory=dict, max_length=64)
    """``config_sentence_transformers.json``'s ``prompts`` (name → text put before the input); empty
    in exports made before prompts were read, and for models without them."""
    default_prompt_name: str | None = None
    """The prompt sentence-transformers' plain ``encode`` applies when none is asked for."""
    matryoshka: Matryoshka | None = None
    """Set when the card or config declares Matryoshka training: ``dimensions`` may truncate."""

    @field_validator("default_prompt_name")
    @classmethod
    def _known_default(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and value not in {"query", "document", *info.data.get("prompts", {})}:
            raise ValueError(f"default_prompt_name {value!r} is not one of the prompts")  # query, document: built in
        return value


class RerankerSpec(BaseModel):
    """How a cross-encoder turns a (query, document) pair into one score, read at export."""

    model_config = _PART

    activation: Literal["sigmoid", "identity"]
    """Applied to the classifier's one logit, as sentence-transformers' ``CrossEncoder`` does."""
    max_seq_length: int = Field(ge=1, le=1 << 20)
    """The pair's token limit (query and document together, the longer cut first)."""
    pad_token_id: int = Field(ge=0)


class ChatSpec(BaseModel):
    """What the decode loop needs to know of a causal LM, from its config files."""

    model_config = _PART

    context_length: int = Field(ge=2, le=1 << 24)
    eos_token_ids: list[Annotated[int, Field(ge=0)]]
    bos_token_id: int | None = Field(default=None, ge=0)
    generation: dict[str, Any] = Field(default_factory=dict)
    """Sampling defaults from ``generation_config.json`` (temperature, top_p, ...)."""
    tool_format: str | None = None
    """How the chat template calls tools (``generic``, ``hermes``, ``llama3``), detected at export;
    ``None`` in older exports: detected from the template at load."""
    reasoning_format: str | None = None
    """How the model's reasoning is told from its answer (``think-tags``: ``<think>…</think>``;
    ``none``), detected from the chat template at export; ``None`` in older exports: detected at load."""


class Manifest(BaseModel):
    """``models/<name>/onnx/manifest.json``."""

    model_config = ConfigDict(extra="allow")

    format_version: int = FORMAT_VERSION
    name: str
    kind: Kind
    task: str
    architecture: str | None = None
    model_type: str | None = None
    source_sha256: str
    created_at: str
    opset: int | None = None
    tools: dict[str, str] = Field(default_factory=dict)
    embedding: EmbeddingSpec | None = None
    chat: ChatSpec | None = None
    reranker: RerankerSpec | None = None
    variants: dict[str, VariantEntry] = Field(default_factory=dict)
    version: str | None = None
    """This export's id: its UTC time and the first hex digits of ``content_sha256``."""
    content_sha256: str | None = None
    """Hash over every variant file's path and sha256."""
    export_cost: dict[str, Any] | None = None
    """Wall time and peak resident memory of the export that made this version."""

    def write(self, folder: Path) -> Path:
        path = folder / MANIFEST_NAME
        path.write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")
        return path


def read_manifest(folder: Path) -> Manifest | None:
    """Read ``folder/manifest.json``; ``None`` if there is none, `ModelFileError` if it is corrupt."""
    path = folder / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        return Manifest.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ModelFileError(
            path, f"Corrupt export manifest ({type(exc).__name__})", "Re-run 'ortmodels export' for this model."
        ) from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ModelFileError(
            path,
            f"Export manifest refused: {where}: {first['msg']}",
            "The manifest was changed or damaged; re-run 'ortmodels export' for this model.",
        ) from None

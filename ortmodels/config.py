"""Settings from the environment and a ``.env`` file, under the names users already set."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import ConfigurationError
from .precision import normalize_precision
from .units import parse_bytes, parse_seconds

Device = Literal["auto", "cpu", "cuda", "coreml"]
#: The most intra-op threads a session may be given (`Settings.model_threads`).
MAX_THREADS = 256

_DEVICE_ALIASES = {"mps": "coreml", "gpu": "cuda"}


#: `Settings.model_ray_routing_imbalance`'s default, also `serve.ray.routing`'s (why 8: that field).
DEFAULT_RAY_ROUTING_IMBALANCE = 8


class Settings(BaseSettings):
    """ortmodels' settings; each field reads the environment variable of its alias."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        protected_namespaces=(),
    )

    local_models_dir: Path = Field(default=Path("models"), alias="LOCAL_MODELS_DIR")
    """Folder that holds one sub-folder per model (a Hugging Face checkpoint and its exports)."""

    default_chat_model: str = Field(default="smollm2-135m-instruct", alias="DEFAULT_CHAT_MODEL")
    """Chat model used when `get_chat_model()` is called without a name."""

    default_embedding_model: str = Field(
        default="all-minilm-l6-v2", alias="DEFAULT_EMBEDDING_MODEL"
    )
    """Embedding model used when `get_embedding_model()` is called without a name."""

    default_rerank_model: str = Field(default="ms-marco-minilm-l-6-v2", alias="DEFAULT_RERANK_MODEL")
    """Cross-encoder used when `get_reranker()` is called without a name."""

    model_device: Device = Field(default="auto", alias="MODEL_DEVICE")
    """Execution provider: auto (CUDA, else CoreML on macOS, else CPU), cpu, cuda or coreml (mps)."""

    model_dtype: str = Field(default="auto", alias="MODEL_DTYPE")
    """Precision to load: auto, float32, float16, bfloat16 (CUDA only), int8 or int4."""

    model_threads: int = Field(default=0, ge=0, le=MAX_THREADS, alias="MODEL_THREADS")
    """ONNX Runtime intra-op threads; 0 lets ONNX Runtime choose (one per physical core). At most
    256: a pool of 100,000 threads is never done starting."""

    model_memory_budget: int = Field(default=0, alias="MODEL_MEMORY_BUDGET")
    """Bytes the manager's loaded models may hold (``2GB``, ``512MiB``); least recently used
    models are unloaded to stay within it. 0: no limit."""

    model_keep_alive: float = Field(default=-1, alias="MODEL_KEEP_ALIVE")
    """Seconds an idle model stays loaded (``300``, ``5m``), as Ollama's keep_alive:
    -1 forever, 0 unload after each call."""

    model_unload_timeout: float = Field(default=60.0, alias="MODEL_UNLOAD_TIMEOUT")
    """Seconds ``unload``/``unload_all`` wait for running calls before they raise `ModelBusyError`
    naming the calls that hold the model (``30``, ``2m``); -1 waits for ever."""

    model_max_batch: int = Field(default=8, ge=1, le=256, alias="MODEL_MAX_BATCH")
    """Most sequences a chat model decodes in one step; more concurrent requests wait their turn."""

    model_kv_cache: int = Field(default=1 << 30, ge=1, alias="MODEL_KV_CACHE")
    """Bytes a chat model's running requests may hold in KV cache (``1GB``, ``512MiB``); a request
    that does not fit waits for others to finish."""

    model_prepacked_cache: bool = Field(default=False, alias="MODEL_PREPACKED_CACHE")
    """Keep a warm copy of each quantized chat variant beside it, as onnxruntime leaves it after
    packing its weights for this machine, so that later loads skip the packing (a 1B int4
    session opened in 1.16 s against 1.47 s); off by default: the copy takes about twice the
    variant's size on disk and its load peaked 17% higher (1B: 2.0 GB against 1.7 GB)."""

    model_kv_dtype: Literal["auto", "fp32", "fp16"] = Field(default="auto", alias="MODEL_KV_DTYPE")
    """Precision of a chat model's KV cache: ``fp16`` halves its bytes per token (twice the
    tokens in ``MODEL_KV_CACHE`` and ``MODEL_PROMPT_CACHE``); ``auto`` takes fp16 where the
    variant passed its quality gates with it at export, else fp32 (also float16/float32).
    The fp16 variant's cache is fp16 under every setting."""

    model_prompt_cache: int = Field(default=256 << 20, ge=0, alias="MODEL_PROMPT_CACHE")
    """Bytes of finished prompts' KV cache kept so a later prompt with the same start (a system
    prompt, earlier turns) prefills only its new tokens (``256MB``); 0 turns it off."""

    model_speculative: Literal["auto", "on", "off"] = Field(default="auto", alias="MODEL_SPECULATIVE")
    """Prompt-lookup speculative decoding for a request that decodes alone: drafts copied from
    the prompt and the answer so far, checked in one pass (``on``, ``off``; also true/false).
    ``auto``: on for float variants (fp32, fp16, bf16), whose tokens it leaves unchanged; off
    for int4/int8, whose multi-token kernels can turn near ties the other way."""

    model_responses_store: int = Field(default=256, ge=0, le=1 << 20, alias="MODEL_RESPONSES_STORE")
    """Responses ``ortmodels serve`` keeps for ``previous_response_id`` and ``GET /v1/responses/{id}``:
    the most recently used, by count (each holds its conversation's text); 0 keeps none."""

    model_responses_store_bytes: int = Field(default=64 << 20, ge=0, alias="MODEL_RESPONSES_STORE_BYTES")
    """Bytes the kept responses may hold together (64 MiB), counted as their JSON (each holds
    its whole conversation); the least recently used go first; one larger than this is not kept."""

    model_verify_files: bool = Field(default=True, alias="MODEL_VERIFY_FILES")
    """Check a variant's files against the manifest's sha256 before its first load."""

    model_prompt_cache_dir: Path | None = Field(default=None, alias="MODEL_PROMPT_CACHE_DIR")
    """Folder where a chat model's prompt cache is written when it unloads (server shutdown,
    a Ray replica stopping) and read back when it loads, so a restarted server resumes warm;
    one file per model, export version, variant and KV precision. Unset: kept in memory only."""

    model_ray_routing: Literal["prefix", "load"] = Field(default="prefix", alias="MODEL_RAY_ROUTING")
    """How ``ortmodels serve --ray`` routes chat requests between a model's replicas: ``prefix``
    sends a conversation's turns to the replica whose prompt cache holds its start, by load when
    none does or that replica is busy; ``load``: Ray Serve's power of two choices only."""

    model_ray_routing_imbalance: int = Field(default=DEFAULT_RAY_ROUTING_IMBALANCE, ge=0,
                                             alias="MODEL_RAY_ROUTING_IMBALANCE")
    """With prefix routing: how many more requests the replica holding a prompt's start may have
    than the least busy replica before the prompt goes by load instead (its history prefilled
    again there). Ray's own prefix router (``ray.serve.llm``) never falls back by default; here 16
    let 16 conversations on 2 replicas pile onto one, whose prompt cache evicted, 2 sent a few
    turns away from the replica that held them, and 8 kept every one on it without piling up
    (`benchmarks/bench_ray_prefix.py`, 2026-12-04; README, "Prefix-aware routing")."""

    @field_validator("local_models_dir", mode="before")
    @classmethod
    def _default_when_empty(cls, value: object) -> object:
        """``LOCAL_MODELS_DIR=`` (empty) means unset (``models``), not the working directory; a
        leading ``~`` is the home folder, as a shell would read it (a ``.env`` line is not)."""
        if isinstance(value, str):
            return Path(value).expanduser() if value.strip() else "models"
        return value.expanduser() if isinstance(value, Path) else value

    @field_validator("model_prompt_cache_dir", mode="before")
    @classmethod
    def _no_dir_when_empty(cls, value: object) -> object:
        """``MODEL_PROMPT_CACHE_DIR=`` (empty) means unset, not the working directory."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("model_device", mode="before")
    @classmethod
    def _device_alias(cls, value: object) -> object:
        if isinstance(value, str):
            key = value.strip().lower()
            return _DEVICE_ALIASES.get(key, key)
        return value

    @field_validator("model_speculative", mode="before")
    @classmethod
    def _switch(cls, value: object) -> object:
        if isinstance(value, bool):
            return "on" if value else "off"
        if isinstance(value, str):
            key = value.strip().lower()
            return {"true": "on", "1": "on", "yes": "on", "false": "off", "0": "off", "no": "off"}.get(key, key)
        return value

    def speculates(self, variant: str) -> bool:
        """Whether `model_speculative` turns speculative decoding on for this precision variant."""
        if self.model_speculative == "auto":
            return not variant.startswith("int")
        return self.model_speculative == "on"

    @field_validator("model_dtype", mode="before")
    @classmethod
    def _dtype_name(cls, value: object) -> object:
        if not isinstance(value, str):
            raise ValueError("must be a string")
        key = value.strip().lower()
        if key == "auto":
            return key
        try:
            return normalize_precision(key)
        except ConfigurationError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("model_kv_dtype", mode="before")
    @classmethod
    def _kv_dtype_name(cls, value: object) -> object:
        if not isinstance(value, str):
            raise ValueError("must be a string")
        key = value.strip().lower()
        if key in ("int8", "q8", "int4", "q4", "fp8"):
            raise ValueError(
                f"a KV cache in {key} is not offered: onnxruntime's CPU attention takes an int8 cache only with "
                "scales calibrated at export, which ortmodels does not make yet; use auto, fp16 or fp32"
            )
        if key == "auto":
            return key
        try:
            return normalize_precision(key)  # float16 -> fp16; bfloat16 and others fail below
        except ConfigurationError:
            return key  # pydantic names the allowed values

    @field_validator("model_memory_budget", "model_prompt_cache", "model_responses_store_bytes", mode="before")
    @classmethod
    def _bytes(cls, value: object) -> object:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "0")):
            return 0
        return parse_bytes(value)  # type: ignore[arg-type]

    @field_validator("model_kv_cache", mode="before")
    @classmethod
    def _positive_bytes(cls, value: object) -> object:
        return parse_bytes(value)  # type: ignore[arg-type]

    @field_validator("model_keep_alive", "model_unload_timeout", mode="before")
    @classmethod
    def _seconds(cls, value: object) -> object:
        return parse_seconds(value)  # type: ignore[arg-type]

    @field_validator("default_chat_model", "default_embedding_model", "default_rerank_model", mode="after")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        from .store.names import validate_model_name

        validate_model_name(value)
        return value


def setting_name(field: str) -> str:
    """The environment variable of a settings field (``default_chat_model`` → ``DEFAULT_CHAT_MODEL``)."""
    return Settings.model_fields[field].alias or field.upper()


def load_settings(**overrides: object) -> Settings:
    """Read the settings, turning pydantic's report into one `ConfigurationError` per bad value."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = err["loc"][0] if err["loc"] else "?"
            alias = setting_name(field) if field in Settings.model_fields else field
            message = err["msg"].removeprefix("Value error, ").rstrip(".")  # our validators' own words
            problems.append(f"{alias}={err.get('input')!r}: {message}")
        raise ConfigurationError(
            "Bad setting " + "; ".join(problems) + ". Fix the environment variable or the .env file."
        ) from None


def check_api_key(key: str | None) -> str | None:
    """The server's API key as given (``None``: no key); a key no request could match is refused.

    An empty key would start an open server while its operator believes it closed, and a key
    with spaces, control or non-ASCII characters never matches what a client can send in
    ``Authorization: Bearer <key>`` (the header is stripped and sent as ASCII).
    """
    if key is None:
        return None
    if not key.strip():
        raise ConfigurationError(
            "The API key is empty or blank, which would leave the server open to anyone: give a key "
            "(e.g. the output of 'openssl rand -hex 32'), or leave it out to serve without one."
        )
    if not all("!" <= c <= "~" for c in key):
        raise ConfigurationError(
            "The API key contains spaces or characters other than visible ASCII, which no client can send "
            "in 'Authorization: Bearer <key>', so no request would ever match it: use letters, digits and "
            "punctuation only (e.g. the output of 'openssl rand -hex 32')."
        )
    return key

"""Every error ortmodels raises on purpose derives from :class:`OrtModelsError`.

Each message names the problem and the fix, so a user can act on it without
reading the source.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping


#: Where a lone surrogate in a text comes from, said wherever one is refused.
SURROGATE_CAUSES = ("bytes that were not UTF-8, as a command line's or a file's read with errors='surrogateescape', "
                    "or a JSON '\\ud800' escape without its pair")


def with_article(word: str) -> str:
    """``a chat``, ``an embedding``: a kind's name as a message says it."""
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"


class OrtModelsError(Exception):
    """Base class: catch this to handle any ortmodels failure."""


class _NamesOption(Exception):
    """An error that can name the option which caused it: ``param``, as the server's 400 names it."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param

    def __reduce__(self) -> tuple[type, tuple[str, str | None]]:  # keeps ``param`` across processes (Ray)
        return type(self), (str(self), self.param)


class ConfigurationError(OrtModelsError, ValueError):
    """A setting (environment variable, `.env` entry or argument) has a bad value."""


class InvalidModelNameError(OrtModelsError, ValueError):
    """A model name that is not a plain folder name (it could escape the models folder)."""


class UnknownModelError(OrtModelsError, KeyError):
    """No model of that name is in the models folder.

    Also a ``KeyError`` so that code written against a dict-like registry keeps working.
    """

    def __init__(self, name: str, known: Iterable[str], models_dir: object = None, setting: str | None = None,
                 kind: str | None = None) -> None:
        self.name = name
        self.known = sorted(known)
        self.models_dir, self.setting, self.kind = models_dir, setting, kind
        where = f" in {models_dir}" if models_dir is not None else ""
        if models_dir is not None and not os.path.isdir(str(models_dir)):
            where += " (no such folder: point LOCAL_MODELS_DIR at the folder that holds your models)"
        listing = ", ".join(self.known) if self.known else "none"
        named = f" (the default, from {setting})" if setting else ""
        if kind == "reranker":  # the samples have no reranker: 'ortmodels samples' would not help
            how = ("Put a cross-encoder checkpoint (one label, such as cross-encoder/ms-marco-MiniLM-L-6-v2) in a "
                   f"folder of that name and run 'ortmodels export {name}' (the sample models have no reranker)"
                   + (f", or set {setting} to a reranker you have." if setting else "."))
        else:
            among = f"{with_article(kind)} model among them" if kind else "one of them"
            lead = f"Set {setting} to {among}, put" if setting else "Put"
            how = (f"{lead} a Hugging Face checkpoint in a folder of that name, or run "
                   "'ortmodels samples' for the sample models (a chat and an embedding model).")
        super().__init__(f"Unknown model {name!r}{named}{where}. Known models: {listing}. {how}")

    def asked_as(self, name: str, setting: str | None, kind: str) -> UnknownModelError:
        """This error as the asker says it (the setting a default name came from, the kind asked
        for), if it is about ``name``; itself if it is about another model (a draft, say)."""
        if self.name != name:
            return self
        return UnknownModelError(self.name, self.known, self.models_dir, setting, kind)

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])

    def __reduce__(self) -> tuple[type, tuple[object, ...]]:  # rebuilt from its parts across processes (Ray)
        return type(self), (self.name, self.known, self.models_dir, self.setting, self.kind)


class ModelKindError(OrtModelsError, TypeError):
    """A model was asked for as the wrong kind (a chat model as embeddings, say)."""


class ModelNotExportedError(OrtModelsError):
    """The model has no ONNX export of the asked-for precision yet."""


class ModelFileError(OrtModelsError):
    """A model file is missing, unreadable or corrupt; the message names the file."""

    def __init__(self, path: object, problem: str, fix: str | None = None) -> None:
        self.path, self.problem, self.fix = path, problem, fix
        text = f"{problem}: {path}"
        if fix:
            text += f". {fix}"
        super().__init__(text)


class DeviceUnavailableError(OrtModelsError):
    """The asked-for execution provider (CUDA, CoreML) is not available here."""


class ExportError(OrtModelsError):
    """An export failed; the previous good export, if any, is left in place."""


class ExportMemoryError(ExportError):
    """An export would need more memory than the machine has available; said before it starts."""


class ParityError(ExportError):
    """The exported graph does not reproduce the PyTorch model closely enough."""


class FailedVariantError(OrtModelsError):
    """The asked-for precision was exported but failed its quality gates, so it is not loaded."""


class MissingDependencyError(OrtModelsError, ImportError):
    """An optional dependency is needed for this operation; the message says what to install."""


class SampleModelError(OrtModelsError):
    """A sample model could not be fetched or materialised."""


class ModelNotLoadedError(OrtModelsError, RuntimeError):
    """A model object was used after `unload()` in a way that needs it loaded."""


class UnknownVersionError(OrtModelsError, KeyError):
    """No export version of that id exists for the model; the message lists those that do."""

    def __init__(self, name: str, version: str, known: Iterable[str]) -> None:
        self.name, self.version, self.known = name, version, list(known)
        listing = ", ".join(self.known) if self.known else "none"
        super().__init__(
            f"Model {name!r} has no export version {version!r}. Versions: {listing}. "
            f"See 'ortmodels versions {name}'."
        )

    def __str__(self) -> str:
        return str(self.args[0])


class VersionInUseError(OrtModelsError):
    """An export version cannot be deleted: it is active or loaded by a running process."""


class ModelIntegrityError(ModelFileError):
    """A file of an exported variant no longer matches the sha256 and size its manifest records."""


class InvalidVersionError(OrtModelsError, ValueError):
    """An export version id that is not a plain version name (wrong type, too long, a path)."""


class ChatInputError(OrtModelsError, ValueError):
    """The conversation or a generation option cannot be used as given (empty, unknown role,
    too long, a bad option value)."""


class ContextLengthError(_NamesOption, ChatInputError):
    """The prompt and ``max_tokens`` do not fit the model's context. ``param``: what to change
    (``messages``, ``max_tokens``); where dropping the oldest text would do, the message offers
    ``truncate_prompt``, which each front end spells its own way (`spelt`)."""

    def __init__(self, problem: str, param: str | None = None, shorten: str | None = None, unit: str = "tokens",
                 truncate: str = "set truncate_prompt=True") -> None:
        self.problem, self.shorten, self.unit = problem, shorten, unit
        super().__init__(self.spelt(truncate), param)

    def spelt(self, truncate: str, names: Mapping[str, str] | None = None) -> str:
        """The message with the truncation switch as the caller gives it (``pass --truncate``,
        ``set "truncate_prompt": true in the body``; only the problem where truncating would not
        help), and the options named as the caller's API names them (``names``: the Responses
        API's ``max_output_tokens`` for ``max_tokens``)."""
        said = self.problem if self.shorten is None else \
            f"{self.problem} {self.shorten}, or {truncate} to drop the oldest {self.unit}."
        for ours, theirs in (names or {}).items():
            said = re.sub(rf"\b{re.escape(ours)}\b", theirs, said)
        return said

    def __reduce__(self) -> tuple[type, tuple[object, ...]]:  # rebuilt from its parts across processes (Ray)
        return type(self), (self.problem, self.param, self.shorten, self.unit)


class EmbeddingInputError(OrtModelsError, ValueError):
    """A text to embed cannot be used as given (not valid Unicode, say)."""


class RerankInputError(OrtModelsError, ValueError):
    """A query or document to rerank cannot be used as given (not valid Unicode, say)."""


class EmbeddingOptionError(_NamesOption, EmbeddingInputError):
    """An embedding option the model cannot honour: a prompt name it does not have, a number of
    dimensions it was not trained to be cut to; ``param`` names the option (the server's 400)."""


class ChatTemplateError(OrtModelsError, ValueError):
    """The chat template refused the conversation, failed, or went past its time or size bound."""


class ModelBusyError(OrtModelsError, TimeoutError):
    """An unload waited its timeout for running calls; the message names the calls that hold the model."""


class EngineClosedError(OrtModelsError, RuntimeError):
    """A request was given to a generation engine after `close()`."""


class RequestTooLargeError(OrtModelsError, ValueError):
    """A request can never fit: its prompt + max_tokens exceed the context or the KV cache bound."""


class GrammarError(_NamesOption, OrtModelsError, ValueError):
    """A schema, regex or grammar that constrained decoding cannot use; raised before generating.
    ``param``: the option that held it where the raiser knows (``tools``: the server's 400)."""


class StructuredOutputError(_NamesOption, OrtModelsError, ValueError):
    """A structured answer or tool call that cannot be given as asked (cut at max_tokens, an
    unknown tool name in tool_choice: ``param``)."""


class ReplicaUnavailableError(OrtModelsError, RuntimeError):
    """A Ray Serve replica that held the model died or could not be reached; Serve restarts it, retry."""

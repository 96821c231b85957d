"""Read how a checkpoint pools and normalises from its sentence-transformers files.

``modules.json`` lists the pipeline (Transformer, Pooling, Normalize); the Pooling
module's ``config.json`` names the mode; ``sentence_bert_config.json`` gives the
sequence limit; ``config_sentence_transformers.json`` the query and document prompts; the
model card (or a config key) whether it was trained for truncated (Matryoshka) vectors. A
plain Hugging Face encoder without them gets mean pooling and normalisation, the common
choice, with a warning.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import ExportError, ModelFileError
from ...store import read_json
from ...store.manifest import Matryoshka

logger = logging.getLogger(__name__)

_POOLING_KEYS = (
    ("pooling_mode_cls_token", "cls"),
    ("pooling_mode_lasttoken", "lasttoken"),
    ("pooling_mode_max_tokens", "max"),
    ("pooling_mode_mean_tokens", "mean"),
)
_NORMALIZE_TYPE = "sentence_transformers.models.Normalize"
_POOLING_TYPE = "sentence_transformers.models.Pooling"
# RoBERTa-style position ids start after the padding index, so two positions are unusable.
_POSITION_OFFSET = {"roberta": 2, "xlm-roberta": 2, "camembert": 2, "mpnet": 2}


@dataclass(frozen=True)
class PoolingConfig:
    pooling: str
    normalize: bool
    max_seq_length: int | None
    include_prompt: bool = True


def read_pooling_config(folder: Path) -> PoolingConfig:
    """Pooling mode, normalisation and sequence limit as sentence-transformers would use them."""
    modules_path = folder / "modules.json"
    st_config = folder / "sentence_bert_config.json"
    max_len = read_json(st_config).get("max_seq_length") if st_config.is_file() else None
    if not modules_path.is_file():
        logger.warning(
            "%s has no modules.json (not a sentence-transformers model): using mean pooling "
            "with normalisation.",
            folder,
        )
        return PoolingConfig("mean", True, max_len)
    modules = read_json_list(modules_path)
    types = [m.get("type", "") for m in modules]
    normalize = _NORMALIZE_TYPE in types
    pooling_module = next((m for m in modules if m.get("type") == _POOLING_TYPE), None)
    if pooling_module is None:
        raise ExportError(
            f"{modules_path} lists no Pooling module; ortmodels exports encoders whose "
            "sentence-transformers pipeline is Transformer, Pooling and optionally Normalize."
        )
    unsupported = [t for t in types if t.rsplit(".", 1)[-1] not in ("Transformer", "Pooling", "Normalize")]
    if unsupported:
        raise ExportError(
            f"{modules_path} has modules ortmodels cannot export yet: {', '.join(unsupported)}."
        )
    pooling_cfg = read_json(folder / pooling_module.get("path", "1_Pooling") / "config.json")
    if "pooling_mode" in pooling_cfg:  # newer sentence-transformers write the mode by name
        mode = {"mean": "mean", "cls": "cls", "lasttoken": "lasttoken", "max": "max"}.get(
            pooling_cfg["pooling_mode"]
        )
    else:
        mode = next((m for key, m in _POOLING_KEYS if pooling_cfg.get(key)), None)
    if mode is None:
        raise ExportError(
            f"{folder / pooling_module.get('path', '1_Pooling') / 'config.json'}: unsupported pooling "
            f"{pooling_cfg}; supported: mean, cls, lasttoken, max."
        )
    return PoolingConfig(mode, normalize, max_len, pooling_cfg.get("include_prompt", True) is not False)


def read_json_list(path: Path) -> list[dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(path, f"Corrupt JSON ({exc})") from None
    if not isinstance(data, list):
        raise ModelFileError(path, "Expected a JSON list of modules")
    return data


def effective_max_length(
    configured: int | None, model_type: str, max_positions: int | None, tokenizer_max: int | None
) -> int:
    """The longest input the model can take: the configured limit capped by its positions."""
    limits = []
    if max_positions:
        limits.append(max_positions - _POSITION_OFFSET.get(model_type, 0))
    if tokenizer_max and tokenizer_max < 1_000_000:
        limits.append(tokenizer_max)
    cap = min(limits) if limits else 512
    return min(configured, cap) if configured else cap


def read_prompts(folder: Path, include_prompt: bool = True) -> tuple[dict[str, str], str | None]:
    """``prompts`` and ``default_prompt_name`` from ``config_sentence_transformers.json``, as
    sentence-transformers reads them (a ``null`` prompt is ``""``); none without the file."""
    path = folder / "config_sentence_transformers.json"
    if not path.is_file():
        return {}, None
    data = read_json(path)
    given = data.get("prompts") or {}
    if not isinstance(given, dict) or not all(isinstance(k, str) and isinstance(v, (str, type(None)))
                                              for k, v in given.items()):
        raise ModelFileError(path, "'prompts' must map names to strings")
    prompts = {name: text or "" for name, text in given.items()}
    default = data.get("default_prompt_name")
    if default is not None and default not in {"query", "document", *prompts}:  # the two sentence-transformers has
        raise ModelFileError(path, f"default_prompt_name {default!r} is not one of its prompts {sorted(prompts)}")
    if not include_prompt and any(prompts.values()):
        raise ExportError(
            f"{folder}: the Pooling module leaves the prompt out of the pooled tokens (include_prompt: false, "
            "as Instructor models do); ortmodels pools every token, so its vectors would differ. Export a "
            "checkpoint whose Pooling config has include_prompt true, or one without prompts."
        )
    return prompts, default


#: Keys of ``config.json`` / ``config_sentence_transformers.json`` that list Matryoshka sizes.
_MATRYOSHKA_KEYS = ("matryoshka_dimensions", "matryoshka_dims")
_CARD_DIMS = re.compile(r'"?matryoshka_dim(?:ension)?s"?\s*[:=]\s*\[([0-9,\s]+)\]')


def _card_tags(text: str) -> list[str]:
    """The ``tags:`` list of a model card's YAML front matter (read without a YAML library)."""
    if not text.startswith("---"):
        return []
    front = text[3:].split("\n---", 1)[0]
    tags: list[str] = []
    in_tags = False
    for line in front.splitlines():
        if re.match(r"^tags\s*:", line):
            in_tags = True
            inline = line.split(":", 1)[1].strip()
            if inline.startswith("["):
                return [t.strip().strip("'\"") for t in inline.strip("[]").split(",") if t.strip()]
            continue
        if in_tags:
            item = re.match(r"^\s*-\s*(.+?)\s*$", line)
            if item:
                tags.append(item.group(1).strip("'\""))
            elif line.strip() and not line.startswith((" ", "\t")):
                in_tags = False
    return tags


def _sizes(values: Any, dimension: int) -> list[int]:
    return sorted({v for v in values if isinstance(v, int) and 0 < v <= dimension}, reverse=True)


def read_matryoshka(folder: Path, dimension: int) -> Matryoshka | None:
    """Whether the checkpoint says it was trained for truncation, and at which sizes.

    sentence-transformers' generated cards tag ``loss:MatryoshkaLoss`` and list
    ``matryoshka_dims`` in the loss's parameters; hand-written cards (nomic, mxbai) tag
    ``matryoshka``; a few configs list ``matryoshka_dimensions``. Nothing found: ``None``,
    and asking for fewer dimensions stays an error unless the caller opts in.
    """
    for name in ("config_sentence_transformers.json", "config.json"):
        path = folder / name
        if path.is_file():
            data = read_json(path)
            for key in _MATRYOSHKA_KEYS:
                if isinstance(data.get(key), list):
                    return Matryoshka(source=f"{name}: {key}", dimensions=_sizes(data[key], dimension))
    card = folder / "README.md"
    if not card.is_file():
        return None
    text = card.read_text(encoding="utf-8", errors="replace")[:1_000_000]
    tag = next((t for t in _card_tags(text) if "matryoshka" in t.lower()), None)
    listed = _CARD_DIMS.search(text)
    if tag is None and listed is None:
        return None
    sizes = _sizes([int(v) for v in re.findall(r"\d+", listed.group(1))], dimension) if listed else []
    source = f"README.md: tags {tag}" if tag is not None else "README.md: matryoshka_dims"
    return Matryoshka(source=source, dimensions=sizes)

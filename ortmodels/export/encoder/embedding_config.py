"""Read how a checkpoint pools and normalises from its sentence-transformers files.

``modules.json`` lists the pipeline (Transformer, Pooling, Normalize); the Pooling
module's ``config.json`` names the mode; ``sentence_bert_config.json`` gives the
sequence limit. A plain Hugging Face encoder without them gets mean pooling and
normalisation, the common choice, with a warning.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from ...errors import ExportError, ModelFileError
from ...store import read_json

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
    return PoolingConfig(mode, normalize, max_len)


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

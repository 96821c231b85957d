"""Tiny random-weight cross-encoders (one-label ``*ForSequenceClassification``), built offline.

The same vocabularies and tokenizers as `tests.tiny_models` (BERT, XLM-RoBERTa, MPNet), with
a one-label classifier head, as sentence-transformers' `CrossEncoder` checkpoints are. The
activation is the one sentence-transformers would apply: ``"sigmoid"`` (its default for one
label, no setting written) or ``"identity"`` (written into ``config.json`` the way
sentence-transformers 4+ saves it).
"""

from __future__ import annotations

from pathlib import Path

from tests.tiny_models import _family_parts

ACTIVATIONS = {"sigmoid": "torch.nn.modules.activation.Sigmoid", "identity": "torch.nn.modules.linear.Identity"}


def build_tiny_cross_encoder(folder: Path, family: str, activation: str = "sigmoid", *, labels: int = 1,
                             seed: int = 0) -> Path:
    """Write a tiny random ``{Bert,XLMRoberta,MPNet}ForSequenceClassification`` checkpoint into ``folder``."""
    import torch
    from transformers import AutoModelForSequenceClassification

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config, tokenizer = _family_parts(family)
    config.num_labels = labels
    if activation == "identity":
        config.sentence_transformers = {"activation_fn": ACTIVATIONS["identity"]}
    elif activation != "sigmoid":
        raise ValueError(f"Unknown activation {activation!r}; expected one of {', '.join(ACTIVATIONS)}.")
    # transformers' default initialisation (0.02) gives every pair nearly the same score: wider
    # random weights spread the scores, so that an order between documents is decided.
    config.initializer_range = 0.5
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(config).eval()
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    for required in ("config.json", "model.safetensors", "tokenizer.json"):
        if not (folder / required).is_file():
            raise RuntimeError(f"build_tiny_cross_encoder wrote no {required} into {folder}")
    return folder

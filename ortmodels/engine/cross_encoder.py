"""Cross-encoder inference: (query, document) pairs → one relevance score each.

The pair is tokenized as the checkpoint's tokenizer joins two texts (``[CLS] q [SEP] d [SEP]``,
``<s> q </s></s> d </s>``), cut to the export's limit the longer text first (transformers'
``longest_first``, as sentence-transformers' ``CrossEncoder`` cuts), batched by length as
`encoder.length_batches` batches sentences, and the classifier's one logit goes through the
activation the manifest names (sigmoid or identity).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ModelFileError
from .encoder import EncoderGraph, length_batches, pad_batch

if TYPE_CHECKING:
    import onnxruntime as ort
    from tokenizers import Tokenizer

ACTIVATIONS = ("sigmoid", "identity")


def activate(logits: np.ndarray, activation: str) -> np.ndarray:
    """The score sentence-transformers' ``CrossEncoder.predict`` gives for these logits."""
    logits = logits.astype(np.float32, copy=False)
    if activation == "sigmoid":
        return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
    if activation == "identity":
        return logits
    raise ValueError(f"Unknown activation {activation!r}; expected one of {', '.join(ACTIVATIONS)}.")


class CrossEncoderRunner(EncoderGraph):
    """Tokenize pairs, batch by length, run the classifier graph, activate: one job, no life cycle."""

    def __init__(self, session: ort.InferenceSession, tokenizer: Tokenizer, spec: Any) -> None:
        super().__init__(session, tokenizer, spec, "logits")

    def check(self, folder: Path) -> None:
        """The probe at load, and one score per pair from the graph."""
        logits = self._probe(folder)
        if logits.ndim != 2 or logits.shape[-1] != 1:
            raise ModelFileError(folder / "model.onnx", f"The graph gives {list(logits.shape)} logits per pair, "
                                 "not one score", "Re-run 'ortmodels export' on a one-label cross-encoder.")

    def encode(self, pairs: list[tuple[str, str]]) -> list[Any]:
        """The tokenized pairs (ids and type ids), each text cut first (`EncoderGraph.cut`)."""
        return self.tokenizer.encode_batch([(self.cut(q), self.cut(d)) for q, d in pairs])  # type: ignore[no-any-return]

    def score_counted(self, pairs: list[tuple[str, str]], batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Scores of ``pairs`` in their order (float32) and each pair's token count."""
        encodings = self.encode(pairs)
        lengths = [len(e.ids) for e in encodings]
        scores = np.empty(len(pairs), dtype=np.float32)
        for rows in length_batches(lengths, batch_size):
            input_ids, attention_mask = pad_batch([encodings[r].ids for r in rows], self.spec.pad_token_id)
            type_ids, _ = pad_batch([encodings[r].type_ids for r in rows], 0)
            logits = self._run(input_ids, attention_mask, type_ids)
            scores[rows] = activate(logits[:, 0], self.spec.activation)
        return scores, np.asarray(lengths, dtype=np.int64)

    def score(self, pairs: list[tuple[str, str]], batch_size: int) -> np.ndarray:
        """Scores of ``pairs`` in their order, float32."""
        return self.score_counted(pairs, batch_size)[0]

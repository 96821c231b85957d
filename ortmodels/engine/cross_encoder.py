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
from .encoder import length_batches, pad_batch
from .tokenizer import highest_id, max_token_chars

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


class CrossEncoderRunner:
    """Tokenize pairs, batch by length, run the classifier graph, activate: one job, no life cycle."""

    def __init__(self, session: ort.InferenceSession, tokenizer: Tokenizer, spec: Any) -> None:
        self.session = session
        self.tokenizer = tokenizer
        self.spec = spec
        self._needs_token_types = any(i.name == "token_type_ids" for i in session.get_inputs())
        outputs = [o.name for o in session.get_outputs()]
        self._output = "logits" if "logits" in outputs else outputs[0]
        #: Each text is cut to this many characters before tokenizing: the pair keeps at most
        #: ``max_seq_length`` tokens, and a 10 MB document would take seconds to tokenize.
        self.text_chars = (spec.max_seq_length + 8) * max_token_chars(tokenizer)

    def check(self, folder: Path) -> None:
        """Run the graph once at load on the tokenizer's highest id and the pad id: a tokenizer,
        manifest or graph that do not fit together are named now, not at the first call."""
        size = highest_id(self.tokenizer) + 1
        manifest = folder.parent / "manifest.json"
        if self.spec.pad_token_id >= size:
            raise ModelFileError(manifest, f"The manifest's pad_token_id {self.spec.pad_token_id} is outside "
                                 f"the tokenizer's {size} tokens", "Re-run 'ortmodels export' for this model.")
        input_ids = np.array([[self.spec.pad_token_id, size - 1]], dtype=np.int64)
        try:
            logits = self.session.run([self._output], self._feeds(input_ids, np.ones_like(input_ids), None))[0]
        except Exception as exc:  # onnxruntime's own Fail: an index past the embedding table
            raise ModelFileError(
                folder / "tokenizer.json",
                f"The graph refuses the tokenizer's highest id {size - 1} ({str(exc)[:200]})",
                "The tokenizer and model.onnx come from different checkpoints: re-run 'ortmodels export'.",
            ) from None
        if logits.ndim != 2 or logits.shape[-1] != 1:
            raise ModelFileError(folder / "model.onnx", f"The graph gives {list(logits.shape)} logits per pair, "
                                 "not one score", "Re-run 'ortmodels export' on a one-label cross-encoder.")

    def _feeds(self, input_ids: np.ndarray, attention_mask: np.ndarray,
               type_ids: np.ndarray | None) -> dict[str, np.ndarray]:
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self._needs_token_types:
            feeds["token_type_ids"] = type_ids if type_ids is not None else np.zeros_like(input_ids)
        return feeds

    def encode(self, pairs: list[tuple[str, str]]) -> list[Any]:
        """The tokenized pairs (ids and type ids), each text cut to `text_chars` first."""
        bound = self.text_chars
        return self.tokenizer.encode_batch([(q[:bound], d[:bound]) for q, d in pairs])  # type: ignore[no-any-return]

    def score_counted(self, pairs: list[tuple[str, str]], batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Scores of ``pairs`` in their order (float32) and each pair's token count."""
        encodings = self.encode(pairs)
        lengths = [len(e.ids) for e in encodings]
        scores = np.empty(len(pairs), dtype=np.float32)
        for rows in length_batches(lengths, batch_size):
            input_ids, attention_mask = pad_batch([encodings[r].ids for r in rows], self.spec.pad_token_id)
            type_ids, _ = pad_batch([encodings[r].type_ids for r in rows], 0)
            logits = self.session.run([self._output], self._feeds(input_ids, attention_mask, type_ids))[0]
            scores[rows] = activate(logits[:, 0], self.spec.activation)
        return scores, np.asarray(lengths, dtype=np.int64)

    def score(self, pairs: list[tuple[str, str]], batch_size: int) -> np.ndarray:
        """Scores of ``pairs`` in their order, float32."""
        return self.score_counted(pairs, batch_size)[0]

"""One forward step of an exported decoder, with its KV cache kept as ONNX Runtime values.

The graph (ours from `export/decoder_graph.py`, or optimum's ``text-generation-with-past``)
takes ``past_key_values.*`` and returns ``present.*``. Each step binds the previous step's
outputs directly as the next step's inputs through IO binding: the cache never passes
through numpy, and on CUDA it never leaves the GPU. Graphs with a ``logits_to_keep`` input
compute logits for the last position only when generating (a long prompt's prefill skips
the vocabulary projection of every other position); `all_logits` asks for all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnxruntime as ort

_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(bfloat16)": np.float32}
_PAST = "past_key_values."
_PRESENT = "present."


@dataclass
class DecoderState:
    """One conversation's cache: the values from the last step and how many tokens they hold."""

    past: list[ort.OrtValue] | None = None
    length: int = 0
    tokens: list[int] = field(default_factory=list)


class DecoderSession:
    """Runs prefill and decode steps of a decoder graph on one session (thread-safe)."""

    def __init__(self, session: ort.InferenceSession, device: str = "cpu") -> None:
        self.session = session
        inputs = {i.name: i for i in session.get_inputs()}
        self.past_names = sorted((n for n in inputs if n.startswith(_PAST)), key=_layer_order)
        self.present_names = [_PRESENT + n[len(_PAST):] for n in self.past_names]
        self.uses_position_ids = "position_ids" in inputs
        self.keeps_logits = "logits_to_keep" in inputs  # our own graphs: prefill computes one row
        self.device_type = "cuda" if device == "cuda" else "cpu"
        if self.past_names:
            first = inputs[self.past_names[0]]
            dims = [d if isinstance(d, int) else 0 for d in first.shape]
            dims[0], dims[2] = 1, 0  # batch 1, nothing cached yet
            self._empty_past = np.zeros(dims, dtype=_NUMPY_TYPES.get(first.type, np.float32))
        self.logits_name = next(o.name for o in session.get_outputs() if o.name == "logits")

    def forward(self, state: DecoderState, token_ids: list[int]) -> np.ndarray:
        """Feed ``token_ids`` after what ``state`` holds; returns the last position's logits."""
        return self._run(state, token_ids, keep=1)[0, -1]

    def all_logits(self, token_ids: list[int]) -> np.ndarray:
        """Logits for every position of one sequence, from an empty cache ([len, vocab])."""
        return self._run(DecoderState(), token_ids, keep=0)[0]

    def _run(self, state: DecoderState, token_ids: list[int], keep: int) -> np.ndarray:
        total = state.length + len(token_ids)
        io = self.session.io_binding()
        io.bind_cpu_input("input_ids", np.asarray([token_ids], dtype=np.int64))
        io.bind_cpu_input("attention_mask", np.ones((1, total), dtype=np.int64))
        if self.uses_position_ids:
            io.bind_cpu_input("position_ids", np.arange(state.length, total, dtype=np.int64)[None])
        if self.keeps_logits:
            io.bind_cpu_input("logits_to_keep", np.array([keep], dtype=np.int64))  # 0: every position
        if state.past is None:
            for name in self.past_names:
                io.bind_cpu_input(name, self._empty_past)
        else:
            for name, value in zip(self.past_names, state.past):
                io.bind_ortvalue_input(name, value)
        io.bind_output(self.logits_name, "cpu")  # read by numpy every step, on any device
        for name in self.present_names:
            io.bind_output(name, self.device_type)
        self.session.run_with_iobinding(io)
        outputs = io.get_outputs()
        state.past = outputs[1:]
        state.length = total
        state.tokens.extend(token_ids)
        logits = outputs[0].numpy()
        return logits if logits.dtype == np.float32 else logits.astype(np.float32)


def _layer_order(name: str) -> tuple[int, str]:
    parts = name.split(".")
    return (int(parts[1]) if parts[1].isdigit() else 0, parts[-1])

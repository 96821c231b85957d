"""One forward step of an exported decoder: a single sequence, or a batch of them.

The graph (ours from `export/decoder/graph.py`, or optimum's ``text-generation-with-past``)
takes ``past_key_values.*`` and returns ``present.*``. A single sequence (`forward`) binds
the previous step's outputs directly as the next step's inputs through IO binding: the
cache never passes through numpy, and on CUDA it never leaves the GPU. Graphs with a
``logits_to_keep`` input compute logits for the last position only when generating (a long
prompt's prefill skips the vocabulary projection of every other position); `all_logits`
asks for all of them.

Our own graph also decodes several sequences of different lengths in one step
(`decode_batch`): GroupQueryAttention reads each row's length from the attention mask
(``seqlens_k`` = ones in the row - 1) and writes the row's new key/value at that position,
so a right-padded past works as is. A prompt on top of a cache (``sequence_length > 1``
with a past) must be batch 1 in GroupQueryAttention; prefill is therefore always batch 1.

Sliding-window layers (graphs with ``sliding_attention_mask``, see `export/decoder/graph.py`)
hold only their window: their caches keep the last ``window - 1`` tokens a next query needs
(`DecoderSession.keep`), plus what was added since they were last cut, and are bound under
their own mask; ``attention_mask`` still spans the whole sequence (global layers, positions).
A cache list therefore mixes widths: a global layer holds every token, a sliding one the
last few (`sliding`: which cache inputs slide). Here a single sequence's sliding caches are
cut once they pass ``keep`` by ``trim_slack`` (`TRIM_SLACK`), and a cut cache always starts
at a multiple of ``trim_slack`` (`cut_to`): attention then sums the same values in the same
groups as over the uncut cache, so the logits are equal bit for bit (measured on the tiny
Gemma 3 in fp32 and int4, 200 tokens, cut quanta 4 to 128; a cut to exactly ``keep``
positions moved fp32 logits by 5e-6 and int4 ones by 2e-4, enough to flip an int4 near-tie
depending on when the cut came).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import onnxruntime as ort

_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(bfloat16)": np.float32}
_PAST = "past_key_values."
_PRESENT = "present."
SLIDING_MASK = "sliding_attention_mask"  # export/decoder/graph.py's name (engine/ imports no export code)
LAYER_WINDOWS = "ortmodels.layer_windows"  # the graph's metadata key (export/decoder/graph.py's)
#: Positions a sliding cache may hold past ``keep`` before it is cut, and the quantum its start
#: is aligned to: one cut (a copy of at most ``keep + TRIM_SLACK`` positions) per this many tokens.
TRIM_SLACK = 256


@dataclass
class DecoderState:
    """One conversation's cache: the values from the last step and how many tokens they hold."""

    past: list[ort.OrtValue] | None = None
    length: int = 0
    tokens: list[int] = field(default_factory=list)
    #: Tokens the sliding layers' caches hold (the last ones of ``length``); 0 without such layers.
    window_length: int = 0
    #: The arrays behind cut caches' OrtValues, by cache index: ``OrtValue.numpy()`` of a value made
    #: from numpy is a view that does not keep that array alive, so `prefill` hands these out instead.
    cut: dict[int, np.ndarray] = field(default_factory=dict)


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
        self.sliding: list[bool] = [False] * len(self.past_names)
        self.keep = 0
        self.trim_slack = TRIM_SLACK  # tests lower it to cut often
        if SLIDING_MASK in inputs:
            self.sliding, self.keep = sliding_layout(
                self.past_names, session.get_modelmeta().custom_metadata_map.get(LAYER_WINDOWS))

    @property
    def windowed(self) -> bool:
        """Whether some cache inputs hold only their window (`sliding`, `keep`)."""
        return any(self.sliding)

    @property
    def batches(self) -> bool:
        """Whether rows of different lengths can decode in one step (our own GQA graph)."""
        return self.keeps_logits and not self.uses_position_ids and bool(self.past_names)

    @property
    def kv_dims(self) -> tuple[int, int, np.dtype]:
        """(kv heads, head size, dtype) of one layer's key or value cache."""
        return self._empty_past.shape[1], self._empty_past.shape[3], self._empty_past.dtype

    def forward(self, state: DecoderState, token_ids: list[int]) -> np.ndarray:
        """Feed ``token_ids`` after what ``state`` holds; returns the last position's logits."""
        return self._run(state, token_ids, keep=1)[0, -1]

    def all_logits(self, token_ids: list[int]) -> np.ndarray:
        """Logits for every position of one sequence, from an empty cache ([len, vocab])."""
        return self._run(DecoderState(), token_ids, keep=0)[0]

    def logits_in_pieces(self, token_ids: list[int], rows: int) -> Iterator[np.ndarray]:
        """``all_logits`` of one sequence, ``rows`` positions per run on the growing cache.

        For the export's parity pass: one run over 512 tokens made [512, vocabulary] logits
        and as large temporaries (0.5 GB each at a 262k vocabulary).
        """
        state = DecoderState()
        for start in range(0, len(token_ids), rows):
            yield self._run(state, token_ids[start : start + rows], keep=0)[0]

    def prefill(
        self, token_ids: list[int], past: list[np.ndarray] | None = None, length: int | None = None
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Batch-1 prompt (or the rest of one) after ``past`` ([1, kv, n, head] per cache input).

        ``length``: the tokens ``past`` stands for (a sliding layer's array holds only the last
        of them); by default the widest array's width, which is right for caches without sliding layers.
        Returns the last position's logits and the new cache as numpy arrays (views that keep
        ONNX Runtime's buffers alive), ready to be copied into a batch slot or a prompt cache.
        """
        state = DecoderState()
        if past is not None and max(a.shape[2] for a in past):
            state.past = [ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(a)) for a in past]
            state.length = max(a.shape[2] for a in past) if length is None else length
            state.window_length = self.window_width(past)
        logits = self.forward(state, token_ids)
        return logits, [state.cut[i] if i in state.cut else value.numpy() for i, value in enumerate(state.past or [])]

    def cut_to(self, length: int, held: int) -> int:
        """Positions to drop from the front of a sliding cache that holds the last ``held`` of
        ``length`` tokens: it keeps at least ``keep``, and starts at a multiple of ``trim_slack``
        (see the module docstring)."""
        start = max(0, length - self.keep) // self.trim_slack * self.trim_slack
        return max(0, start - (length - held))

    def window_width(self, past: list[np.ndarray]) -> int:
        """Tokens the sliding layers of ``past`` hold (0 without sliding layers)."""
        return next((a.shape[2] for a, sliding in zip(past, self.sliding) if sliding), 0)

    def sliding_mask(self, lengths: np.ndarray) -> np.ndarray:
        """The sliding layers' mask for a step after rows holding ``lengths`` tokens there (each + 1)."""
        return (np.arange(int(lengths.max()) + 1)[None, :] <= lengths[:, None]).astype(np.int64)

    def decode_batch(self, past: list[ort.OrtValue], lengths: np.ndarray, token_ids: np.ndarray,
                     present: list[ort.OrtValue] | None = None,
                     window_lengths: np.ndarray | None = None) -> tuple[np.ndarray, list[ort.OrtValue]]:
        """One new token for each of B rows; row b holds ``lengths[b]`` tokens in ``past``.

        ``window_lengths`` (windowed graphs): the tokens row b's sliding caches hold (its last ones).

        ``past`` is right-padded: [B, kv, width, head], row b's tokens at [0, lengths[b]).
        With ``present`` None, ONNX Runtime writes a new cache one position wider (each row's
        new token at its own length); given the very values of ``past``, the step writes the
        new token into that buffer in place (GroupQueryAttention's shared past/present buffer),
        which needs ``width > max(lengths)``. Returns logits [B, vocab] and the new cache.
        """
        rows = len(token_ids)
        width = int(lengths.max()) + 1  # total_sequence_length: the longest row and its new token
        io = self.session.io_binding()
        io.bind_cpu_input("input_ids", np.asarray(token_ids, dtype=np.int64).reshape(rows, 1))
        io.bind_cpu_input("attention_mask", (np.arange(width)[None, :] <= lengths[:, None]).astype(np.int64))
        io.bind_cpu_input("logits_to_keep", np.array([1], dtype=np.int64))
        if self.windowed:
            io.bind_cpu_input(SLIDING_MASK, self.sliding_mask(lengths if window_lengths is None else window_lengths))
        for name, value in zip(self.past_names, past):
            io.bind_ortvalue_input(name, value)
        io.bind_output(self.logits_name, "cpu")
        for index, name in enumerate(self.present_names):
            if present is None:
                io.bind_output(name, self.device_type)
            else:
                io.bind_ortvalue_output(name, present[index])
        self.session.run_with_iobinding(io)
        outputs = io.get_outputs()
        logits = outputs[0].numpy()[:, -1]
        return (logits if logits.dtype == np.float32 else logits.astype(np.float32)), (present or outputs[1:])

    def extend(self, past: list[ort.OrtValue], length: int, token_ids: list[int],
               window_length: int = 0) -> np.ndarray:
        """Several tokens after the ``length`` one batch-1 row of ``past`` holds, with logits for each.

        ``past`` ([1, kv, width, head], width > length + len(token_ids)) is bound as both past
        and present, so the new keys/values are written in place at [length, length + n); the
        attention mask covers exactly the positions up to there, so whatever a buffer holds
        beyond them is never read. Speculative decoding's verification pass: returns logits
        [n, vocab], row i predicting the token after ``token_ids[i]`` (prefill kernels: on
        int4/int8 graphs these differ from a one-row step's, see DESIGN.md).
        """
        count = len(token_ids)
        io = self.session.io_binding()
        io.bind_cpu_input("input_ids", np.asarray([token_ids], dtype=np.int64))
        io.bind_cpu_input("attention_mask", np.ones((1, length + count), dtype=np.int64))
        io.bind_cpu_input("logits_to_keep", np.array([count], dtype=np.int64))
        if self.windowed:
            io.bind_cpu_input(SLIDING_MASK, np.ones((1, window_length + count), dtype=np.int64))
        for name, value in zip(self.past_names, past):
            io.bind_ortvalue_input(name, value)
        io.bind_output(self.logits_name, "cpu")
        for name, value in zip(self.present_names, past):
            io.bind_ortvalue_output(name, value)
        self.session.run_with_iobinding(io)
        logits = io.get_outputs()[0].numpy()[0]
        return logits if logits.dtype == np.float32 else logits.astype(np.float32)

    def _run(self, state: DecoderState, token_ids: list[int], keep: int) -> np.ndarray:
        total = state.length + len(token_ids)
        io = self.session.io_binding()
        io.bind_cpu_input("input_ids", np.asarray([token_ids], dtype=np.int64))
        io.bind_cpu_input("attention_mask", np.ones((1, total), dtype=np.int64))
        if self.uses_position_ids:
            io.bind_cpu_input("position_ids", np.arange(state.length, total, dtype=np.int64)[None])
        if self.keeps_logits:
            io.bind_cpu_input("logits_to_keep", np.array([keep], dtype=np.int64))  # 0: every position
        if self.windowed:
            io.bind_cpu_input(SLIDING_MASK, np.ones((1, state.window_length + len(token_ids)), dtype=np.int64))
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
        state.cut = {}
        if self.windowed:
            state.window_length += len(token_ids)
            if state.window_length > self.keep + self.trim_slack:
                drop = self.cut_to(total, state.window_length)
                state.cut = {i: np.ascontiguousarray(state.past[i].numpy()[:, :, drop:])
                             for i, sliding in enumerate(self.sliding) if sliding}
                state.past = [ort.OrtValue.ortvalue_from_numpy(state.cut[i]) if i in state.cut else v
                              for i, v in enumerate(state.past)]
                state.window_length -= drop
        logits = outputs[0].numpy()
        return logits if logits.dtype == np.float32 else logits.astype(np.float32)


def sliding_layout(past_names: list[str], layer_windows: str | None) -> tuple[list[bool], int]:
    """(which of ``past_names`` hold only their window, ``keep``) for a graph with a
    ``sliding_attention_mask``, from its ``ortmodels.layer_windows`` metadata (JSON: each layer's
    window or null). ``keep``: the tokens before a new query that any sliding layer may still
    see (each masks its own window)."""
    windows = json.loads(layer_windows or "[]")
    sliding = [bool(windows[_layer_order(n)[0]]) for n in past_names]
    return sliding, max(1, max(int(w) for w in windows if w) - 1) if any(sliding) else 0


def held_positions(keep: int, trim_slack: int = TRIM_SLACK) -> int:
    """The most positions a sliding cache holds between two cuts: ``keep``, the slack it may pass
    ``keep`` by, and the token being added (what a budget counts for its layers, per sequence)."""
    return keep + trim_slack + 1


def _layer_order(name: str) -> tuple[int, str]:
    parts = name.split(".")
    return (int(parts[1]) if parts[1].isdigit() else 0, parts[-1])

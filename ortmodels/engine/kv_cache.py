"""Where the KV cache of the requests being decoded lives between steps.

Three layouts behind one small interface (`add`, `remove`, `decode`):

- `SlotCache` (the default for our own graph): one preallocated buffer per cache input,
  [rows, kv, capacity, head], row b belonging to one request; each step binds that buffer
  as both ``past`` and ``present`` (GroupQueryAttention's shared buffer), so the step writes
  one new key/value per row in place and copies nothing. Buffers grow by whole blocks of
  positions and rows; a leaving request's row is filled with the last row, so the active
  rows stay a leading, contiguous block and the step runs on exactly B rows.
- `PaddedCache`: the past is ONNX Runtime's own output of the last step, right-padded to
  the longest row; the graph copies it into a present one position wider on every step,
  and a joining or leaving request re-pads it through numpy.
- `SerialCache`: one request at a time, for graphs that cannot batch rows of different
  lengths (optimum's, with ``position_ids``); it keeps `DecoderState`'s OrtValues.

Why slots: both batched layouts give exactly the solo greedy tokens (fp32 and int4, rows of
different lengths; tests/test_engine_batching.py), and the slots skip the per-step copy of
the whole cache (ONNX Runtime zero-fills and copies the past into every new present). On
the shared 2-core test machine, a decode step of 8 rows with 700-750-token pasts on
SmolLM2-135M took 0.48x the padded layout's time with slots, in int4 (55 vs 115 ms) and in
fp32 (57 vs 120 ms) (noisy, medians of 2 rounds; `benchmarks/bench_concurrency.py --parts kv`).
Joins and leaves cost one row copy with slots, a copy of the whole cache padded.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import onnxruntime as ort

from .decoder import DecoderSession, DecoderState

_BLOCK = 256  # positions added when a slot buffer grows: rare regrowth, little waste


class KVCache(Protocol):
    """The cache of the requests being decoded, one row each, keyed by any hashable."""

    capacity: int

    @property
    def allocated(self) -> tuple[int, int]: ...

    @property
    def keys(self) -> list[object]: ...

    def add(self, key: object, past: list[np.ndarray], length: int) -> None: ...

    def remove(self, key: object) -> None: ...

    def decode(self, token_ids: list[int]) -> np.ndarray: ...


class _Rows:
    """Key ↔ row bookkeeping shared by the batched layouts."""

    def __init__(self, decoder: DecoderSession, capacity: int) -> None:
        self.decoder, self.capacity = decoder, capacity
        self._keys: list[object] = []
        self._lengths: list[int] = []

    @property
    def keys(self) -> list[object]:
        return list(self._keys)

    @property
    def allocated(self) -> tuple[int, int]:
        return len(self._keys), max(self._lengths, default=0)

    def _check_room(self, key: object) -> None:
        if len(self._keys) >= self.capacity:
            raise RuntimeError(f"KV cache full ({self.capacity} rows); the scheduler admits no more than that.")
        if key in self._keys:
            raise RuntimeError("This request already has a row in the KV cache.")


class SlotCache(_Rows):
    """Preallocated per-row buffers shared by past and present (see the module docstring)."""

    def __init__(self, decoder: DecoderSession, capacity: int) -> None:
        super().__init__(decoder, capacity)
        self._buffers: list[np.ndarray] = []
        self._values: list[ort.OrtValue] | None = None

    @property
    def allocated(self) -> tuple[int, int]:
        """(rows, positions) the buffers hold now: memory is rows × positions × bytes per token."""
        return (self._buffers[0].shape[0], self._buffers[0].shape[2]) if self._buffers else (0, 0)

    @staticmethod
    def rounded(positions: int) -> int:
        """Positions a buffer gets for ``positions``: whole blocks."""
        return -(-positions // _BLOCK) * _BLOCK

    def add(self, key: object, past: list[np.ndarray], length: int) -> None:
        self._check_room(key)
        row = len(self._keys)
        self._ensure(row + 1, length + 1)
        for buffer, array in zip(self._buffers, past):
            buffer[row, :, :length] = array[0, :, :length]
        self._keys.append(key)
        self._lengths.append(length)
        self._values = None

    def remove(self, key: object) -> None:
        row, last = self._keys.index(key), len(self._keys) - 1
        if row != last:
            used = self._lengths[last]
            for buffer in self._buffers:
                buffer[row, :, :used] = buffer[last, :, :used]
            self._keys[row], self._lengths[row] = self._keys[last], self._lengths[last]
        self._keys.pop()
        self._lengths.pop()
        self._values = None
        if not self._keys:
            self._buffers = []  # an idle engine holds no cache memory

    def decode(self, token_ids: list[int]) -> np.ndarray:
        lengths = np.asarray(self._lengths, dtype=np.int64)
        self._ensure(len(self._keys), int(lengths.max()) + 1)
        if self._values is None:  # views of the leading rows: contiguous, shared with numpy
            rows = len(self._keys)
            self._values = [ort.OrtValue.ortvalue_from_numpy(buffer[:rows]) for buffer in self._buffers]
        logits, _ = self.decoder.decode_batch(self._values, lengths, np.asarray(token_ids), self._values)
        self._lengths = [n + 1 for n in self._lengths]
        return logits

    def extend(self, key: object, token_ids: list[int]) -> np.ndarray:
        """Feed several tokens to ``key``'s row alone (batch 1); logits [n, vocab] for each.

        Speculative decoding's verification pass: the row's length grows by n, and `rewind`
        takes back the positions of rejected draft tokens.
        """
        row, count = self._keys.index(key), len(token_ids)
        length = self._lengths[row]
        self._ensure(len(self._keys), length + count + 1)
        if len(self._keys) == 1:
            if self._values is None:
                self._values = [ort.OrtValue.ortvalue_from_numpy(buffer[:1]) for buffer in self._buffers]
            values = self._values
        else:  # one row's contiguous block of each buffer
            values = [ort.OrtValue.ortvalue_from_numpy(buffer[row : row + 1]) for buffer in self._buffers]
        logits = self.decoder.extend(values, length, token_ids)
        self._lengths[row] = length + count
        return logits

    def rewind(self, key: object, length: int) -> None:
        """Keep only the first ``length`` positions of ``key``'s row (rejected draft tokens leave).

        No step reads past a row's length (the attention mask ends there and the next token is
        written at it); the dropped positions are zeroed all the same, so stale keys/values
        cannot be read by a later bug either.
        """
        row = self._keys.index(key)
        old = self._lengths[row]
        if not 0 <= length <= old:
            raise RuntimeError(f"Cannot rewind a row of {old} positions to {length}.")
        for buffer in self._buffers:
            buffer[row, :, length:old] = 0
        self._lengths[row] = length

    def _ensure(self, rows: int, positions: int) -> None:
        """Grow the buffers (copying what they hold) to at least ``rows`` × ``positions``."""
        have_rows = self._buffers[0].shape[0] if self._buffers else 0
        have_positions = self._buffers[0].shape[2] if self._buffers else 0
        if rows <= have_rows and positions <= have_positions:
            return
        new_rows = max(have_rows, rows)  # exact: the engine's memory bound counts these rows
        new_positions = max(have_positions, self.rounded(positions))
        kv_heads, head, dtype = self.decoder.kv_dims
        grown = []
        for old in self._buffers or [None] * len(self.decoder.past_names):
            buffer = np.zeros((new_rows, kv_heads, new_positions, head), dtype=dtype)
            if old is not None:
                buffer[: old.shape[0], :, : old.shape[2]] = old
            grown.append(buffer)
        self._buffers = grown
        self._values = None


class PaddedCache(_Rows):
    """ONNX Runtime's present of the last step as the next past, re-padded on joins and leaves."""

    def __init__(self, decoder: DecoderSession, capacity: int) -> None:
        super().__init__(decoder, capacity)
        self._past: list[ort.OrtValue] = []

    def add(self, key: object, past: list[np.ndarray], length: int) -> None:
        self._check_room(key)
        current = [value.numpy() for value in self._past]
        width = max([length, *self._lengths])
        rows = len(self._keys) + 1
        kv_heads, head, dtype = self.decoder.kv_dims
        merged = []
        for index, array in enumerate(past):
            buffer = np.zeros((rows, kv_heads, width, head), dtype=dtype)
            if current:
                buffer[: rows - 1, :, : current[index].shape[2]] = current[index][:, :, :width]
            buffer[rows - 1, :, :length] = array[0, :, :length]
            merged.append(buffer)
        self._keys.append(key)
        self._lengths.append(length)
        self._past = [ort.OrtValue.ortvalue_from_numpy(a) for a in merged]

    def remove(self, key: object) -> None:
        row = self._keys.index(key)
        self._keys.pop(row)
        self._lengths.pop(row)
        if not self._keys:
            self._past = []
            return
        width = max(self._lengths)
        keep = [r for r in range(len(self._keys) + 1) if r != row]
        self._past = [ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v.numpy()[keep, :, :width]))
                      for v in self._past]

    def decode(self, token_ids: list[int]) -> np.ndarray:
        lengths = np.asarray(self._lengths, dtype=np.int64)
        logits, self._past = self.decoder.decode_batch(self._past, lengths, np.asarray(token_ids))
        self._lengths = [n + 1 for n in self._lengths]
        return logits


class SerialCache:
    """One request at a time, its cache as `DecoderState` (graphs that cannot batch)."""

    capacity = 1

    def __init__(self, decoder: DecoderSession) -> None:
        self.decoder = decoder
        self._key: object | None = None
        self._state = DecoderState()

    @property
    def keys(self) -> list[object]:
        return [] if self._key is None else [self._key]

    @property
    def allocated(self) -> tuple[int, int]:
        return (0, 0) if self._key is None else (1, self._state.length)

    def add(self, key: object, past: list[np.ndarray], length: int) -> None:
        if self._key is not None:
            raise RuntimeError("SerialCache holds one request at a time.")
        self._key = key
        self._state = DecoderState(
            past=[ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(a[:, :, :length])) for a in past],
            length=length,
        )

    def remove(self, key: object) -> None:
        if key == self._key:
            self._key, self._state = None, DecoderState()

    def decode(self, token_ids: list[int]) -> np.ndarray:
        return self.decoder.forward(self._state, [int(token_ids[0])])[None]


def bytes_per_token(decoder: DecoderSession) -> int:
    """Cache bytes one token takes across every layer's key and value."""
    kv_heads, head, dtype = decoder.kv_dims
    return kv_heads * head * np.dtype(dtype).itemsize * len(decoder.past_names)

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

Sliding-window layers (Gemma 2/3, Mistral; `DecoderSession.sliding`) hold only their window:
their caches have buffers of their own, each row's last ``window_length`` tokens at the
start, bound under the graph's ``sliding_attention_mask``; when a row would pass ``keep +
trim_slack`` there, every row drops the front of its sliding caches, keeping at least
``keep`` positions (the window less one: what the next query may see), so that they start
at a multiple of ``trim_slack`` (`_Rows._cut`, `DecoderSession.cut_to`). Past the window a
token costs only the global layers' bytes; `bytes_for` and `allocated_bytes`, which the
engine's ``kv_cache_bytes`` bound and gauges count, say so. Rotary positions stay absolute
(the graph computes them from ``attention_mask``), and the aligned start keeps the logits
bit for bit those of an uncut cache (see `engine/decoder.py`), so when a row is cut (which
depends on the other rows) changes nothing, in int4 too (tests/test_sliding_window_cache.py).
"""

from __future__ import annotations

import sys
from typing import Protocol

import numpy as np
import onnxruntime as ort

from .decoder import DecoderSession, DecoderState, held_positions

_BLOCK = 256  # positions added when a slot buffer grows: rare regrowth, little waste


class KVCache(Protocol):
    """The cache of the requests being decoded, one row each, keyed by any hashable."""

    capacity: int

    @property
    def allocated_bytes(self) -> int: ...

    def bytes_for(self, rows: int, positions: int) -> int: ...

    def grown_bytes(self, rows: int, positions: int) -> int: ...

    @property
    def keys(self) -> list[object]: ...

    def add(self, key: object, past: list[np.ndarray], length: int) -> None: ...

    def remove(self, key: object) -> None: ...

    def decode(self, token_ids: list[int]) -> np.ndarray: ...


class _Rows:
    """Key ↔ row bookkeeping shared by the batched layouts.

    ``_lengths``: the tokens each row holds; ``_windows``: of those, the last ones its sliding
    layers' caches hold (windowed graphs, `DecoderSession.sliding`; else equal to ``_lengths``
    and unused). Sliding caches are cut back to ``decoder.keep`` positions when they would pass
    ``keep + trim_slack``, all rows at once (`_cut`), so their buffers stay that wide.
    """

    def __init__(self, decoder: DecoderSession, capacity: int) -> None:
        self.decoder, self.capacity = decoder, capacity
        self._keys: list[object] = []
        self._lengths: list[int] = []
        self._windows: list[int] = []
        self._full_bytes, self._window_bytes = layer_bytes(decoder)
        #: The most positions a sliding buffer needs between cuts (a row's new token included).
        self.window_capacity = held_positions(decoder.keep, decoder.trim_slack)

    @property
    def keys(self) -> list[object]:
        return list(self._keys)

    @property
    def allocated_bytes(self) -> int:
        """Bytes the rows' caches take: every row as long as the longest, as a padded batch is."""
        rows = len(self._keys)
        return rows * (max(self._lengths, default=0) * self._full_bytes
                       + max(self._windows, default=0) * self._window_bytes)

    def bytes_for(self, rows: int, positions: int) -> int:
        """Bytes ``rows`` rows of up to ``positions`` tokens may take (what a reservation counts)."""
        return rows * (positions * self._full_bytes + min(positions, self.window_capacity) * self._window_bytes)

    def grown_bytes(self, rows: int, positions: int) -> int:
        """Bytes held once ``rows`` rows of up to ``positions`` tokens are in (what stays allocated counted)."""
        return max(self.bytes_for(rows, positions), self.allocated_bytes)

    def _check_room(self, key: object) -> None:
        if len(self._keys) >= self.capacity:
            raise RuntimeError(f"KV cache full ({self.capacity} rows); the scheduler admits no more than that.")
        if key in self._keys:
            raise RuntimeError("This request already has a row in the KV cache.")

    def _window_of(self, past: list[np.ndarray], length: int) -> int:
        """Tokens ``past``'s sliding caches hold (``length`` without sliding layers)."""
        return self.decoder.window_width(past) if self.decoder.windowed else length

    def _cut(self, arrays: list[np.ndarray], needed: int) -> None:
        """Drop the front of the sliding caches (in place, rows 0..n) when some row's window plus
        ``needed`` new positions would pass `window_capacity`: each row then starts at the last
        multiple of ``trim_slack`` that leaves it ``keep`` positions (`DecoderSession.cut_to`)."""
        if not self.decoder.windowed or max(self._windows, default=0) + needed <= self.window_capacity:
            return
        for row, (length, held) in enumerate(zip(self._lengths, self._windows)):
            drop = self.decoder.cut_to(length, held)
            if drop:
                for array, sliding in zip(arrays, self.decoder.sliding):
                    if sliding:  # overlapping ranges: numpy copies through a buffer
                        array[row, :, : held - drop] = array[row, :, drop:held]
                self._windows[row] = held - drop


class SlotCache(_Rows):
    """Preallocated per-row buffers shared by past and present (see the module docstring).

    A windowed graph's sliding caches get buffers of their own width (at most
    `window_capacity` positions, verification passes included: `verify_room`), cut in place.
    """

    def __init__(self, decoder: DecoderSession, capacity: int) -> None:
        super().__init__(decoder, capacity)
        self._buffers: list[np.ndarray] = []
        self._values: list[ort.OrtValue] | None = None

    @property
    def allocated_bytes(self) -> int:
        """Bytes the buffers take now (they stay allocated until the batch empties)."""
        return sum(buffer.nbytes for buffer in self._buffers)

    def bytes_for(self, rows: int, positions: int) -> int:
        """Bytes buffers for ``rows`` × ``positions`` take, in whole blocks as `_ensure` allocates them."""
        return super().bytes_for(rows, self.rounded(positions))

    def grown_bytes(self, rows: int, positions: int) -> int:
        """Bytes the buffers take once grown for ``rows`` × ``positions`` (they never shrink while
        the batch has rows: `_ensure` keeps every row and position already there)."""
        if not self._buffers:
            return self.bytes_for(rows, positions)
        rows = max(rows, self._buffers[0].shape[0])
        total = 0
        for buffer, sliding in zip(self._buffers, self._sliding()):
            want = min(self.rounded(positions), self.window_capacity) if sliding else self.rounded(positions)
            total += rows * max(want, buffer.shape[2]) * buffer[0, :, :1].nbytes
        return total

    @staticmethod
    def rounded(positions: int) -> int:
        """Positions a buffer gets for ``positions``: whole blocks."""
        return -(-positions // _BLOCK) * _BLOCK

    def add(self, key: object, past: list[np.ndarray], length: int) -> None:
        self._check_room(key)
        self._cut(self._buffers, 1)  # the rows already here, before the new one joins the count
        row = len(self._keys)
        window = self._window_of(past, length)
        self._keys.append(key)
        self._lengths.append(length)
        self._windows.append(window)
        self._ensure(row + 1, length + 1, 1)
        for buffer, array in zip(self._buffers, past):
            width = array.shape[2]
            buffer[row, :, :width] = array[0]
        self._values = None

    def remove(self, key: object) -> None:
        row, last = self._keys.index(key), len(self._keys) - 1
        if row != last:
            for buffer, sliding in zip(self._buffers, self._sliding()):
                used = self._windows[last] if sliding else self._lengths[last]
                buffer[row, :, :used] = buffer[last, :, :used]
            self._keys[row], self._lengths[row] = self._keys[last], self._lengths[last]
            self._windows[row] = self._windows[last]
        self._keys.pop()
        self._lengths.pop()
        self._windows.pop()
        self._values = None
        if not self._keys:
            self._buffers = []  # an idle engine holds no cache memory

    def decode(self, token_ids: list[int]) -> np.ndarray:
        self._cut(self._buffers, 1)
        lengths = np.asarray(self._lengths, dtype=np.int64)
        self._ensure(len(self._keys), int(lengths.max()) + 1, 1)
        if self._values is None:  # views of the leading rows: contiguous, shared with numpy
            rows = len(self._keys)
            self._values = [ort.OrtValue.ortvalue_from_numpy(buffer[:rows]) for buffer in self._buffers]
        logits, _ = self.decoder.decode_batch(self._values, lengths, np.asarray(token_ids), self._values,
                                              np.asarray(self._windows, dtype=np.int64))
        self._lengths = [n + 1 for n in self._lengths]
        self._windows = [n + 1 for n in self._windows]
        return logits

    def verify_room(self, key: object) -> int:
        """The most tokens `extend` may feed ``key``'s row (at least 1): with sliding layers, as
        many as fit after the cut `extend` makes without passing `window_capacity`, the width a
        reservation counts (`bytes_for`), so a draft never widens them past it. Near a cut's
        boundary that is fewer than a full draft; ``sys.maxsize`` without sliding layers."""
        self._keys.index(key)  # a row of this cache
        if not self.decoder.windowed:
            return sys.maxsize
        held = max(held - self.decoder.cut_to(length, held) for length, held in zip(self._lengths, self._windows))
        return self.window_capacity - 1 - held  # the pass's tokens and the next step's one after them

    def extend(self, key: object, token_ids: list[int]) -> np.ndarray:
        """Feed several tokens to ``key``'s row alone (batch 1); logits [n, vocab] for each.

        Speculative decoding's verification pass: the row's length grows by n, and `rewind`
        takes back the positions of rejected draft tokens. n is at most `verify_room`.
        """
        row, count = self._keys.index(key), len(token_ids)
        if count > self.verify_room(key):
            raise RuntimeError(f"A verification pass of {count} tokens would widen the sliding caches past "
                               f"the {self.window_capacity} positions reserved; feed at most verify_room().")
        length = self._lengths[row]
        self._cut(self._buffers, count + 1)
        self._ensure(len(self._keys), length + count + 1, count + 1)
        if len(self._keys) == 1:
            if self._values is None:
                self._values = [ort.OrtValue.ortvalue_from_numpy(buffer[:1]) for buffer in self._buffers]
            values = self._values
        else:  # one row's contiguous block of each buffer
            values = [ort.OrtValue.ortvalue_from_numpy(buffer[row : row + 1]) for buffer in self._buffers]
        logits = self.decoder.extend(values, length, token_ids, self._windows[row])
        self._lengths[row] = length + count
        self._windows[row] += count
        return logits

    def rewind(self, key: object, length: int) -> None:
        """Keep only the first ``length`` positions of ``key``'s row (rejected draft tokens leave).

        No step reads past a row's length (the attention mask ends there and the next token is
        written at it); the dropped positions are zeroed all the same, so stale keys/values
        cannot be read by a later bug either. (No cut happens between `extend` and this call,
        so the sliding caches drop the same last positions.)
        """
        row = self._keys.index(key)
        old = self._lengths[row]
        if not 0 <= length <= old:
            raise RuntimeError(f"Cannot rewind a row of {old} positions to {length}.")
        window = self._windows[row] - (old - length)
        for buffer, sliding in zip(self._buffers, self._sliding()):
            end = self._windows[row] if sliding else old
            buffer[row, :, end - (old - length) : end] = 0
        self._lengths[row] = length
        self._windows[row] = window

    def _sliding(self) -> list[bool]:
        return self.decoder.sliding if self.decoder.windowed else [False] * len(self.decoder.past_names)

    def _ensure(self, rows: int, positions: int, new: int) -> None:
        """Room for ``rows`` rows: ``positions`` in the full-history buffers, ``new`` more
        positions after each row's window in the sliding ones (the caller cuts first, `_cut`);
        grows the buffers, copying what they hold, where they are short."""
        window = max(self._windows, default=0) + new  # <= window_capacity (`_cut`, `verify_room`)
        wanted = [min(self.rounded(window), self.window_capacity) if sliding
                  else self.rounded(positions) for sliding in self._sliding()]
        have_rows = self._buffers[0].shape[0] if self._buffers else 0
        if self._buffers and rows <= have_rows and all(
                b.shape[2] >= (window if sliding else positions) for b, sliding in zip(self._buffers, self._sliding())):
            return
        new_rows = max(have_rows, rows)  # exact: the engine's memory bound counts these rows
        kv_heads, head, dtype = self.decoder.kv_dims
        grown = []
        for index, want in enumerate(wanted):
            old = self._buffers[index] if self._buffers else None
            width = max(want, old.shape[2] if old is not None else 0)
            if old is not None and old.shape[0] == new_rows and old.shape[2] == width:
                grown.append(old)
                continue
            buffer = np.zeros((new_rows, kv_heads, width, head), dtype=dtype)
            if old is not None:
                buffer[: old.shape[0], :, : old.shape[2]] = old
            grown.append(buffer)
        self._buffers = grown
        self._values = None


class PaddedCache(_Rows):
    """ONNX Runtime's present of the last step as the next past, re-padded on joins and leaves
    (a windowed graph's sliding caches padded to the longest window, cut by `_cut` through numpy)."""

    def __init__(self, decoder: DecoderSession, capacity: int) -> None:
        super().__init__(decoder, capacity)
        self._past: list[ort.OrtValue] = []

    def _widths(self, lengths: list[int], windows: list[int]) -> list[int]:
        full, window = max(lengths, default=0), max(windows, default=0)
        sliding = self.decoder.sliding if self.decoder.windowed else [False] * len(self.decoder.past_names)
        return [window if s else full for s in sliding]

    def add(self, key: object, past: list[np.ndarray], length: int) -> None:
        self._check_room(key)
        current = [value.numpy() for value in self._past]
        window = self._window_of(past, length)
        widths = self._widths([*self._lengths, length], [*self._windows, window])
        rows = len(self._keys) + 1
        kv_heads, head, dtype = self.decoder.kv_dims
        merged = []
        for index, array in enumerate(past):
            buffer = np.zeros((rows, kv_heads, widths[index], head), dtype=dtype)
            if current:
                buffer[: rows - 1, :, : current[index].shape[2]] = current[index][:, :, : widths[index]]
            buffer[rows - 1, :, : array.shape[2]] = array[0]
            merged.append(buffer)
        self._keys.append(key)
        self._lengths.append(length)
        self._windows.append(window)
        self._past = [ort.OrtValue.ortvalue_from_numpy(a) for a in merged]

    def remove(self, key: object) -> None:
        row = self._keys.index(key)
        self._keys.pop(row)
        self._lengths.pop(row)
        self._windows.pop(row)
        if not self._keys:
            self._past = []
            return
        widths = self._widths(self._lengths, self._windows)
        keep = [r for r in range(len(self._keys) + 1) if r != row]
        self._past = [ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v.numpy()[keep, :, :width]))
                      for v, width in zip(self._past, widths)]

    def decode(self, token_ids: list[int]) -> np.ndarray:
        if self.decoder.windowed and max(self._windows) + 1 > self.window_capacity:
            # Copies: ``numpy()`` of a value made from numpy (by `add`) does not keep that array alive.
            arrays = [np.array(value.numpy()) for value in self._past]
            self._cut(arrays, 1)
            widths = self._widths(self._lengths, self._windows)
            self._past = [ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(a[:, :, :width]))
                          for a, width in zip(arrays, widths)]
        lengths = np.asarray(self._lengths, dtype=np.int64)
        logits, self._past = self.decoder.decode_batch(self._past, lengths, np.asarray(token_ids),
                                                       window_lengths=np.asarray(self._windows, dtype=np.int64))
        self._lengths = [n + 1 for n in self._lengths]
        self._windows = [n + 1 for n in self._windows]
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
    def allocated_bytes(self) -> int:
        past = self._state.past or []
        return sum(int(np.prod(value.shape())) for value in past) * np.dtype(self.decoder.kv_dims[2]).itemsize

    def bytes_for(self, rows: int, positions: int) -> int:
        full, window = layer_bytes(self.decoder)
        held = held_positions(self.decoder.keep, self.decoder.trim_slack)  # a step's present, before its cut
        return rows * (positions * full + min(positions, held) * window)

    def grown_bytes(self, rows: int, positions: int) -> int:
        return self.bytes_for(rows, positions)

    def add(self, key: object, past: list[np.ndarray], length: int) -> None:
        if self._key is not None:
            raise RuntimeError("SerialCache holds one request at a time.")
        self._key = key
        self._state = DecoderState(
            past=[ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(a[:, :, :length])) for a in past],
            length=length,
            window_length=self.decoder.window_width(past),
        )

    def remove(self, key: object) -> None:
        if key == self._key:
            self._key, self._state = None, DecoderState()

    def decode(self, token_ids: list[int]) -> np.ndarray:
        return self.decoder.forward(self._state, [int(token_ids[0])])[None]


def bytes_per_token(decoder: DecoderSession) -> int:
    """Cache bytes one token takes across every layer's key and value (within the first window;
    `layer_bytes` splits it, `window_bytes` bounds the sliding layers' part)."""
    kv_heads, head, dtype = decoder.kv_dims
    return kv_heads * head * np.dtype(dtype).itemsize * len(decoder.past_names)


def layer_bytes(decoder: DecoderSession) -> tuple[int, int]:
    """(bytes one token takes in the full-history caches, in the sliding ones): past the
    window a token costs only the first; the sliding caches hold a bounded number of tokens."""
    if not decoder.past_names:
        return 0, 0
    each = bytes_per_token(decoder) // len(decoder.past_names)
    sliding = sum(decoder.sliding) if decoder.windowed else 0
    return each * (len(decoder.past_names) - sliding), each * sliding


def window_bytes(decoder: DecoderSession) -> int:
    """Bytes one sequence's sliding-layer caches hold at most, however long it is (0 without
    sliding layers): `held_positions` of the sliding layers' bytes per token."""
    return layer_bytes(decoder)[1] * held_positions(decoder.keep, decoder.trim_slack) if decoder.windowed else 0

"""Length-sorted batching and padding, without a model."""

from __future__ import annotations

import random

import numpy as np

from ortmodels.engine.encoder import length_batches, pad_batch
from ortmodels.engine.pooling import l2_normalize, pool


def test_every_index_once_in_length_order() -> None:
    rng = random.Random(0)
    lengths = [rng.choice([3, 5, 9, 14, 40, 200]) + rng.randrange(3) for _ in range(500)]
    batches = length_batches(lengths, 32)
    flat = [i for batch in batches for i in batch]
    assert sorted(flat) == list(range(500))
    assert [lengths[i] for i in flat] == sorted(lengths)
    assert all(1 <= len(b) <= 32 for b in batches)


def test_batches_keep_padding_small() -> None:
    lengths = [10] * 10 + [12] * 3 + [100] * 5 + [250] * 2
    for batch in length_batches(lengths, 32):
        widths = [lengths[i] for i in batch]
        if len(batch) > 4:
            assert max(widths) <= min(widths) * 1.15 + 1


def test_empty_and_single() -> None:
    assert length_batches([], 8) == []
    assert length_batches([7], 8) == [[0]]
    assert length_batches([1, 1, 1], 1) == [[0], [1], [2]]


def test_pad_batch_right_pads_with_the_pad_id() -> None:
    ids, mask = pad_batch([[5, 6, 7], [8]], pad_token_id=1)
    assert ids.tolist() == [[5, 6, 7], [8, 1, 1]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert ids.dtype == np.int64 and mask.dtype == np.int64


def test_pooling_modes_ignore_padding() -> None:
    hidden = np.array([[[1.0, 0.0], [3.0, 2.0], [100.0, 100.0]]], dtype=np.float32)
    mask = np.array([[1, 1, 0]])
    assert pool(hidden, mask, "mean").tolist() == [[2.0, 1.0]]
    assert pool(hidden, mask, "cls").tolist() == [[1.0, 0.0]]
    assert pool(hidden, mask, "lasttoken").tolist() == [[3.0, 2.0]]
    assert pool(hidden, mask, "max").tolist() == [[3.0, 2.0]]
    np.testing.assert_allclose(np.linalg.norm(l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]])), axis=1), [1.0, 0.0])

"""Block-wise weight quantization into onnxruntime's ``MatMulNBits`` layout, in numpy.

A weight ``W[N, K]`` (PyTorch's ``Linear`` layout: out x in) is cut into blocks of
``block_size`` along K. Each block keeps a float scale and, when asymmetric, a uint8 zero
point, so ``w ≈ (q - zero_point) * scale``. Writing the layout ourselves (instead of
running onnxruntime's quantizer over a finished graph) lets the graph builder choose the
bits per matrix and the rounding per block.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Shrink factors of a block's [min, max] range tried by the error search (1.0 = plain min/max).
_RANGE_SHRINKS = tuple(np.linspace(1.0, 0.80, 11))
_VALUES = 1 << 20  # weights per pass (whole rows): bounds the temporaries to a few times 4 MB


@dataclass(frozen=True)
class QuantizedMatrix:
    """One matrix in ``MatMulNBits`` form: B [N, blocks, blob], scales [N, blocks], zero points."""

    packed: np.ndarray
    scales: np.ndarray
    zero_points: np.ndarray | None
    bits: int
    block_size: int
    n: int
    k: int

    def dequantized(self) -> np.ndarray:
        """The float weights [N, K] the kernel computes with (for tests and error figures)."""
        levels = _unpack(self.packed, self.bits).astype(np.float32)
        if self.zero_points is None:
            zero = np.full(self.scales.shape, 2 ** (self.bits - 1), dtype=np.float32)
        else:
            zero = _unpack_zero_points(self).astype(np.float32)
        values = (levels - zero[..., None]) * self.scales[..., None]
        return values.reshape(self.n, -1)[:, : self.k]


def _blocks(weight: np.ndarray, block_size: int) -> np.ndarray:
    n, k = weight.shape
    padded = -(-k // block_size) * block_size
    if padded != k:
        weight = np.pad(weight, ((0, 0), (0, padded - k)))
    return weight.reshape(n, padded // block_size, block_size).astype(np.float32)


def _pack(levels: np.ndarray, bits: int) -> np.ndarray:
    """uint8 levels [..., block] into bytes: 4-bit pairs share a byte, low nibble first."""
    levels = levels.astype(np.uint8)
    if bits == 8:
        return levels
    return (levels[..., 0::2] | (levels[..., 1::2] << 4)).astype(np.uint8)


def _unpack(packed: np.ndarray, bits: int) -> np.ndarray:
    if bits == 8:
        return packed
    out = np.empty(packed.shape[:-1] + (packed.shape[-1] * 2,), dtype=np.uint8)
    out[..., 0::2] = packed & 0x0F
    out[..., 1::2] = packed >> 4
    return out


def _unpack_zero_points(matrix: QuantizedMatrix) -> np.ndarray:
    blocks = matrix.scales.shape[1]
    zero = matrix.zero_points.reshape(matrix.n, -1)  # type: ignore[union-attr]
    return _unpack(zero, matrix.bits)[:, :blocks]


def _asymmetric(blocks: np.ndarray, bits: int, search: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scale and zero point per block from its range; with ``search``, the shrink of that range
    with the smallest squared error per block (clipping a few outliers often rounds the rest better)."""
    top = 2**bits - 1
    low, high = blocks.min(axis=-1), blocks.max(axis=-1)
    best_err = np.full(low.shape, np.inf, dtype=np.float32)
    best_scale = np.zeros_like(low)
    best_zero = np.zeros(low.shape, dtype=np.float32)
    for shrink in _RANGE_SHRINKS if search else (1.0,):
        mid = (high + low) / 2
        lo, hi = mid - (mid - low) * shrink, mid + (high - mid) * shrink
        scale = np.where(hi > lo, (hi - lo) / top, 1.0).astype(np.float32)
        zero = np.clip(np.round(-lo / scale), 0, top)
        levels = np.clip(np.round(blocks / scale[..., None]) + zero[..., None], 0, top)
        err = (((levels - zero[..., None]) * scale[..., None] - blocks) ** 2).sum(axis=-1)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best_scale = np.where(better, scale, best_scale)
        best_zero = np.where(better, zero, best_zero)
    levels = np.clip(np.round(blocks / best_scale[..., None]) + best_zero[..., None], 0, top)
    return levels, best_scale, best_zero


def quantize_matrix(
    weight: np.ndarray, bits: int, block_size: int = 32, symmetric: bool = False, search: bool = True
) -> QuantizedMatrix:
    """Quantize ``weight`` [N, K] block-wise along K to ``bits`` (4 or 8).

    ``_VALUES`` weights' worth of rows at a time (blocks never span rows, so the result is the same): the float
    temporaries of a whole matrix were several times its size (a 1B model's tied embedding,
    1 GB in fp32, took ~4 GB to quantize); only the packed bytes are kept whole.
    """
    if bits not in (4, 8):
        raise ValueError(f"MatMulNBits weights are 4 or 8 bits, not {bits}.")
    n, k = weight.shape
    rows, blocks = max(1, _VALUES // k), -(-k // block_size)
    # Filled piece by piece, never concatenated (that held the packed bytes twice).
    packed = np.empty((n, blocks, block_size * bits // 8), dtype=np.uint8)
    scales = np.empty((n, blocks), dtype=np.float32)
    zero = None if symmetric else np.empty((n, blocks), dtype=np.uint8)
    for i in range(0, n, rows):
        part = _quantize_rows(weight[i : i + rows], bits, block_size, symmetric, search)
        packed[i : i + rows], scales[i : i + rows] = part[0], part[1]
        if zero is not None:
            zero[i : i + rows] = part[2]
    if zero is None:
        return QuantizedMatrix(packed, scales, None, bits, block_size, n, k)
    if bits == 4:
        if zero.shape[1] % 2:
            zero = np.pad(zero, ((0, 0), (0, 1)))
        zero = _pack(zero, 4)
    return QuantizedMatrix(packed, scales, zero.reshape(-1), bits, block_size, n, k)


def _quantize_rows(
    weight: np.ndarray, bits: int, block_size: int, symmetric: bool, search: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Packed levels, float32 scales and (asymmetric) uint8 zero points of some whole rows."""
    blocks = _blocks(weight, block_size)
    if symmetric:
        half = 2 ** (bits - 1)
        absmax = np.abs(blocks).max(axis=-1)
        scale = np.where(absmax > 0, absmax / (half - 1), 1.0).astype(np.float32)
        levels = np.clip(np.round(blocks / scale[..., None]) + half, 0, 2 * half - 1)
        return _pack(levels, bits), scale, None
    levels, scale, zero = _asymmetric(blocks, bits, search)
    return _pack(levels, bits), scale.astype(np.float32), zero.astype(np.uint8)

"""Block-wise weight quantization into onnxruntime's ``MatMulNBits`` layout, in numpy.

A weight ``W[N, K]`` (PyTorch's ``Linear`` layout: out x in) is cut into blocks of
``block_size`` along K. Each block keeps a float scale and, when asymmetric, a uint8 zero
point, so ``w ≈ (q - zero_point) * scale``. Writing the layout ourselves (instead of
running onnxruntime's quantizer over a finished graph) lets the graph builder choose the
bits per matrix and the rounding per block.

How each block's levels are chosen (``method``): ``rtn`` rounds to the nearest level of a
min/max grid (with a range search when asymmetric); ``kquant`` fits scale and minimum by
weighted least squares (llama.cpp's k-quants, onnxruntime's implementation); ``hqq`` fits the
zero point by half-quadratic optimization (onnxruntime's HQQ, in torch), rounded to the uint8
zero point the CPU kernel's fast path reads; ``gptq`` rounds column by column and spreads each
column's error over the columns not yet rounded, weighted by the inverse Hessian of the
matrix's inputs (``hessian``: X^T X over a calibration text, `calibration.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Shrink factors of a block's [min, max] range tried by the error search (1.0 = plain min/max).
_RANGE_SHRINKS = tuple(np.linspace(1.0, 0.80, 11))
_VALUES = 1 << 20  # weights per pass (whole rows): bounds the temporaries to a few times 4 MB
#: The rounding methods (see the module's docstring); all but ``rtn`` are asymmetric, for 4 bits.
METHODS: tuple[str, ...] = ("rtn", "kquant", "hqq", "gptq")
_GPTQ_DAMPING = 0.01  # of the Hessian's mean diagonal, added to it (GPTQ's percdamp)
_GPTQ_COLUMNS = 128  # columns per lazy update of the ones after them (GPTQ's blocksize)
#: Columns in order of their inputs' energy, grids fixed beforehand (see _gptq_rows). On the sample's
#: 8-bit lm_head and down_proj mix: perplexity 1.098x fp32's with it, 1.158x without (rtn 1.137x).
_GPTQ_ACT_ORDER = True
_GPTQ_VALUES = 1 << 23  # GPTQ's rows per pass: its loop runs once per column and pass, so fewer, larger passes


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
    weight: np.ndarray, bits: int, block_size: int = 32, symmetric: bool = False, search: bool = True,
    method: str = "rtn", hessian: np.ndarray | None = None,
) -> QuantizedMatrix:
    """Quantize ``weight`` [N, K] block-wise along K to ``bits`` (4 or 8), rounding by ``method``.

    ``_VALUES`` weights' worth of rows at a time (blocks never span rows, so the result is the same): the float
    temporaries of a whole matrix were several times its size (a 1B model's tied embedding,
    1 GB in fp32, took ~4 GB to quantize); only the packed bytes are kept whole. GPTQ's rows
    are independent too, given the inverse Hessian of the inputs, which is computed once.
    """
    if bits not in (4, 8):
        raise ValueError(f"MatMulNBits weights are 4 or 8 bits, not {bits}.")
    if method not in METHODS:
        raise ValueError(f"Unknown rounding method {method!r}; known: {', '.join(METHODS)}.")
    if method != "rtn" and symmetric:
        raise ValueError(f"{method} blocks are asymmetric (zero points); ask for symmetric=False.")
    n, k = weight.shape
    if method == "gptq" and (hessian is None or k % block_size):
        raise ValueError("gptq needs the inputs' Hessian [K, K] and K a whole number of blocks.")
    order = np.argsort(-np.diag(hessian), kind="stable") if method == "gptq" and _GPTQ_ACT_ORDER else None  # type: ignore[arg-type]
    inverse = _gptq_inverse(hessian, order) if method == "gptq" else None  # type: ignore[arg-type]
    rows, blocks = max(1, (_GPTQ_VALUES if inverse is not None else _VALUES) // k), -(-k // block_size)
    # Filled piece by piece, never concatenated (that held the packed bytes twice).
    packed = np.empty((n, blocks, block_size * bits // 8), dtype=np.uint8)
    scales = np.empty((n, blocks), dtype=np.float32)
    zero = None if symmetric else np.empty((n, blocks), dtype=np.uint8)
    for i in range(0, n, rows):
        if inverse is not None:
            part = _gptq_rows(weight[i : i + rows], inverse, bits, block_size, search, order)
        else:
            part = _quantize_rows(weight[i : i + rows], bits, block_size, symmetric, search, method)
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
    weight: np.ndarray, bits: int, block_size: int, symmetric: bool, search: bool, method: str = "rtn"
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Packed levels, float32 scales and (asymmetric) uint8 zero points of some whole rows."""
    blocks = _blocks(weight, block_size)
    if symmetric:
        half = 2 ** (bits - 1)
        absmax = np.abs(blocks).max(axis=-1)
        scale = np.where(absmax > 0, absmax / (half - 1), 1.0).astype(np.float32)
        levels = np.clip(np.round(blocks / scale[..., None]) + half, 0, 2 * half - 1)
        return _pack(levels, bits), scale, None
    if method == "kquant":
        levels, scale, zero = _kquant(blocks, bits)
    elif method == "hqq":
        levels, scale, zero = _hqq(blocks, bits)
    else:
        levels, scale, zero = _asymmetric(blocks, bits, search)
    return _pack(levels, bits), scale.astype(np.float32), zero.astype(np.uint8)


def _kquant(blocks: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """onnxruntime's k-quant (llama.cpp's weighted least-squares fit of scale and minimum) per block."""
    from onnxruntime.quantization.neural_compressor.weight_only import (
        quant_tensor_k_quant_cpu,
    )

    rows, count, size = blocks.shape
    levels, scale, zero = quant_tensor_k_quant_cpu(blocks.reshape(-1, size), bits, size)
    return (levels.reshape(rows, count, size), scale.reshape(rows, count).astype(np.float32),
            zero.reshape(rows, count))


def _hqq(blocks: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """onnxruntime's HQQ fit of each block's zero point (torch), rounded to a whole level.

    HQQ's zero points are fractional; the CPU kernel takes fractional (float) zero points only
    on its slow path, so the fitted zero is rounded and the levels taken again on that grid.
    """
    import torch
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        HQQWeightOnlyQuantConfig,
        HQQWeightOnlyQuantizer,
    )

    rows, count, size = blocks.shape
    quantizer = HQQWeightOnlyQuantizer(HQQWeightOnlyQuantConfig(block_size=size, bits=bits))
    with torch.no_grad():
        _, scale, zero = quantizer.quantize_internal(torch.from_numpy(blocks.reshape(rows, -1)), bits=bits,
                                                     group_size=size)
    top = 2**bits - 1
    scale = scale.numpy().reshape(rows, count).astype(np.float32)
    zero = np.clip(np.round(zero.numpy().reshape(rows, count)), 0, top)
    levels = np.clip(np.round(blocks / scale[..., None]) + zero[..., None], 0, top)
    return levels, scale, zero


def _gptq_inverse(hessian: np.ndarray, order: np.ndarray | None = None) -> np.ndarray:
    """The upper Cholesky factor of the damped inverse Hessian, as GPTQ reads it (float32),
    with rows and columns in ``order`` (act-order) when given."""
    h = np.array(hessian, dtype=np.float64)
    dead = np.diag(h) == 0  # inputs that were always zero: any rounding of their weights is free
    h[dead, dead] = 1.0
    h[np.diag_indices_from(h)] += _GPTQ_DAMPING * np.mean(np.diag(h))
    if order is not None:
        h = h[np.ix_(order, order)]
    return np.linalg.cholesky(np.linalg.inv(h)).T.astype(np.float32)


def _gptq_rows(
    weight: np.ndarray, inverse: np.ndarray, bits: int, block_size: int, search: bool,
    order: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """GPTQ on some whole rows: column by column, each column's rounding error spread over the
    columns not yet rounded.

    Without ``order``, each block's grid comes from its columns as they stand when it is
    reached (with the range search); with ``order`` (act-order: the inputs of largest energy
    first), the grids are fixed from the weights beforehand ("static groups"), since a block's
    columns are then reached at different times.
    """
    n, k = weight.shape
    top = 2**bits - 1
    blocks = k // block_size
    levels = np.empty((n, blocks, block_size), dtype=np.uint8)
    if order is None:
        scales = np.empty((n, blocks), dtype=np.float32)
        zeros = np.empty((n, blocks), dtype=np.float32)
        columns = np.arange(k)
        w = np.array(weight, dtype=np.float32)  # a copy: it absorbs the errors
    else:
        _, scales, zeros = _asymmetric(_blocks(weight, block_size), bits, search)
        scales, zeros = scales.astype(np.float32), zeros.astype(np.float32)
        columns = order
        w = np.array(weight[:, order], dtype=np.float32)
    step = max(block_size, _GPTQ_COLUMNS // block_size * block_size)
    for first in range(0, k, step):
        last = min(first + step, k)
        part, inv = w[:, first:last], inverse[first:last, first:last]
        errors = np.empty_like(part)
        for j in range(last - first):
            b, within = divmod(int(columns[first + j]), block_size)
            if order is None and within == 0:
                _, scale, zero = _asymmetric(part[:, None, j : j + block_size], bits, search)
                scales[:, b], zeros[:, b] = scale[:, 0], zero[:, 0]
            scale, zero = scales[:, b], zeros[:, b]
            q = np.clip(np.round(part[:, j] / scale) + zero, 0, top)
            levels[:, b, within] = q
            errors[:, j] = (part[:, j] - (q - zero) * scale) / inv[j, j]
            part[:, j + 1 :] -= np.outer(errors[:, j], inv[j, j + 1 :])
        w[:, last:] -= errors @ inverse[first:last, last:]
    return _pack(levels, bits), scales, zeros.astype(np.uint8)

"""int4 recipes for our decoder graph: the candidates, in order of the bytes they read per token.

Why several: 4 bits everywhere is the smallest file, but round-to-nearest at 4 bits fails the
gates on many checkpoints (the sample: perplexity 1.26x fp32's), so a mix keeps some matrices
at 8 bits. Which mix a checkpoint needs depends on the checkpoint, and a better rounding
(GPTQ, calibrated on `calibration.txt`) can make a smaller mix pass. The exporter
(`decoder._build_checked`) builds the candidates from the fewest bytes up and keeps the
first that passes the int4 gates with every KV cache precision it offers; the last candidate
is the mix that passed on every checkpoint tried so far, whose verdict stands whatever it is.
The manifest's int4 entry names the candidate kept and each one rejected, with its figures.

Bytes are estimated from config.json's shapes (`estimated_bytes`), so the order is known
before anything is built; the recorded size is the file's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from .decoder_graph import GraphPrecision

#: The mix that passed on every checkpoint so far (llama.cpp's K-quant manner): 8-bit packed
#: q/k/v, down projection and lm_head, 4-bit o_proj and gate/up. The sample: 159 MB,
#: perplexity 1.07x fp32's, next-token agreement 0.858.
LAST_RESORT = GraphPrecision(bits=4, symmetric=False, lm_head_bits=8,
                             eight_bit=("self_attn.qkv_proj", "mlp.down_proj"))

#: Smaller mixes tried before it, each named by what stays at 8 bits.
MIXES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("all 4-bit", {}),
    ("8-bit lm_head", {"lm_head_bits": 8}),
    ("8-bit lm_head, down_proj", {"lm_head_bits": 8, "eight_bit": ("mlp.down_proj",)}),
)
#: Roundings tried on each smaller mix, cheapest first (`nbits.METHODS`).
ROUNDINGS: tuple[str, ...] = ("rtn", "gptq")
#: A calibrated rounding is built for a mix only where round-to-nearest came this close to the
#: int4 gates (perplexity at most the bound times ``_REACH_RATIO``, agreement at least the bound
#: less ``_REACH_AGREEMENT``): on the sample GPTQ gained 4-6% of perplexity (all 4-bit 1.449x ->
#: 1.364x fp32's, 8-bit lm_head 1.267x -> 1.214x) and no agreement, and one costs minutes.
_REACH_RATIO = 1.10
_REACH_AGREEMENT = 0.05
_SCALE_BYTES = 4  # float32 scales: the int4 graph's activations are fp32
_EMBEDDING_BLOCK = 32  # the GatherBlockQuantized table of a tied, quantized model


@dataclass(frozen=True)
class Candidate:
    """One int4 recipe to try: its name, how to build it, and the bytes it is estimated at."""

    name: str
    precision: GraphPrecision
    bytes: int  # the whole file: weights read per token, and the embedding table
    per_token: int  # weights read per decode step (the table is gathered a row at a time)


def matrix_bytes(n: int, k: int, bits: int | None, block_size: int, symmetric: bool) -> int:
    """Bytes of an [N, K] matrix in ``MatMulNBits`` form (``bits`` None: float32)."""
    if bits is None:
        return n * k * 4
    blocks = -(-k // block_size)
    zero_points = 0 if symmetric else n * (-(-blocks // 2) if bits == 4 else blocks)
    return n * blocks * block_size * bits // 8 + n * blocks * _SCALE_BYTES + zero_points


def _shapes(config: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """Each layer's linear matrices [out, in], under our packed names."""
    hidden = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or hidden // heads)
    inter = int(config["intermediate_size"])
    return {
        "self_attn.qkv_proj": ((heads + 2 * kv_heads) * head_dim, hidden),
        "self_attn.o_proj": (hidden, heads * head_dim),
        "mlp.gate_up_proj": (2 * inter, hidden),
        "mlp.down_proj": (hidden, inter),
    }


def estimated_bytes(config: dict[str, Any], precision: GraphPrecision) -> tuple[int, int]:
    """(file bytes, bytes read per token) of ``precision``'s weights for ``config``'s shapes."""
    p = precision

    def size(n: int, k: int, bits: int | None) -> int:
        return matrix_bytes(n, k, bits, p.block_size, p.symmetric8 if bits == 8 else p.symmetric)

    layers = int(config["num_hidden_layers"])
    per_token = sum(size(n, k, p.bits_for(layer, matrix))
                    for layer in range(layers) for matrix, (n, k) in _shapes(config).items())
    vocab, hidden = int(config["vocab_size"]), int(config["hidden_size"])
    per_token += size(vocab, hidden, p.head_bits)
    tied = bool(config.get("tie_word_embeddings", True))
    table = (matrix_bytes(vocab, hidden, p.embedding_bits, _EMBEDDING_BLOCK, symmetric=True) if tied and p.head_bits
             else vocab * hidden * 4)
    return per_token + table, per_token


def int4_candidates(config: dict[str, Any]) -> list[Candidate]:
    """The int4 recipes for ``config``, fewest bytes per token first; ``LAST_RESORT`` last.

    At equal bytes the cheaper rounding comes first (GPTQ needs a calibration pass).
    """
    found: list[tuple[int, int, Candidate]] = []
    for label, fields in MIXES:
        for rank, rounding in enumerate(ROUNDINGS):
            precision = replace(LAST_RESORT, **{"lm_head_bits": None, "eight_bit": (), **fields}, rounding=rounding)
            if precision == LAST_RESORT:
                continue
            total, per_token = estimated_bytes(config, precision)
            found.append((per_token, rank, Candidate(f"{rounding}, {label}", precision, total, per_token)))
    total, per_token = estimated_bytes(config, LAST_RESORT)
    last = Candidate("rtn, 8-bit lm_head, qkv_proj, down_proj", LAST_RESORT, total, per_token)
    return [c for _, _, c in sorted(found, key=lambda row: row[:2]) if c.per_token < last.per_token] + [last]


def _mix(recipe: dict[str, Any]) -> tuple[Any, ...]:
    """What a recipe stores at which bits, whatever its rounding."""
    return (recipe.get("lm_head_bits"), tuple(recipe.get("eight_bit") or ()), recipe.get("block_size"),
            recipe.get("embedding_bits"), recipe.get("symmetric"))


def skip_reason(candidate: Candidate, tried: list[dict[str, Any]]) -> str | None:
    """Why a calibrated candidate is not worth building, judging by the same mix rounded to nearest.

    ``tried``: the rejected attempts so far, as `decoder._build_checked` records them.
    """
    from .quality import PERPLEXITY_RATIO, TOP1_AGREEMENT

    if candidate.precision.rounding == "rtn":
        return None
    mix = _mix(candidate.precision.recipe())
    for row in tried:
        figures = row.get("figures", {}).get("own_kv") or {}
        if row["recipe"].get("rounding") != "rtn" or _mix(row["recipe"]) != mix or not figures:
            continue
        ratio, top1 = figures.get("perplexity_ratio"), figures.get("top1_agreement")
        ratio_reach = PERPLEXITY_RATIO["int4"] * _REACH_RATIO
        top1_reach = TOP1_AGREEMENT["int4"] - _REACH_AGREEMENT
        if ratio is not None and ratio > ratio_reach:
            return f"rounded to nearest, this mix had perplexity {ratio:.3f}x fp32's (> {ratio_reach:.2f}, out of reach)"
        if top1 is not None and top1 < top1_reach:
            return f"rounded to nearest, this mix had next-token agreement {top1:.3f} (< {top1_reach:.2f}, out of reach)"
    return None

"""int4 recipes for our decoder graph: the candidates, in order of the bytes they read per token.

Why several: 4 bits everywhere is the smallest file, but round-to-nearest at 4 bits fails the
gates on small checkpoints (the sample: perplexity 1.45x fp32's), so a mix keeps some matrices
at 8 bits. Which mix a checkpoint needs depends on the checkpoint, and a better rounding
(GPTQ, calibrated on `calibration.txt`) can make a smaller mix pass. The exporter
(`exporter._build_checked`) builds the candidates from the fewest bytes up and keeps the
first that passes the int4 gates with every KV cache precision it offers; the last candidate
is the mix that passed on every checkpoint tried so far, whose verdict stands whatever it is.
The manifest's int4 entry names the candidate kept and each one rejected, with its figures.

The search is opt-in (`int4_search`, ``ortmodels export --int4-search`` / ``--int4-gptq``): on
the sample every smaller candidate failed (README, "int4 recipes") and the search added ~8
minutes to its export, so by default int4 is the last resort alone, recorded with why.

Bytes are estimated from config.json's shapes (`estimated_bytes`), so the order is known
before anything is built; the recorded size is the file's.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from .graph import EMBEDDING_BLOCK, GraphPrecision

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
#: Roundings tried on each smaller mix, cheapest first (`nbits.METHODS`). On the sample kquant
#: and hqq were no better than rtn (8-bit lm_head: 1.262x and 1.251x fp32's perplexity against
#: 1.267x) and hqq took minutes, so they are not tried.
ROUNDINGS: tuple[str, ...] = ("rtn", "gptq")
#: Block sizes (along K, one scale and zero point each) tried for every mix, the last resort's
#: 32 and GPTQ's and AWQ's usual 128: fewer scales to read and apply per weight. On the Llama
#: 3.2 1B shape all 4-bit, 128 decoded 1.25x faster than 32 on this machine's two cores (64:
#: 1.15x) in 13% fewer bytes; coarser blocks round worse, so the gates decide per checkpoint.
BLOCK_SIZES: tuple[int, ...] = (32, 128)
#: Embedding table bits tried for a tied model. 4 (asymmetric, range search) saved 14 MB on the
#: sample's last-resort mix (perplexity 1.081x, agreement 0.872) but lost "blue" in "What colour
#: is the sky on a clear day?" with one of the two KV caches, so only 8 is tried.
TABLE_BITS: tuple[int, ...] = (8,)
#: A mix's better-equipped candidates (GPTQ, an 8-bit table) are built only where its first one
#: came this close to the int4 gates (perplexity at most the bound times ``_REACH_RATIO``,
#: agreement at least the bound less ``_REACH_AGREEMENT``): on the sample GPTQ (act-order) took
#: the 8-bit-lm_head mix from 1.267x fp32's perplexity to 1.128x and its agreement from 0.754
#: to 0.806, and one costs a minute or more.
_REACH_RATIO = 1.20
_REACH_AGREEMENT = 0.08
_SCALE_BYTES = 4  # float32 scales: the int4 graph's activations are fp32

#: How an export picks int4's recipe: ``off`` builds the last resort alone (the default);
#: ``rtn`` searches the round-to-nearest candidates; ``gptq`` the calibrated ones too, which
#: runs the fp32 graph over `calibration.txt` (the sample: peak 2.86x the checkpoint, not 2.39x).
SEARCH_MODES: tuple[str, ...] = ("off", "rtn", "gptq")
_search: contextvars.ContextVar[str] = contextvars.ContextVar("int4_search", default="off")
#: Why the default int4 is the last resort (recorded in the manifest's int4 entry).
DEFAULT_WHY = ("default recipe: the mix that passed the gates on every checkpoint tried; on the sample every "
               "smaller candidate (all 4-bit, 8-bit lm_head, 8-bit lm_head and down_proj; rtn, kquant, hqq, gptq) "
               "failed them (README, 'int4 recipes'); `ortmodels export --int4-search` tries them for this checkpoint")


@contextmanager
def int4_search(mode: str = "off") -> Iterator[None]:
    """Inside the block, int4 exports search candidate recipes as ``mode`` says (`SEARCH_MODES`)."""
    if mode not in SEARCH_MODES:
        raise ValueError(f"Unknown int4 search {mode!r}; known: {', '.join(SEARCH_MODES)}.")
    token = _search.set(mode)
    try:
        yield
    finally:
        _search.reset(token)


def int4_search_mode() -> str:
    """The int4 search of this export (`int4_search`): ``off`` unless asked for."""
    return _search.get()


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
    table = (matrix_bytes(vocab, hidden, p.embedding_bits, EMBEDDING_BLOCK, symmetric=p.embedding_bits == 8)
             if tied and p.head_bits else vocab * hidden * 4)
    return per_token + table, per_token


def int4_candidates(config: dict[str, Any]) -> list[Candidate]:
    """The int4 recipes for ``config``, fewest bytes per token first; ``LAST_RESORT`` last.

    Each mix (`MIXES`, and the last resort's) with each rounding (`ROUNDINGS`) and, for a tied
    model, each table precision (`TABLE_BITS`). At equal bytes per token the
    smaller file comes first, then the cheaper rounding (GPTQ needs a calibration pass); a
    candidate no smaller than the last resort is left out.
    """
    tied = bool(config.get("tie_word_embeddings", True))
    mixes = (*MIXES, ("8-bit lm_head, qkv_proj, down_proj", {"lm_head_bits": 8, "eight_bit": LAST_RESORT.eight_bit}))
    last_total, last_per_token = estimated_bytes(config, LAST_RESORT)
    found: list[tuple[int, int, int, Candidate]] = []
    for label, fields in mixes:
        for block_size in BLOCK_SIZES:
            for embedding_bits in TABLE_BITS if tied else (8,):
                for rank, rounding in enumerate(ROUNDINGS):
                    precision = replace(LAST_RESORT, **{"lm_head_bits": None, "eight_bit": (), **fields},
                                        rounding=rounding, embedding_bits=embedding_bits, block_size=block_size)
                    total, per_token = estimated_bytes(config, precision)
                    if (per_token, total) >= (last_per_token, last_total):
                        continue
                    name = _name(rounding, label, block_size, embedding_bits)
                    found.append((per_token, total, rank, Candidate(name, precision, total, per_token)))
    last = Candidate(f"rtn, {mixes[-1][0]}", LAST_RESORT, last_total, last_per_token)
    return [c for *_, c in sorted(found, key=lambda row: row[:3])] + [last]


def _name(rounding: str, mix: str, block_size: int, embedding_bits: int) -> str:
    """A candidate's name in the manifest: its rounding and mix, then what differs from the last resort."""
    return (f"{rounding}, {mix}" + (f", blocks of {block_size}" if block_size != LAST_RESORT.block_size else "")
            + (", 4-bit embedding" if embedding_bits == 4 else ""))


def smallest_candidate(config: dict[str, Any]) -> Candidate:
    """The fewest bytes per token and on disk: every matrix and ``lm_head`` at 4 bits, rounded to
    nearest, in the block size (`BLOCK_SIZES`) that reads fewest, and a tied model's embedding
    table (its own ``GatherBlockQuantized`` tensor, apart from ``lm_head``'s) at 4 bits too. What
    a search keeps when nothing can be judged."""
    tied = bool(config.get("tie_word_embeddings", True))
    found = []
    for block_size in BLOCK_SIZES:
        precision = replace(LAST_RESORT, lm_head_bits=None, eight_bit=(), rounding="rtn",
                            embedding_bits=4 if tied else 8, block_size=block_size)
        total, per_token = estimated_bytes(config, precision)
        name = _name("rtn", "all 4-bit", block_size, precision.embedding_bits)
        found.append((per_token, total, Candidate(name, precision, total, per_token)))
    return min(found, key=lambda row: row[:2])[2]


def searched_candidates(config: dict[str, Any], mode: str, gates_skipped: bool = False) -> list[Candidate]:
    """The candidates an export builds under search ``mode``: the last resort alone when the search
    is off; without ``gptq``, the round-to-nearest ones. With the gates skipped (random weights:
    no candidate can pass, so none can be judged) a search builds `smallest_candidate` alone,
    for what the smallest int4 costs; without a search, the last resort."""
    candidates = int4_candidates(config)
    if mode == "off":
        return candidates[-1:]
    if gates_skipped:
        return [smallest_candidate(config)]
    return [c for c in candidates if mode == "gptq" or c.precision.rounding != "gptq"]


#: Why a search with the gates skipped keeps `smallest_candidate` (the manifest's int4 entry).
UNJUDGED_WHY = ("not judged: the gates were skipped (--skip-gates), so no candidate could be judged; the {mode} "
                "search kept the one with the fewest bytes per token (all 4-bit in the block size that reads fewest "
                "bytes, and a 4-bit embedding table where tied), for its size and speed")


def selection(mode: str, kept: int, built: int, gates_skipped: bool = False) -> dict[str, Any]:
    """The manifest's record of why int4 has the recipe it has: the search asked for, and the reason.

    ``kept``: the index of the candidate kept among the ``built`` ones tried.
    """
    if gates_skipped and mode == "off":
        return {"search": "off", "judged": False,
                "why": "the last resort alone: the gates were skipped, so no candidate could be judged"}
    if gates_skipped:
        return {"search": mode, "judged": False, "why": UNJUDGED_WHY.format(mode=mode)}
    if mode == "off":
        why = DEFAULT_WHY
    elif kept < built - 1:
        why = (f"the fewest bytes per token of {built} candidates ({mode} search) that passed the gates "
               "with every KV cache")
    else:
        why = f"every smaller candidate of the {mode} search failed the gates (failed_recipes): the last resort"
    return {"search": mode, "why": why}


def _weights_read(recipe: dict[str, Any]) -> tuple[Any, ...]:
    """What a recipe stores at which bits among the weights read per token (not the rounding, not the table)."""
    return (recipe.get("lm_head_bits"), tuple(recipe.get("eight_bit") or ()), recipe.get("block_size"),
            recipe.get("symmetric"))


def skip_reason(candidate: Candidate, tried: list[dict[str, Any]]) -> str | None:
    """Why ``candidate`` is not worth building: a sibling already built (the same weights per
    token, a cheaper rounding or a 4-bit table) missed the int4 gates by more than those can gain.

    ``tried``: the rejected attempts so far, as `exporter._build_checked` records them.
    """
    from ..quality import PERPLEXITY_RATIO, TOP1_AGREEMENT

    mix = _weights_read(candidate.precision.recipe())
    ratio_reach = PERPLEXITY_RATIO["int4"] * _REACH_RATIO
    top1_reach = TOP1_AGREEMENT["int4"] - _REACH_AGREEMENT
    for row in tried:
        figures = row.get("figures", {}).get("own_kv") or {}
        if _weights_read(row["recipe"]) != mix or not figures:
            continue
        ratio, top1 = figures.get("perplexity_ratio"), figures.get("top1_agreement")
        sibling = row["recipe"].get("candidate", "the same mix")
        if ratio is not None and ratio > ratio_reach:
            return f"{sibling} had perplexity {ratio:.3f}x fp32's (> {ratio_reach:.2f}, out of reach)"
        if top1 is not None and top1 < top1_reach:
            return f"{sibling} had next-token agreement {top1:.3f} (< {top1_reach:.2f}, out of reach)"
    return None

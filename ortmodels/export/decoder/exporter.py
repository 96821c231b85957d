"""Export of causal LMs (Llama, Qwen2, Mistral, Phi-3, Gemma, ...) with their KV cache.

Llama, Mistral, Qwen2/3, Phi-3 and Gemma 1/2/3 (text) checkpoints get our own graph
(`graph`: fused GroupQueryAttention and RMS-norm operators, ``MatMulNBits`` weights
written directly), built from the safetensors weights for each precision;
`families.supports` says why any other checkpoint is refused (long-rope scaling, a
vision-language Gemma 3, ...). Those go through optimum (``text-generation-with-past``), with
fp16, int8 and int4 derived from its fp32 graph.
Every variant is compared with the PyTorch model (run in a child process,
`reference_process`, so this one never imports torch for our graph) and judged by the quality gates
(`quality.py`) before it is published; a precision with a second recipe (fp16) gets it
only when the first fails. A variant whose cache is fp32 also gets an fp16-KV graph
(`kv_precision.py`), judged by the same gates; the manifest's ``kv`` entry records both.
Our graph's int4 has several candidate recipes (`int4_recipes`), tried from the fewest bytes
per token up; the first that passes with every KV cache is kept, the others are recorded.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

from ...engine.chat_template import ChatTemplate
from ...engine.reasoning import detect_reasoning
from ...engine.toolcalls import detect_format
from ...errors import ChatTemplateError, ExportError, ModelFileError, ParityError
from ...kinds import KINDS
from ...lifecycle.memory import return_freed_memory
from ...store import ModelInfo, read_json
from ...store.manifest import ChatSpec, KVEntry, Manifest, QualityVerdict, VariantEntry
from ..graph_edits import fuse_decoder_ops
from ..optimum_bridge import export_with_optimum
from ..pipeline import (
    Builder,
    build_variant,
    check_dtypes,
    export_attempt,
    finish_export,
    require_fast_tokenizer,
    variant_entry,
)
from ..progress import Progress
from ..quality import gates_are_skipped, judge_decoder
from .calibration import (
    CALIBRATION_TEXT,
    Hessians,
    calibration_chunks,
    collect_hessians,
)
from .graph import GraphPrecision, TransformersFacts, build_decoder_graph, supports
from .int4_recipes import (
    LAST_RESORT,
    Candidate,
    int4_search_mode,
    searched_candidates,
    selection,
    skip_reason,
)
from .kv_precision import KV16_FILE, graph_kv, write_fp16_kv_graph
from .parity import DecoderReference, onnx_parity
from .reference_process import compute_reference
from .quantize import OVERFLOW_PRONE_OPS, convert_fp16, quantize_weight_only

logger = logging.getLogger(__name__)

TASK = "text-generation-with-past"
_GENERATION_KEYS = ("do_sample", "temperature", "top_p", "top_k", "repetition_penalty", "max_new_tokens")
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")

#: Builders per precision for optimum's graph, in the order tried: the next one is built
#: only when the previous one fails the quality gates (`quality.py`).
_BUILDERS: dict[str, list[Builder]] = {
    "fp16": [convert_fp16, lambda src, dst: convert_fp16(src, dst, keep_fp32_ops=OVERFLOW_PRONE_OPS)],
    # int8: blocks of 16 keep perplexity at fp32's (12.144 vs 12.143 on the sample; 32: 12.12 but
    # flipped near-tied first tokens) for ~10% of its speed.
    "int8": [lambda src, dst: quantize_weight_only(src, dst, bits=8, block_size=16)],
    # int4: our graph's mix (8-bit attention inputs, down projection and lm_head; float
    # embedding table); all 4 bits gave 2.07x fp32's perplexity on a Gemma 3 checkpoint.
    "int4": [lambda src, dst: quantize_weight_only(src, dst, bits=4, eight_bit=_OPTIMUM_EIGHT_BIT)],
}
_OPTIMUM_EIGHT_BIT = ("q_proj", "k_proj", "v_proj", "qkv_proj", "query_key_value", "down_proj", "lm_head")
DECODER_DTYPES = KINDS["chat"].precisions

#: Our own graph's precisions. Chosen by the quality gates (`quality.py`) on the sample
#: (fp32 PyTorch: perplexity 12.143, answers "Paris", "Tokyo", "7 days", "H2O"):
#: int8 is tried in three recipes, fewest bytes first (`_GRAPH_ATTEMPTS`): symmetric blocks of
#: 64 (1.06 bytes a weight with the float32 scales), of 32 (1.13, llama.cpp's Q8_0 layout), then
#: asymmetric blocks of 16 with zero points and a per-block range search (1.31). On the sample
#: (2026-12-04) blocks of 64 passed: perplexity 12.209 (1.005x), next-token agreement 0.952,
#: every plain question as fp32, with the fp32 and the fp16 KV cache; 181 MB against 215 MB and
#: 1.31x the decode speed (140.6 against 107.6 tokens/s, one stream, interleaved runs).
#: Symmetric blocks of 32 looped on "What is the capital of France?" ("la France, la France,
#: ..."; fp32's first token wins by 0.09 logits there, so which blocks flip it does not follow
#: their size); asymmetric blocks of 16 gave 12.086 and 0.974. int4 is a mix in the manner of llama.cpp's
#: K-quants: asymmetric 4-bit gate/up and output projections, symmetric 8-bit q/k/v, down
#: projection and lm_head: perplexity 13.00 (1.07x), agreement 0.858, every question right.
#: The symmetric 4-bit mix had the lower perplexity (12.82) but agreement 0.812 and "A week is
#: approximately 315 days"; an all-4-bit graph had 15.29. That mix is int4's last resort: the
#: smaller candidates of `int4_recipes` are tried before it.
GRAPH_PRECISIONS: dict[str, GraphPrecision] = {
    "fp32": GraphPrecision(),
    "fp16": GraphPrecision(dtype="fp16"),
    "fp16-fp32-residual": GraphPrecision(dtype="fp16", fp32_residual=True),
    "int8-blocks64": GraphPrecision(bits=8, block_size=64),
    "int8-blocks32": GraphPrecision(bits=8, block_size=32),
    "int8": GraphPrecision(bits=8, symmetric8=False, block_size=16),
    "int4": LAST_RESORT,
}
#: Files a checkpoint folder may carry that the exported variants need beside the graph.
_SUPPORT_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                  "special_tokens_map.json", "chat_template.jinja")


def _as_list(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, list) else [int(value)]


def chat_spec(base: Path) -> ChatSpec:
    """Context length, end-of-turn tokens and sampling defaults from the exported config files.

    The tokenizer read here (to find the end-of-sequence token's id) is gone when this returns:
    parsed, it is ~30 MB that would otherwise sit beside the PyTorch reference's peak.
    """
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(base / "tokenizer.json"))
    config = read_json(base / "config.json")
    generation = read_json(base / "generation_config.json") if (base / "generation_config.json").is_file() else {}
    tokenizer_config = read_json(base / "tokenizer_config.json") if (base / "tokenizer_config.json").is_file() else {}
    context = next((int(config[k]) for k in _CONTEXT_KEYS if config.get(k)), None)
    if context is None:
        raise ExportError(f"{base / 'config.json'} names no context length ({', '.join(_CONTEXT_KEYS)}).")
    eos = _as_list(generation.get("eos_token_id")) + _as_list(config.get("eos_token_id"))
    eos_token = tokenizer_config.get("eos_token")
    eos_token = eos_token.get("content") if isinstance(eos_token, dict) else eos_token
    if isinstance(eos_token, str) and (eos_id := tokenizer.token_to_id(eos_token)) is not None:
        eos.append(eos_id)
    if not eos:
        raise ExportError(f"{base} names no end-of-sequence token (generation_config.json or config.json).")
    try:
        template = ChatTemplate.from_folder(base).source
        tool_format: str | None = detect_format(template)
        reasoning_format: str | None = detect_reasoning(template)
    except (ModelFileError, ChatTemplateError):  # no template: chat fails at load, with its own message
        tool_format = reasoning_format = None
    return ChatSpec(
        context_length=context,
        eos_token_ids=sorted(set(eos)),
        bos_token_id=generation.get("bos_token_id", config.get("bos_token_id")),
        generation={k: generation[k] for k in _GENERATION_KEYS if k in generation},
        tool_format=tool_format,
        reasoning_format=reasoning_format,
    )


def _fuse_if_faithful(base: Path, scratch: Path, reference: DecoderReference) -> dict[str, int]:
    """Replace ``base/model.onnx`` by its fused graph when that still matches PyTorch exactly."""
    scratch.mkdir()
    fused_file = scratch / "model.onnx"
    parity: dict[str, Any] = {}
    try:
        fused = fuse_decoder_ops(base / "model.onnx", fused_file, read_json(base / "config.json"))
        if fused:
            parity = onnx_parity(fused_file, reference, float_weights=True)
    except Exception as exc:  # the optimizer's pattern code raises anything on graphs it does not know
        logger.warning("Operator fusion failed (%s: %s); keeping the plain graph.", type(exc).__name__, exc)
        fused = {}
    if fused:
        if parity["greedy_agreement"] == 1.0 and parity["max_logit_diff"] < 1e-2:
            for old in base.glob("model.onnx*"):
                old.unlink()
            for new in scratch.glob("model.onnx*"):
                new.rename(base / new.name)
        else:
            logger.warning("Fused graph differs from PyTorch (%s); keeping the plain graph.", parity)
            fused = {}
    shutil.rmtree(scratch)
    return fused


#: Our graph's precisions per variant, in the order tried (as `_BUILDERS`): fp16 keeps its
#: residual stream in fp32 when plain fp16 overflows; int8 takes the fewest bytes per weight
#: that pass (`GRAPH_PRECISIONS`; decode reads every weight once a token). int4's come from
#: `int4_recipes`.
_GRAPH_ATTEMPTS: dict[str, tuple[str, ...]] = {"fp16": ("fp16", "fp16-fp32-residual"),
                                               "int8": ("int8-blocks64", "int8-blocks32", "int8")}


class _LazyHessians:
    """GPTQ's calibration of the fp32 graph, run the first time a gptq candidate is built (then kept).

    Only ``--int4-gptq`` gets here. The fp32 graph is the export's own when fp32 is exported;
    otherwise it is written for the calibration and removed after it (its disk, and its mapped
    pages while it runs: the cost the README states).
    """

    def __init__(self, checkpoint: Path, base: Path, folder: Path, facts: TransformersFacts) -> None:
        self.checkpoint, self.base, self.folder, self.facts = checkpoint, base, folder, facts
        self.hessians: Hessians | None = None
        self.seconds = 0.0

    def get(self) -> Hessians:
        if self.hessians is None:
            from tokenizers import Tokenizer

            started = time.monotonic()
            tokenizer = Tokenizer.from_file(str(self.base / "tokenizer.json"))
            graph, own = self.base / "model.onnx", None
            if not graph.is_file():
                own = self.folder / "fp32"
                own.mkdir(parents=True, exist_ok=True)
                graph = own / "model.onnx"
                build_decoder_graph(self.checkpoint, graph, GRAPH_PRECISIONS["fp32"], facts=self.facts)
            try:
                self.hessians = collect_hessians(graph, calibration_chunks(tokenizer), self.folder)
            finally:
                if own is not None:
                    shutil.rmtree(own)
                return_freed_memory()
            self.seconds = round(time.monotonic() - started, 1)
        return self.hessians


class _Int4Attempt:
    """One int4 candidate as a builder, which can also say why it is not worth building."""

    def __init__(self, checkpoint: Path, candidate: Candidate, hessians: _LazyHessians) -> None:
        self.checkpoint, self.candidate, self.hessians = checkpoint, candidate, hessians

    def recipe(self) -> dict[str, Any]:
        return {**self.candidate.precision.recipe(), "candidate": self.candidate.name}

    def skip_reason(self, tried: list[dict[str, Any]]) -> str | None:
        return skip_reason(self.candidate, tried)

    def __call__(self, _src: Path, dst: Path) -> dict[str, Any]:
        p = self.candidate.precision
        build_decoder_graph(self.checkpoint, dst, p, self.hessians.get() if p.rounding == "gptq" else None,
                            facts=self.hessians.facts)
        recipe = self.recipe()
        if p.rounding == "gptq" and self.hessians.hessians is not None:
            recipe["calibration"] = {"text": CALIBRATION_TEXT.name, "tokens": self.hessians.hessians.tokens,
                                     "seconds": self.hessians.seconds}
        return recipe


def _graph_builders(checkpoint: Path, work: Path, facts: TransformersFacts) -> dict[str, list[Builder]]:
    """Builders per precision, each writing its graph straight from the checkpoint (and ``facts``).

    int4 builds the last resort alone unless this export searches (`int4_recipes.int4_search`):
    then it tries `int4_recipes.searched_candidates` in order.
    """
    builders: dict[str, list[Builder]] = {
        dtype: [lambda _src, dst, p=GRAPH_PRECISIONS[name]: build_decoder_graph(checkpoint, dst, p, facts=facts)
                for name in names]
        for dtype, names in _GRAPH_ATTEMPTS.items()
    }
    candidates = searched_candidates(read_json(checkpoint / "config.json"), int4_search_mode(), gates_are_skipped())
    hessians = _LazyHessians(checkpoint, work / "_base", work / "_base" / "calibration", facts)  # removed with the base
    builders["int4"] = [_Int4Attempt(checkpoint, c, hessians) for c in candidates]
    return builders


def _prepare_base(info: ModelInfo, base: Path, progress: Progress) -> str:
    """Write the support files (our graph) or optimum's fp32 graph and its files into ``base``; returns which.

    Our graph's fp32 file is written later, and only when fp32 is asked for (`_build_base_graph`).
    """
    reason = supports(read_json(info.path / "config.json"))
    if reason is None:
        base.mkdir()
        for name in _SUPPORT_FILES:
            if (info.path / name).is_file():
                shutil.copy2(info.path / name, base / name)
        return "decoder_graph"
    logger.info("%s: %s; exporting with optimum.", info.name, reason)
    progress.step("Exporting the decoder with its KV cache (optimum)")
    export_with_optimum(info.path, base, TASK)
    return "optimum"


def _build_base_graph(info: ModelInfo, base: Path, progress: Progress, dtypes: list[str], facts: TransformersFacts
                      ) -> dict[str, list[Builder]]:
    """Our fp32 graph into ``base`` where fp32 is asked for; returns the builders of the other precisions.

    They are built from the checkpoint itself, so the fp32 graph is written only when fp32
    is asked for (at 1B it is 4.9 GB of disk and ~30 s of writing).
    """
    if "fp32" in dtypes:
        progress.step("Building the decoder graph (GroupQueryAttention, fused norms)")
        build_decoder_graph(info.path, base / "model.onnx", GRAPH_PRECISIONS["fp32"], facts=facts)
        return_freed_memory()
    return _graph_builders(info.path, base.parent, facts)


def _build_checked(dtype: str, base: Path, work: Path, attempts: list[Builder], base_recipe: dict[str, Any],
                   reference: DecoderReference, name: str) -> VariantEntry:
    """Build ``dtype`` with each recipe in turn until one passes the gates; the last one's verdict stands.

    A recipe before the last must pass with every KV cache precision it offers (the fp16-KV
    graph is what ``MODEL_KV_DTYPE=auto`` runs), so a smaller int4 never costs a larger
    cache. Each rejected recipe is recorded (``failed_recipes``) with its figures, size and
    the seconds its build and gates took. fp32 has no builder (it is the base graph,
    described by ``base_recipe``) and must reproduce PyTorch's greedy tokens, or nothing is published.
    """
    tried: list[dict[str, Any]] = []
    for n, builder in enumerate(attempts or [None]):
        last = n >= len(attempts) - 1
        reason = builder.skip_reason(tried) if isinstance(builder, _Int4Attempt) and not last else None
        if isinstance(builder, _Int4Attempt) and reason:
            tried.append({"recipe": builder.recipe(), "failures": [f"not built: {reason}"], "skipped": True,
                          "estimated_size": builder.candidate.bytes, "figures": {}, "seconds": 0.0})
            continue
        started = time.monotonic()
        recipe = build_variant(dtype, base, work / dtype, {dtype: builder} if builder else {}) or dict(base_recipe)
        # A recipe with another after it is screened: failing the text's figures, it skips the greedy runs.
        screen = None if last or gates_are_skipped() else (lambda figures: judge_decoder(dtype, figures).passed)
        parity = onnx_parity(work / dtype / "model.onnx", reference, screen=screen, **_weights_of(dtype))
        if dtype == "fp32" and parity.get("greedy_agreement") != 1.0:
            raise ParityError(
                f"fp32 export of {name} does not reproduce PyTorch's greedy tokens "
                f"(agreement {parity.get('greedy_agreement')}, largest logit difference "
                f"{parity.get('max_logit_diff')})."
            )
        verdict = judge_decoder(dtype, parity)
        if dtype == "fp32" and not verdict.passed:  # the reference every other variant is made from
            raise ParityError(f"fp32 export of {name} is not faithful to PyTorch: {'; '.join(verdict.failures)}.")
        logger.info("%s %s parity: %s; %s", name, dtype, parity, "passed" if verdict.passed else verdict.failures)
        kv = _kv_entries(dtype, work / dtype, parity, verdict, reference, name) if verdict.publishable else None
        failures = list(verdict.failures) if not verdict.publishable else [
            f"with an fp16 KV cache: {failure}" for failure in _kv_failures(kv)]
        size = sum(f.stat().st_size for f in (work / dtype).glob("model*.onnx*"))
        if not failures or last:
            if builder is not None:
                recipe["seconds"] = round(time.monotonic() - started, 1)
            if isinstance(builder, _Int4Attempt):
                recipe["selection"] = selection(int4_search_mode(), n, len(attempts), gates_are_skipped())
            if tried:
                recipe["failed_recipes"] = tried
            return variant_entry(dtype, work / dtype, recipe, parity, verdict, kv=kv)
        tried.append({"recipe": recipe, "failures": failures, "size": size, "figures": _gate_figures(parity, kv),
                      "seconds": round(time.monotonic() - started, 1)})
        logger.warning("%s %s failed its gates with %s (%s); trying the next recipe.",
                       name, dtype, recipe.get("candidate", recipe), "; ".join(failures))
        shutil.rmtree(work / dtype)
    raise AssertionError("unreachable: the last attempt always returns")


def _kv_failures(kv: dict[str, KVEntry] | None) -> list[str]:
    """What the gates said of the variant's other KV precisions (its fp16-KV graph), if they failed it."""
    return [failure for entry in (kv or {}).values() if entry.quality is not None and not entry.quality.publishable
            for failure in entry.quality.failures]


def _gate_figures(parity: dict[str, Any], kv: dict[str, KVEntry] | None) -> dict[str, Any]:
    """The figures the gates read, per KV precision: perplexity over fp32's, next-token agreement."""
    def figures(p: dict[str, Any]) -> dict[str, Any]:
        ratio = p["perplexity"] / p["perplexity_fp32"] if p.get("perplexity_fp32") else None
        return {"perplexity_ratio": round(ratio, 4) if ratio is not None else None,
                "top1_agreement": p.get("top1_agreement"),
                # None: screened out on the text's figures before the questions were asked
                "derailed": None if p.get("screened") else sum(1 for row in p.get("probes", []) if row.get("derailed"))}
    out = {"own_kv": figures(parity)}
    out.update({f"{kv_dtype}_kv": figures(entry.parity) for kv_dtype, entry in (kv or {}).items()
                if entry.file != "model.onnx"})
    return out


def _kv_entries(dtype: str, folder: Path, parity: dict[str, Any], verdict: QualityVerdict,
                reference: DecoderReference, name: str) -> dict[str, KVEntry]:
    """The variant's KV precisions: its own graph's, and an fp16-KV graph where it can have one.

    The fp16-KV graph (`kv_precision`) is judged by the variant's own gates; one that fails
    keeps its figures in the manifest but not its file, so it is never loaded.
    """
    plain = folder / "model.onnx"
    own, own_bytes, own_window = graph_kv(plain)
    entries: dict[str, KVEntry] = {}
    if own is not None:
        entries[own] = KVEntry(file=plain.name, bytes_per_token=own_bytes, window_bytes=own_window, parity=parity,
                               quality=verdict)
    kv16 = folder / KV16_FILE
    if own == "fp32" and write_fp16_kv_graph(plain, kv16):
        parity16 = onnx_parity(kv16, reference, **_weights_of(dtype))
        verdict16 = judge_decoder(dtype, parity16)
        _, per_token16, window16 = graph_kv(kv16)
        entries["fp16"] = KVEntry(file=kv16.name, bytes_per_token=per_token16, window_bytes=window16,
                                  parity=parity16, quality=verdict16)
        logger.info("%s %s with an fp16 KV cache: %s; %s", name, dtype, parity16,
                    "passed" if verdict16.passed else verdict16.failures)
        if not verdict16.publishable:
            logger.warning("%s %s failed its gates with an fp16 KV cache (%s); it keeps an fp32 cache.",
                           name, dtype, "; ".join(verdict16.failures))
            kv16.unlink()
    return entries


def export_decoder(info: ModelInfo, dtypes: list[str], source_hash: str, progress: Progress) -> Manifest:
    """Export ``info``'s causal LM into a new export folder and publish it; returns the manifest."""
    check_dtypes("Chat models", dtypes, DECODER_DTYPES)
    with export_attempt(info) as work:
        base = work / "_base"
        graph = _prepare_base(info, base, progress)
        require_fast_tokenizer(info.path, base)
        if not (base / "chat_template.jinja").is_file() and (info.path / "chat_template.jinja").is_file():
            shutil.copy2(info.path / "chat_template.jinja", base / "chat_template.jinja")
        spec = chat_spec(base)
        return_freed_memory()  # what parsing the tokenizer and template freed: not held beside the child's peak

        # In a child process (`reference_process`), which also reads what our graph needs from
        # transformers: this process never imports torch (optimum's path already has).
        progress.step("Running the PyTorch reference (greedy tokens, perplexity)")
        reference = compute_reference(info.path, base, spec.context_length, spec.eos_token_ids,
                                      scratch=work / "_reference", graph_facts=graph == "decoder_graph")
        facts = TransformersFacts.load(work / "_reference") if graph == "decoder_graph" else None
        shutil.rmtree(work / "_reference")

        fusion: dict[str, int] = {}
        builders: dict[str, list[Builder]] = _BUILDERS
        if facts is None:
            progress.step("Fusing operators (onnxruntime transformer optimizer)")
            fusion = _fuse_if_faithful(base, work / "_fused", reference)
        else:
            builders = _build_base_graph(info, base, progress, dtypes, facts)

        variants: dict[str, VariantEntry] = {}
        for dtype in dtypes:
            progress.step(f"Building and checking the {dtype} variant")
            base_recipe = (GRAPH_PRECISIONS["fp32"].recipe() if graph == "decoder_graph"
                           else {"graph": "optimum", "fused_operators": fusion})
            variants[dtype] = _build_checked(dtype, base, work, builders.get(dtype, []), base_recipe, reference,
                                             info.name)

        return finish_export(
            info, work, base, task=TASK, source_hash=source_hash, variants=variants,
            progress=progress, chat=spec,
        )


def _weights_of(dtype: str) -> dict[str, bool]:
    """How `onnx_parity` opens a variant's graph: float weights unpacked, fp16 ones widened per run."""
    return {"float_weights": dtype in ("fp32", "fp16", "bf16"), "fp16_weights": dtype == "fp16"}

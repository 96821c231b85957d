"""How faithful an exported decoder is to its PyTorch original.

Figures per variant: greedy-token agreement over 32 new tokens on probe prompts (the share
of tokens before the first difference), next-token agreement on a fixed real text (the
share of positions whose argmax is PyTorch's: the same measure, teacher-forced, so one
near-tie does not decide it), the largest logit difference on a prompt, whether every logit
is finite, perplexity next to the PyTorch model's, and the greedy answers to plain chat
questions (`probes.CHAT_PROBES`). `quality.judge_decoder` turns them into a verdict.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...engine.chat_template import ChatTemplate
from ...errors import ModelFileError
from ...lifecycle.memory import return_freed_memory
from ..probes import CHAT_PROBES, PROBE_PROMPTS, perplexity_text
from .reference import reference_model

if TYPE_CHECKING:  # onnxruntime's side, imported where used: the reference's child process never needs it
    from ...engine.decoder import DecoderSession

NEW_TOKENS = 32
PERPLEXITY_TOKENS = 512
ANSWER_TOKENS = 48
_TEXT_CHUNK = 128
#: Positions per run of an exported graph over the text, on its growing cache: at the sample's
#: vocabulary a piece's logits are 12.6 MB (held twice while the run returns them), against
#: 25 MB at 128, which was the fp32 check's peak (766 -> 732 MB standalone). On the sample every variant's
#: figures, with both KV caches, are those of 128-position pieces to the last digit.
_ONNX_TEXT_CHUNK = 64
_NLL_ROWS = 32  # positions per float64 pass of `token_nll`


def _messages(prompt: str | tuple[str, str]) -> list[dict[str, str]]:
    """A probe as chat messages: a question, or a (system, question) pair."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [{"role": "system", "content": prompt[0]}, {"role": "user", "content": prompt[1]}]


def _question_text(prompt: str | tuple[str, str]) -> str:
    return prompt if isinstance(prompt, str) else f"(system: {prompt[0]}) {prompt[1]}"


def _prompt_ids(base: Path, tokenizer: Any, prompts: Sequence[str | tuple[str, str]] = PROBE_PROMPTS
                ) -> list[list[int]]:
    """Probe prompts through the chat template when there is one, else as plain text."""
    try:
        template = ChatTemplate.from_folder(base)
    except ModelFileError:
        return [tokenizer.encode(" ".join(m["content"] for m in _messages(p))).ids for p in prompts]
    texts = [template.render(_messages(p)) for p in prompts]
    return [tokenizer.encode(t, add_special_tokens=False).ids for t in texts]


def token_nll(logits: np.ndarray, ids: Sequence[int], rows: int = _NLL_ROWS) -> np.ndarray:
    """Negative log-likelihood of each ``ids[i + 1]`` given ``logits[i]`` (as many as there are next ids).

    Worked in float64 ``rows`` positions at a time: the whole [512, vocabulary] array in
    float64 with its temporaries was ~6.6x one fp32 logits array (3.5 GB at Gemma's 262k
    vocabulary), the largest single cost of an export's parity check.
    """
    count = min(len(logits), len(ids) - 1)
    out = np.empty(count, dtype=np.float64)
    for start in range(0, count, rows):
        end = min(start + rows, count)
        scores = logits[start:end].astype(np.float64)
        scores -= scores.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(scores).sum(axis=1))
        out[start:end] = log_norm - scores[np.arange(end - start), list(ids[start + 1 : end + 1])]
    return out


def perplexity(logits: np.ndarray, ids: list[int]) -> float:
    """exp of the mean negative log-likelihood of ``ids[1:]`` given the logits before each."""
    return float(np.exp(token_nll(logits, ids).mean()))


@dataclass
class DecoderReference:
    """What the PyTorch model does on the probes, computed once per export."""

    prompts: list[list[int]]
    greedy: list[list[int]]
    prompt_logits: np.ndarray
    text_ids: list[int]
    text_argmax: np.ndarray
    perplexity: float
    tokenizer: Any
    eos_token_ids: list[int]
    question_ids: list[list[int]]
    answers: list[list[int]]  # PyTorch's greedy answers to CHAT_PROBES, up to an end token

    def save(self, folder: Path) -> None:
        """Write the figures as JSON and npz (no pickle); ``reference.json``, written last, marks them complete."""
        np.savez(folder / "reference.npz", prompt_logits=self.prompt_logits, text_argmax=self.text_argmax)
        figures = {"prompts": self.prompts, "greedy": self.greedy, "text_ids": self.text_ids,
                   "perplexity": self.perplexity, "eos_token_ids": self.eos_token_ids,
                   "question_ids": self.question_ids, "answers": self.answers}
        partial = folder / "reference.json.partial"
        partial.write_text(json.dumps(figures))
        partial.rename(folder / "reference.json")

    @classmethod
    def load(cls, folder: Path, tokenizer: Any) -> DecoderReference:
        """The figures `save` wrote (floats round-trip exactly through JSON and npz), with ``tokenizer``."""
        figures = json.loads((folder / "reference.json").read_text())
        with np.load(folder / "reference.npz", allow_pickle=False) as arrays:
            prompt_logits, text_argmax = arrays["prompt_logits"], arrays["text_argmax"]
        return cls(figures["prompts"], figures["greedy"], prompt_logits, figures["text_ids"], text_argmax,
                   float(figures["perplexity"]), tokenizer, figures["eos_token_ids"], figures["question_ids"],
                   figures["answers"])

    @classmethod
    def compute(cls, checkpoint: Path, base: Path, tokenizer: Any, context_length: int,
                eos_token_ids: Sequence[int] = ()) -> DecoderReference:
        """PyTorch's figures, computed in this process (imports torch): an export runs it in a child
        (`reference_process.compute_reference`) and reads what `save` wrote."""
        import torch

        model = reference_model(checkpoint)
        prompts = _prompt_ids(base, tokenizer)
        questions = _prompt_ids(base, tokenizer, [question for question, _ in CHAT_PROBES])
        eos = set(eos_token_ids)
        with torch.inference_mode():
            # Every probe and question in one batch: a 1B-shape bf16 model widens its 2.5 GB of
            # weights on every forward, and one prompt at a time took ~400 forwards (62 minutes).
            tokens = batched_greedy(model, [*prompts, *questions],
                                    [NEW_TOKENS] * len(prompts) + [ANSWER_TOKENS] * len(questions),
                                    [set()] * len(prompts) + [eos] * len(questions))
            continuations, answers = tokens[: len(prompts)], tokens[len(prompts) :]
            prompt_logits = model(input_ids=torch.tensor([prompts[0]])).logits[0].float().numpy()
            text_ids = tokenizer.encode(perplexity_text()).ids[: min(PERPLEXITY_TOKENS, context_length)]
            text_argmax, text_nll = [], []
            for start, logits in zip(range(0, len(text_ids), _TEXT_CHUNK), text_logits(model, text_ids, _TEXT_CHUNK)):
                text_argmax.append(logits.argmax(axis=1))
                text_nll.append(token_nll(logits, text_ids[start : start + len(logits) + 1]))
        nll = np.concatenate(text_nll)
        return cls(prompts, continuations, prompt_logits, text_ids, np.concatenate(text_argmax),
                   float(np.exp(nll.mean())), tokenizer, sorted(eos), questions, answers)


def batched_greedy(model: Any, rows: Sequence[list[int]], counts: Sequence[int], stops: Sequence[set[int]]
                   ) -> list[list[int]]:
    """Up to ``counts[i]`` greedy tokens after each of ``rows`` (ending at a token of ``stops[i]``), in one batch.

    Left-padded, with an attention mask and explicit positions, so each row computes what it
    would alone but for float noise: every forward reads the weights once for all rows.
    """
    import torch

    width = max(len(row) for row in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)  # pads: masked out, any id does
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row)
        mask[i, width - len(row) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
    tokens: list[list[int]] = [[] for _ in rows]
    done = [count <= 0 for count in counts]
    last = positions[:, -1:]
    while True:
        chosen = out.logits[:, -1].argmax(-1)
        for i, token in enumerate(chosen.tolist()):
            if not done[i]:
                tokens[i].append(token)
                done[i] = token in stops[i] or len(tokens[i]) >= counts[i]
        if all(done):
            return tokens
        mask = torch.cat([mask, torch.ones((len(rows), 1), dtype=mask.dtype)], dim=1)
        last = last + 1
        out = model(input_ids=chosen[:, None], attention_mask=mask, position_ids=last,
                    past_key_values=out.past_key_values, use_cache=True)


#: Config fields that scale a family's logits after ``lm_head`` in ways `text_logits` does not repeat.
_HEAD_SCALES = ("logit_scale", "logits_scaling", "output_multiplier_scale")


def text_logits(model: Any, ids: list[int], rows: int) -> Iterator[np.ndarray]:
    """The fp32 logits of ``ids`` (one sequence), ``rows`` positions at a time.

    One pass through the layers, then ``lm_head`` on ``rows`` final hidden states at a time:
    never the [len, vocabulary] array (537 MB at Gemma's vocabulary), and not one pass per
    piece (4 passes of 512 tokens at 1B). Not pieces on the KV cache either: long-rope models
    pick their rotary factors by the length seen. A family whose logits are scaled after the
    head other than by a soft cap takes one full pass per piece (``logits_to_keep``).
    """
    import torch

    config = model.config.get_text_config()  # a multimodal wrapper's (Gemma 3) text settings
    inner, head = getattr(model, "model", None), getattr(model, "lm_head", None)
    if inner is None or head is None or any(getattr(config, name, None) not in (None, 1, 1.0) for name in _HEAD_SCALES):
        for start in range(0, len(ids), rows):
            keep = torch.arange(start, min(start + rows, len(ids)))
            yield model(input_ids=torch.tensor([ids]), logits_to_keep=keep).logits[0].float().numpy()
        return
    hidden = inner(input_ids=torch.tensor([ids])).last_hidden_state[0]
    cap = getattr(config, "final_logit_softcapping", None)
    for start in range(0, len(ids), rows):
        logits = head(hidden[start : start + rows]).float()
        if cap:
            logits = torch.tanh(logits / cap) * cap
        yield logits.numpy()


def greedy_tokens(decoder: DecoderSession, ids: list[int], count: int = NEW_TOKENS,
                  eos_token_ids: Sequence[int] = ()) -> list[int]:
    """``count`` greedy tokens after ``ids``, through the engine every chat runs on."""
    from ...engine.engine import Engine
    from ...engine.request import Request

    engine = Engine(decoder, max_batch=1)
    request = Request(ids, max_tokens=count, eos_token_ids=eos_token_ids)
    engine.add_request(request)
    while engine.step():
        pass
    return request.generated


def common_prefix(a: Sequence, b: Sequence) -> int:
    """How many leading items two sequences share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def onnx_parity(model_file: Path, reference: DecoderReference, float_weights: bool = False,
                screen: Callable[[dict[str, Any]], bool] | None = None, fp16_weights: bool = False) -> dict[str, Any]:
    """The parity figures of one exported graph (``float_weights``: fp32/fp16) against ``reference``, on the CPU.

    ``fp16_weights``: its weights are fp16, widened to fp32 as each run reaches them
    (`session.create_widening_cpu_session`) rather than all held in fp32 beside the graph.

    ``screen``: asked with the text's figures (perplexity, next-token agreement) first; when it
    says no, the greedy runs are skipped and the figures so far returned (``"screened": True``):
    a candidate recipe whose perplexity already fails costs a third of the checks.
    """
    from ...engine.decoder import DecoderSession
    from ...engine.session import create_session, create_widening_cpu_session

    # Quantized graphs get the runtime's own session, so the figures are what users get:
    # int8/int4 compute with int8 activations only on prepacked weights (logits 1.15 apart
    # on the sample without). Float graphs skip the packed copy of their weights, for the
    # export's memory (fp16 on the CPU: 376 MB instead of 853 MB): unpacked fp32 logits are
    # within 7e-5 of packed ones; fp16 is made for CUDA and CoreML, whose kernels neither CPU
    # path reproduces, so its CPU check stands for overflow and rounding (0.12 apart). An fp16
    # graph's weights are widened per run, not held in fp32 (the sample's check: 797 -> ~600 MB
    # peak; the same figures, slower by the widening).
    if fp16_weights:
        decoder = DecoderSession(create_widening_cpu_session(model_file))
    else:
        decoder = DecoderSession(create_session(model_file, "cpu", prepack=not float_weights, arena=False))
    text = _text_figures(decoder, reference)
    if screen is not None and not screen(text):
        del decoder
        return_freed_memory()
        return {**text, "screened": True}
    agreements = [
        common_prefix(greedy_tokens(decoder, ids), expected) / NEW_TOKENS
        for ids, expected in zip(reference.prompts, reference.greedy)
    ]
    prompt_logits = decoder.all_logits(reference.prompts[0])  # the engine's Engine.all_logits
    answers = [greedy_tokens(decoder, ids, ANSWER_TOKENS, reference.eos_token_ids) for ids in reference.question_ids]
    del decoder
    return_freed_memory()  # the session's buffers, before the next variant is built
    return {
        "reference": "pytorch fp32",
        "prompts": len(reference.prompts),
        "new_tokens": NEW_TOKENS,
        "greedy_agreement": round(float(np.mean(agreements)), 4),
        "max_logit_diff": float(np.abs(prompt_logits - reference.prompt_logits).max()),
        **text,
        "finite": text["finite"] and bool(np.isfinite(prompt_logits).all()),
        "probes": chat_probes(reference, answers),
    }


def _text_figures(decoder: DecoderSession, reference: DecoderReference) -> dict[str, Any]:
    """Perplexity and next-token agreement on the fixed text, and whether its logits were finite.

    The text's logits, `_ONNX_TEXT_CHUNK` positions per run on the cache, reduced to what the
    gates read: argmax, NLL, whether finite.
    """
    text = reference.text_ids
    finite = True
    argmax_parts, nll_parts = [], []
    start = 0
    # Not zip/enumerate: their reused result tuple would hold each piece through the next one's run.
    for logits in decoder.logits_in_pieces(text, _ONNX_TEXT_CHUNK):
        finite = finite and bool(np.isfinite(logits).all())
        argmax_parts.append(logits.argmax(axis=1))
        nll_parts.append(token_nll(logits, text[start : start + len(logits) + 1]))
        start += len(logits)
        del logits  # freed before the next piece is computed (12.6 MB at the sample's vocabulary)
    text_argmax = np.concatenate(argmax_parts)
    return {
        "perplexity": round(float(np.exp(np.concatenate(nll_parts).mean())), 4),
        "perplexity_fp32": round(reference.perplexity, 4),
        "perplexity_tokens": len(text),
        "finite": finite,
        "top1_agreement": round(float((text_argmax == reference.text_argmax)[:-1].mean()), 4),
    }


def _answer_text(reference: DecoderReference, ids: list[int]) -> str:
    return reference.tokenizer.decode([i for i in ids if i not in reference.eos_token_ids])


def chat_probes(reference: DecoderReference, answers: list[list[int]]) -> list[dict[str, Any]]:
    """Each plain question with the variant's answer and, where it derails, why."""
    from ..quality import derailment

    expected_texts = [_answer_text(reference, ids) for ids in reference.answers]
    # A model that answers none of them (a tiny random one) says nothing a loop could be
    # measured against: its greedy text falls into loops or not by chance of near-ties.
    judged = any(k.lower() in text.lower() for (_, keywords), text in zip(CHAT_PROBES, expected_texts) for k in keywords)
    rows = []
    for (question, keywords), expected, expected_text, got in zip(CHAT_PROBES, reference.answers, expected_texts, answers):
        reason = derailment(got, _answer_text(reference, got), expected, expected_text, keywords) if judged else None
        rows.append({"question": _question_text(question), "answer": _answer_text(reference, got)[:200],
                     "derailed": reason})
    return rows

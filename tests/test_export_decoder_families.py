"""`ortmodels export` and the chat runtime on Llama, Qwen2, Qwen3, Mistral, Phi-3 and Gemma 1/2/3.

Each case builds a tiny random-weight causal LM with a ChatML template, exports it in fp32
and int4, checks the manifest, then, independently of the export's own parity check,
compares 16 greedy tokens of the fp32 ONNX graph with PyTorch's on the original
checkpoint (neither side stops at end-of-turn), and finally chats through
`OnnxChatModel`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from tests.tiny_decoders import EOS_ID, FAMILIES, IM_END, build_tiny_decoder

#: An export takes about 30 s on 2 cores, several times that beside other work: a longer bound
#: than the suite's default (pyproject.toml).
pytestmark = pytest.mark.timeout(600)

NEW_TOKENS = 16
MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
]


def _torch_greedy(checkpoint: Path, prompt_ids: list[int], count: int) -> list[int]:
    """``count`` argmax tokens from PyTorch with its KV cache, never stopping at EOS."""
    import torch

    from ortmodels.export.decoder.parity import reference_model

    model = reference_model(checkpoint)  # eager attention where SDPA would drop Gemma 2's soft cap
    tokens: list[int] = []
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([prompt_ids]), use_cache=True)
        for _ in range(count):
            tokens.append(int(out.logits[0, -1].argmax()))
            out = model(
                input_ids=torch.tensor([[tokens[-1]]]), past_key_values=out.past_key_values, use_cache=True
            )
    return tokens


def _onnx_greedy(model_file: Path, prompt_ids: list[int], count: int) -> list[int]:
    """The same loop on the exported graph, through the runtime's own decoder session."""
    from ortmodels.engine.decoder import DecoderSession, DecoderState
    from ortmodels.engine.session import create_session

    decoder = DecoderSession(create_session(model_file, "cpu"))
    state = DecoderState()
    logits = decoder.forward(state, prompt_ids)
    tokens: list[int] = []
    for _ in range(count):
        tokens.append(int(np.argmax(logits)))
        logits = decoder.forward(state, [tokens[-1]])
    assert state.length == len(prompt_ids) + count
    return tokens


@pytest.mark.parametrize("family", ["llama", "phi3", "gemma2", "gemma3_text"])
def test_the_references_batched_greedy_and_one_pass_text_are_each_rows_own(tmp_path: Path, family: str) -> None:
    """The export's PyTorch reference decodes its probes as one left-padded batch and reads the
    text's logits from one pass: the same tokens as each prompt alone (Gemma 2's soft cap, the
    Gemma fixtures' 8-token sliding window shorter than the prompts), the same logits."""
    import json

    import torch

    from ortmodels.export.decoder.parity import (
        batched_greedy,
        reference_model,
        text_logits,
    )

    checkpoint = build_tiny_decoder(tmp_path / family, family)
    vocab = json.loads((checkpoint / "config.json").read_text())["vocab_size"]
    rng = np.random.default_rng(0)
    rows = [rng.integers(8, vocab, size=n).tolist() for n in (5, 17, 11)]
    alone = [_torch_greedy(checkpoint, row, 12) for row in rows]
    model = reference_model(checkpoint)
    stop = alone[1][4]  # the second row ends at its fifth token
    with torch.inference_mode():
        batched = batched_greedy(model, rows, [12, 12, 7], [set(), {stop}, set()])
        text = rng.integers(8, vocab, size=40).tolist()
        whole = model(input_ids=torch.tensor([text])).logits[0].numpy()
        pieces = np.concatenate(list(text_logits(model, text, 16)))
    assert batched == [alone[0], alone[1][: alone[1].index(stop) + 1], alone[2][:7]]
    np.testing.assert_allclose(pieces, whole, rtol=0, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_export_decoder_family_matches_pytorch(tmp_path: Path, family: str) -> None:
    _export_and_chat(tmp_path, family, graph="ortmodels")


@pytest.mark.slow
def test_refused_checkpoint_falls_back_to_optimum(tmp_path: Path) -> None:
    """Long-rope Phi-3 is refused by our graph builder; optimum's graph must still match PyTorch."""
    _export_and_chat(tmp_path, "phi3", graph="optimum", long_rope=True)


def _export_and_chat(tmp_path: Path, family: str, graph: str, long_rope: bool = False) -> None:
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
    from transformers import AutoTokenizer

    from ortmodels.export import export_model
    from ortmodels.runtime.chat import OnnxChatModel
    from ortmodels.store import ModelStore

    name = f"tiny-{family}"
    root = tmp_path / "models"
    folder = build_tiny_decoder(root / name, family, long_rope=long_rope)

    # -- export -------------------------------------------------------------------------------
    outcome = export_model(ModelStore(root), name, ["fp32", "int4"])
    assert not outcome.skipped
    manifest = outcome.manifest
    assert manifest.kind == "chat"
    assert manifest.model_type == family
    assert manifest.chat is not None
    assert EOS_ID in manifest.chat.eos_token_ids
    assert manifest.chat.context_length == 256
    assert set(manifest.variants) == {"fp32", "int4"}

    fp32 = manifest.variants["fp32"].parity
    assert fp32["greedy_agreement"] == 1.0, fp32
    assert fp32["max_logit_diff"] < 1e-3, fp32

    int4 = manifest.variants["int4"]
    assert int4.quantization is not None and int4.quantization["bits"] == 4
    # Which graph: ours (GroupQueryAttention, MatMulNBits) for every family it takes, else optimum's.
    assert int4.quantization.get("graph", "optimum") == graph, int4.quantization
    if graph == "optimum":  # our graph's int4 mix, in two passes of onnxruntime's quantizer
        assert int4.quantization["eight_bit_nodes"] > 0 and "lm_head" in int4.quantization["eight_bit"]
    assert math.isfinite(int4.parity["perplexity"]) and int4.parity["perplexity"] > 0, int4.parity

    # A second export of the same checkpoint is a no-op.
    assert export_model(ModelStore(root), name, ["fp32", "int4"]).skipped

    # -- greedy tokens: PyTorch on the checkpoint vs. ONNX Runtime on the export ------------------
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.convert_tokens_to_ids(IM_END) == EOS_ID
    prompt_ids = list(tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True))
    assert prompt_ids[-1] != EOS_ID and len(prompt_ids) > 10

    model_file = root / name / "onnx" / "fp32" / "model.onnx"
    assert model_file.is_file()
    expected = _torch_greedy(folder, prompt_ids, NEW_TOKENS)
    assert len(set(expected)) > 4, f"degenerate fixture: PyTorch repeats itself ({expected})"
    got = _onnx_greedy(model_file, prompt_ids, NEW_TOKENS)
    assert got == expected

    # -- the LangChain chat model ---------------------------------------------------------------
    chat = OnnxChatModel(model_path=root / name, dtype="fp32", max_tokens=8)
    lc_messages = [SystemMessage(MESSAGES[0]["content"]), HumanMessage(MESSAGES[1]["content"])]
    # The runtime renders and tokenizes the prompt exactly as transformers does.
    assert chat.render_prompt(lc_messages) == tokenizer.apply_chat_template(
        MESSAGES, add_generation_prompt=True, tokenize=False
    )
    assert chat.prompt_token_ids(lc_messages) == prompt_ids

    reply = chat.invoke("hello")
    assert isinstance(reply, AIMessage)
    assert isinstance(reply.content, str)
    assert reply.usage_metadata is not None
    assert reply.usage_metadata["input_tokens"] > 0
    assert 0 <= reply.usage_metadata["output_tokens"] <= 8
    assert reply.response_metadata["variant"] == "fp32"
    assert reply.response_metadata["finish_reason"] in ("stop", "length")

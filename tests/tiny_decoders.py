"""Tiny random-weight causal LM checkpoints (Llama, Qwen2/3, Mistral, Phi-3, Gemma 1/2/3), built offline.

`build_tiny_decoder` writes a complete checkpoint folder (config, safetensors weights,
``generation_config.json``, a fast byte-level BPE tokenizer with a ChatML chat template)
that both ``ortmodels export`` and transformers can load without any network access and
without sentencepiece. Weights are random, so the text is gibberish; the point is that the
ONNX export computes exactly what PyTorch computes.
"""

from __future__ import annotations

from pathlib import Path

HIDDEN_SIZE = 64
INTERMEDIATE_SIZE = 128  # a multiple of the int4/int8 block size (32), as is HIDDEN_SIZE
NUM_LAYERS = 2
NUM_HEADS = 4
NUM_KV_HEADS = 2
HEAD_DIM = HIDDEN_SIZE // NUM_HEADS
MAX_POSITIONS = 256
VOCAB_SIZE = 384  # 256 byte symbols + the special tokens + learned merges
# Ten times the usual 0.02: at 0.02 the tied-embedding families (Qwen2, Gemma) just repeat the
# last token forever (the residual stream is dominated by that token's own embedding), which
# would make a greedy-token comparison nearly blind to KV-cache mistakes.
INITIALIZER_RANGE = 0.2

FAMILIES = ("llama", "qwen2", "mistral", "phi3", "gemma", "qwen3", "gemma2", "gemma3_text")
#: The sliding window of the Gemma 2/3 fixtures: shorter than the tests' prompts plus their generations.
SLIDING_WINDOW = 8
#: Families whose norm weights are randomized after init (transformers starts Gemma's (1 + w) at w = 0 and
#: q/k norms at 1, which would hide a missing offset or a norm applied to the wrong axis; with the
#: scaled tied embedding dominating the residual stream, Gemma 2/3 would also repeat the last token).
_RANDOM_NORMS = ("qwen3", "gemma2", "gemma3_text")

# Special tokens, in vocabulary order (ids 0, 1, 2, ...).
PAD, BOS, EOS_TEXT, UNK, IM_START, IM_END = "<pad>", "<s>", "</s>", "<unk>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = (PAD, BOS, EOS_TEXT, UNK, IM_START, IM_END)
PAD_ID, BOS_ID, EOS_TEXT_ID, UNK_ID, IM_START_ID, IM_END_ID = range(len(SPECIAL_TOKENS))
EOS_ID = IM_END_ID  # a chat turn ends with <|im_end|>

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# What the BPE merges are learned from: fixed, so the tokenizer is the same on every run.
_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "What is the capital of France? Paris is the capital and most populous city of France.",
    "Write a short poem about the sea. The sea is deep and blue, the waves are white.",
    "Explain in one sentence what a hash table is: a table that maps keys to values.",
    "hello world, hello there, how are you today? I am fine, thank you.",
    "A man is playing a guitar on a street corner while the people walk by.",
    "This module defines the functions and classes of the standard library for the user.",
    "Return the value of the argument, or raise an error when the input is not valid.",
    "user assistant system message content the and of to in is that for with on as it",
]


def _backend_tokenizer():
    """A byte-level BPE tokenizer with exactly VOCAB_SIZE tokens (specials first)."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer

    tokenizer = Tokenizer(BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=1,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS * 4, trainer=trainer)
    if tokenizer.get_vocab_size() != VOCAB_SIZE:
        raise RuntimeError(
            f"The tiny BPE tokenizer has {tokenizer.get_vocab_size()} tokens, not {VOCAB_SIZE}: "
            "add text to _CORPUS so there are enough merges."
        )
    for expected, token in enumerate(SPECIAL_TOKENS):
        assert tokenizer.token_to_id(token) == expected, token
    return tokenizer


def build_tokenizer():
    """The fast tokenizer every family shares, with its ChatML template."""
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_backend_tokenizer(),
        bos_token=BOS,
        eos_token=IM_END,
        unk_token=UNK,
        pad_token=PAD,
        additional_special_tokens=[IM_START, EOS_TEXT],
        model_max_length=MAX_POSITIONS,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    assert tokenizer.eos_token_id == EOS_ID
    assert len(tokenizer) == VOCAB_SIZE
    return tokenizer


#: A reasoning model's tags: single added tokens after the vocabulary, not special (as Qwen3's are),
#: so they are text in the output as they are in Qwen3's.
THINK_TOKENS = ("<think>", "</think>")
#: The context of the reasoning model: Qwen3's template offers tools in a long system prompt.
THINKING_POSITIONS = 768
#: Qwen3-0.6B's own chat template (tests/templates/README.md says where it comes from).
QWEN3_TEMPLATE = Path(__file__).parent / "templates" / "Qwen-Qwen3-0.6B.jinja"


def build_thinking_tokenizer(template: str):
    """The shared tokenizer with ``<think>`` and ``</think>`` added as single tokens, and ``template``."""
    from tokenizers import AddedToken

    tokenizer = build_tokenizer()
    tokenizer.add_tokens([AddedToken(tag, special=False, normalized=False) for tag in THINK_TOKENS])
    tokenizer.chat_template = template
    assert len(tokenizer) == VOCAB_SIZE + len(THINK_TOKENS)
    return tokenizer


def _config(family: str):
    from transformers import (
        Gemma2Config,
        Gemma3TextConfig,
        GemmaConfig,
        LlamaConfig,
        MistralConfig,
        Phi3Config,
        Qwen2Config,
        Qwen3Config,
    )

    common = dict(
        vocab_size=VOCAB_SIZE,
        hidden_size=HIDDEN_SIZE,
        intermediate_size=INTERMEDIATE_SIZE,
        num_hidden_layers=NUM_LAYERS,
        num_attention_heads=NUM_HEADS,
        num_key_value_heads=NUM_KV_HEADS,
        max_position_embeddings=MAX_POSITIONS,
        pad_token_id=PAD_ID,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        initializer_range=INITIALIZER_RANGE,
    )
    if family == "llama":
        return LlamaConfig(tie_word_embeddings=False, **common)
    if family == "qwen2":
        # Small Qwen2 checkpoints (0.5B, 1.5B) tie the embeddings; no sliding window.
        return Qwen2Config(tie_word_embeddings=True, use_sliding_window=False, **common)
    if family == "mistral":
        return MistralConfig(tie_word_embeddings=False, sliding_window=MAX_POSITIONS, **common)
    if family == "phi3":
        # Partial rotary (as Phi-4-mini): 2 heads of 32, the first 16 features rotated; no long-rope
        # scaling (needs original_max_position_embeddings and factors).
        common.update(num_attention_heads=2, num_key_value_heads=1)
        return Phi3Config(
            tie_word_embeddings=False,
            partial_rotary_factor=0.5,
            rope_scaling=None,
            original_max_position_embeddings=MAX_POSITIONS,
            sliding_window=None,
            **common,
        )
    if family == "gemma":
        return GemmaConfig(tie_word_embeddings=True, head_dim=HEAD_DIM, **common)
    if family == "qwen3":
        return Qwen3Config(tie_word_embeddings=True, head_dim=HEAD_DIM, use_sliding_window=False, **common)
    if family == "gemma2":
        # Layer 0 slides, layer 1 attends to everything; soft caps small enough to bite on random weights.
        return Gemma2Config(
            tie_word_embeddings=True, head_dim=HEAD_DIM, query_pre_attn_scalar=32, sliding_window=SLIDING_WINDOW,
            attn_logit_softcapping=4.0, final_logit_softcapping=8.0, **common,
        )
    if family == "gemma3_text":
        # Local and global layers with their two rotary bases (the global one linearly scaled).
        common.update(num_hidden_layers=4)
        return Gemma3TextConfig(
            tie_word_embeddings=True, head_dim=HEAD_DIM, query_pre_attn_scalar=HEAD_DIM, sliding_window=SLIDING_WINDOW,
            layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
            rope_theta=1_000_000.0, rope_local_base_freq=10_000.0, rope_scaling={"rope_type": "linear", "factor": 8.0},
            **common,
        )
    raise ValueError(f"Unknown family {family!r}; expected one of {', '.join(FAMILIES)}.")


def _long_rope_phi3():
    """Phi-3 with long-rope scaling (as Phi-3.5): our graph refuses it, so it goes through optimum."""
    from transformers import Phi3Config

    config = _config("phi3")
    half = int(config.hidden_size // config.num_attention_heads * config.partial_rotary_factor) // 2
    return Phi3Config.from_dict({
        **config.to_dict(),
        # At the context length: optimum traces the rotary factors once, with a short input, so
        # its graph keeps the short factors past original_max_position_embeddings, where
        # PyTorch switches to the long ones; the quality gates fail such an export (seen with
        # MAX_POSITIONS // 2: next-token agreement 0.20 on the 256-token text).
        "original_max_position_embeddings": MAX_POSITIONS,
        "rope_scaling": {"type": "longrope", "short_factor": [1.0] * half, "long_factor": [2.0] * half},
    })


def _with_window(config, family: str):
    """Mistral, Phi-3 (every layer) or Qwen2/3 (the second layer) with a window of SLIDING_WINDOW."""
    if family in ("mistral", "phi3"):
        config.sliding_window = SLIDING_WINDOW
    elif family in ("qwen2", "qwen3"):
        config.use_sliding_window, config.sliding_window, config.max_window_layers = True, SLIDING_WINDOW, 1
        config.layer_types = ["full_attention"] + ["sliding_attention"] * (config.num_hidden_layers - 1)
    else:
        raise ValueError(f"window is a setting of mistral, phi3, qwen2 and qwen3, not {family}.")
    return config


def build_tiny_decoder(folder: Path, family: str, long_rope: bool = False, window: bool = False,
                       thinking_template: str | None = None) -> Path:
    """Write a tiny random causal LM checkpoint of ``family`` into ``folder``; returns it.

    ``long_rope`` (Phi-3 only): long-rope scaling, which sends the export through optimum.
    ``window``: a sliding window of SLIDING_WINDOW tokens for families where it is optional.
    ``thinking_template``: a reasoning model's chat template (`QWEN3_TEMPLATE`'s text), with
    ``<think>`` and ``</think>`` added to the vocabulary as single tokens.
    """
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if long_rope and family != "phi3":
        raise ValueError("long_rope is a Phi-3 setting.")
    config = _long_rope_phi3() if long_rope else _config(family)
    if window:
        config = _with_window(config, family)
    tokenizer = build_tokenizer() if thinking_template is None else build_thinking_tokenizer(thinking_template)
    config.vocab_size = len(tokenizer)
    if thinking_template is not None:  # room for Qwen3's tools prompt (419 tokens with one tool) and a call
        config.max_position_embeddings = THINKING_POSITIONS

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    if family in _RANDOM_NORMS:
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.endswith("norm.weight"):
                    param.add_(torch.randn_like(param) * 0.3)
                if name.endswith(("post_attention_layernorm.weight", "post_feedforward_layernorm.weight")):
                    param.add_(6.0)  # Gemma's sandwich norms: layer outputs that can outweigh the tied embedding
    model.generation_config = GenerationConfig(
        bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID, do_sample=False
    )
    model.save_pretrained(folder, safe_serialization=True)  # also writes generation_config.json
    tokenizer.save_pretrained(folder)

    for required in (
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ):
        if not (folder / required).is_file():
            raise RuntimeError(f"build_tiny_decoder wrote no {required} into {folder}")
    return folder

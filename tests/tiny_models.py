"""Tiny random-weight sentence-transformers checkpoints, built offline for export tests.

`build_tiny_encoder` writes a complete checkpoint folder (config, safetensors weights, fast
tokenizer, ``modules.json``, ``1_Pooling/config.json``, ``sentence_bert_config.json`` and,
when asked, ``2_Normalize``) that both ``ortmodels export`` and sentence-transformers can
load without any network access and without sentencepiece.
"""

from __future__ import annotations

import json
from pathlib import Path

HIDDEN_SIZE = 32
MAX_SEQ_LENGTH = 64
MAX_POSITIONS = 128

FAMILIES = ("bert", "xlm-roberta", "mpnet")
POOLING_MODES = ("mean", "cls", "lasttoken", "max")

# Special tokens per family, in vocabulary order (ids 0, 1, 2, ...).
_BERT_SPECIALS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}
_ROBERTA_SPECIALS = {"cls": "<s>", "pad": "<pad>", "sep": "</s>", "unk": "<unk>", "mask": "<mask>"}

_WORDS = """
the be to of and a in that have i it for not on with he as you do at this but his by from they
we say her she or an will my one all would there their what so up out if about who get which go
me when make can like time no just him know take people into year your good some could them see
other than then now look only come its over think also back after use two how our work first well
way even new want because any these give day most us is are was were been has had did does said
made went got very much many more such where why here through long down still should own must
same tell few between before under never life world home school house city country place part
hand eye head face night water room mother father child word point number group problem fact
question answer thing man woman friend family game team money book story music art car road
street door food fish bird dog cat fox horse tree flower sun moon star sky rain snow wind fire
quick brown lazy jumps jump over dog red blue green black white small big large little old young
high low short open close begin end start stop run walk play read write speak listen learn teach
help need love hate feel find keep let put seem show try call ask turn move live believe bring
happen hold stand lose pay meet include continue set change lead understand watch follow create
buy sell build stay fall cut reach kill remain suggest raise pass report decide pull capital
paris france london england germany berlin tokyo japan city most populous guitar street corner
install python package local file wheel data model text vector vectors embedding embeddings
sentence sentences meaning meanings close together similar search query document language
computer network system program code test tests export runtime inference token tokens mean
select name count users group having cell energy power house produce through respiration
believe butter long inputs truncated limit rather than crashing short ok yes hello world
today tomorrow yesterday morning evening week month always sometimes often usually ever again
""".split()

_PUNCTUATION = list(".,;:!?'\"()[]{}-_/\\*&%$#@+=<>|~`^")


def _vocabulary(specials: list[str]) -> dict[str, int]:
    tokens: list[str] = list(specials)
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    digits = [str(d) for d in range(10)]
    tokens += letters + digits + _PUNCTUATION
    tokens += ["##" + c for c in letters + digits]
    tokens += _WORDS
    vocab: dict[str, int] = {}
    for token in tokens:
        vocab.setdefault(token, len(vocab))
    return vocab


def _backend_tokenizer(vocab: dict[str, int], unk: str, cls: str, sep: str, pair_doubles_sep: bool):
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece

    tokenizer = Tokenizer(WordPiece(vocab=vocab, unk_token=unk, max_input_chars_per_word=100))
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=True, lowercase=True
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    pair = f"{cls} $A {sep} {sep} $B:1 {sep}:1" if pair_doubles_sep else f"{cls} $A {sep} $B:1 {sep}:1"
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}",
        pair=pair,
        special_tokens=[(cls, vocab[cls]), (sep, vocab[sep])],
    )
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    return tokenizer


def _family_parts(family: str):
    """(config, fast tokenizer) for ``family``, with matching vocabulary and padding id."""
    from transformers import (
        BertConfig,
        BertTokenizerFast,
        MPNetConfig,
        MPNetTokenizerFast,
        XLMRobertaConfig,
        XLMRobertaTokenizerFast,
    )

    sizes = dict(
        hidden_size=HIDDEN_SIZE,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
    )
    if family == "bert":
        s = _BERT_SPECIALS
        vocab = _vocabulary([s["pad"], s["unk"], s["cls"], s["sep"], s["mask"]])
        backend = _backend_tokenizer(vocab, s["unk"], s["cls"], s["sep"], pair_doubles_sep=False)
        tokenizer = BertTokenizerFast(
            tokenizer_object=backend,
            do_lower_case=True,
            unk_token=s["unk"],
            sep_token=s["sep"],
            pad_token=s["pad"],
            cls_token=s["cls"],
            mask_token=s["mask"],
            model_max_length=MAX_POSITIONS,
        )
        config = BertConfig(
            vocab_size=len(vocab),
            max_position_embeddings=MAX_POSITIONS,
            pad_token_id=vocab[s["pad"]],
            **sizes,
        )
        return config, tokenizer

    if family not in ("xlm-roberta", "mpnet"):
        raise ValueError(f"Unknown family {family!r}; expected one of {', '.join(FAMILIES)}.")
    s = _ROBERTA_SPECIALS
    vocab = _vocabulary([s["cls"], s["pad"], s["sep"], s["unk"], s["mask"]])
    backend = _backend_tokenizer(vocab, s["unk"], s["cls"], s["sep"], pair_doubles_sep=True)
    special_kwargs = dict(
        bos_token=s["cls"],
        eos_token=s["sep"],
        cls_token=s["cls"],
        sep_token=s["sep"],
        unk_token=s["unk"],
        pad_token=s["pad"],
        mask_token=s["mask"],
        model_max_length=MAX_POSITIONS,
    )
    ids = dict(pad_token_id=vocab[s["pad"]], bos_token_id=vocab[s["cls"]], eos_token_id=vocab[s["sep"]])
    # RoBERTa-style position ids start after the padding index: two extra positions.
    if family == "xlm-roberta":
        tokenizer = XLMRobertaTokenizerFast(tokenizer_object=backend, **special_kwargs)
        config = XLMRobertaConfig(
            vocab_size=len(vocab),
            max_position_embeddings=MAX_POSITIONS + 2,
            type_vocab_size=1,
            **ids,
            **sizes,
        )
    else:
        tokenizer = MPNetTokenizerFast(tokenizer_object=backend, do_lower_case=True, **special_kwargs)
        config = MPNetConfig(
            vocab_size=len(vocab),
            max_position_embeddings=MAX_POSITIONS + 2,
            **ids,
            **sizes,
        )
    assert tokenizer.pad_token_id == config.pad_token_id
    return config, tokenizer


def _write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def build_tiny_encoder(folder: Path, family: str, pooling: str, normalize: bool) -> Path:
    """Write a tiny random sentence-transformers checkpoint of ``family`` into ``folder``."""
    import torch
    from transformers import AutoModel

    if pooling not in POOLING_MODES:
        raise ValueError(f"Unknown pooling {pooling!r}; expected one of {', '.join(POOLING_MODES)}.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    config, tokenizer = _family_parts(family)
    torch.manual_seed(0)
    model = AutoModel.from_config(config).eval()
    model.save_pretrained(folder, safe_serialization=True)  # sets config.architectures
    tokenizer.save_pretrained(folder)

    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if normalize:
        modules.append(
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
        )
        (folder / "2_Normalize").mkdir(exist_ok=True)
    _write_json(folder / "modules.json", modules)
    _write_json(
        folder / "1_Pooling" / "config.json",
        {
            "word_embedding_dimension": HIDDEN_SIZE,
            "pooling_mode_cls_token": pooling == "cls",
            "pooling_mode_mean_tokens": pooling == "mean",
            "pooling_mode_max_tokens": pooling == "max",
            "pooling_mode_mean_sqrt_len_tokens": False,
            "pooling_mode_weightedmean_tokens": False,
            "pooling_mode_lasttoken": pooling == "lasttoken",
            "include_prompt": True,
        },
    )
    _write_json(folder / "sentence_bert_config.json", {"max_seq_length": MAX_SEQ_LENGTH, "do_lower_case": False})

    for required in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        if not (folder / required).is_file():
            raise RuntimeError(f"build_tiny_encoder wrote no {required} into {folder}")
    return folder

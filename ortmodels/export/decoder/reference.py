"""The PyTorch model an export is compared with: fp32 arithmetic, the weights held as stored.

A bf16 or fp16 checkpoint's matrices stay in their own dtype (half of fp32's bytes) and are
widened to fp32 a few rows at a time, into one reused buffer, just before each product:
every number the model computes is what an fp32 copy of the checkpoint computes (widening
bf16/fp16 is exact), but the export never holds the weights in fp32. Holding them in fp32
was the export's peak: 2x a bf16 checkpoint (4.9 GB for Llama 3.2 1B's 2.5 GB file).

An fp32 checkpoint is mapped by ``from_pretrained`` and used in place; each module hands its
weights' mapped pages back after its forward (`release_mapped_pages_after_use`), so the
reference holds about one layer of them, not the file (the sample: 0.78 GB instead of 1.23 GB).

Only modules whose own forward is plain PyTorch's are narrowed (``nn.Linear``,
``nn.Embedding``, a tied head sharing the embedding's matrix); a family's own embedding
class (Gemma 3 scales inside it) keeps its matrix in fp32.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ...errors import ExportError
from ..checkpoint.weights import open_weights

#: fp32 elements of one widened piece of a matrix (4 MB: stays in the CPU's caches between
#: the widening and the product that reads it).
PIECE_ELEMENTS = 1 << 20
_NARROW = {"BF16", "F16"}


def reference_model(checkpoint: Path) -> Any:
    """The PyTorch model of ``checkpoint`` computing in fp32, its matrices kept as stored.

    Eager attention where the config soft-caps attention logits (Gemma 2): transformers' SDPA
    path silently drops the cap, so it computes another model than the checkpoint's.

    The model is built unwritten (no resident pages) and filled tensor by tensor from plain
    reads (`checkpoint.weights`), 8 MB at a time, not by ``from_pretrained``: that maps the
    checkpoint and widens it to fp32 while the mapped pages stay resident (7.93 GB = 3.2x a
    1B-shape bf16 checkpoint).
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.modeling_utils import no_init_weights

    config = json.loads((checkpoint / "config.json").read_text())
    extra = {"attn_implementation": "eager"} if config.get("attn_logit_softcapping") else {}
    with open_weights(checkpoint) as weights, torch.no_grad():
        if weights.float_dtypes() <= {"F32"}:  # mapped by from_pretrained and used in place: no copy
            model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32, **extra).eval()
            release_mapped_pages_after_use(model, checkpoint)
            return model
        with no_init_weights():  # parameters stay unwritten (no resident pages) until filled below
            model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(checkpoint), dtype=torch.float32,
                                                     **extra)
        model.tie_weights()  # a tied head is its embedding (from_pretrained ties after loading too)
        targets = dict(model.named_parameters(remove_duplicate=False))
        targets.update(model.named_buffers())
        if not set(weights.names()) <= set(targets):  # names transformers renames while loading
            del model, targets
            return AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32, **extra).eval()
        narrowable = _narrowable(model)
        stored = {"BF16": torch.bfloat16, "F16": torch.float16}
        for name in weights.names():
            target = targets[name]
            dtype = weights.dtype(name)
            if dtype in _NARROW and id(target) in narrowable:  # kept as stored; the fp32 pages never written
                target.data = torch.empty(target.shape, dtype=stored[dtype])
                flat = target.data.view(torch.int16).view(-1)
                for first, piece, _ in weights.pieces(name):  # the raw bits, 8 MB at a time
                    flat[first : first + len(piece)].copy_(torch.from_numpy(piece.view("int16")))
                continue
            flat = target.view(-1)
            for first, piece, piece_dtype in weights.pieces(name):  # never a whole stored tensor beside its fp32 one
                source = torch.from_numpy(piece)
                flat[first : first + len(piece)].copy_(source.view(torch.bfloat16) if piece_dtype == "BF16" else source)
    missing = {name for name, _ in model.named_parameters()} - set(weights.names())  # a tied head is its embedding
    if missing:
        raise ExportError(f"{checkpoint}: the checkpoint has no tensors for {sorted(missing)[:5]}.")
    _widen_when_used(model)
    return model.eval()


_MADV_DONTNEED = 4


def _checkpoint_mappings(checkpoint: Path) -> list[tuple[int, int]]:
    """Address ranges of this process's mappings of ``checkpoint``'s safetensors files none of whose pages
    is a private copy (``Anonymous: 0 kB``): dropping their pages loses nothing, they are the file's."""
    folder = f"{checkpoint.resolve()}/"
    ranges: list[tuple[int, int]] = []
    current: tuple[int, int] | None = None
    try:
        lines = Path("/proc/self/smaps").read_text().splitlines()
    except OSError:  # not Linux
        return []
    for line in lines:
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5 and ":" not in fields[0]:  # a mapping's first line
            path = fields[5] if len(fields) >= 6 else ""
            start, end = (int(x, 16) for x in fields[0].split("-"))
            current = (start, end) if path.startswith(folder) and path.endswith(".safetensors") else None
        elif current is not None and fields[0] == "Anonymous:":
            if fields[1] == "0":
                ranges.append(current)
            current = None
    return ranges


def release_mapped_pages_after_use(model: Any, checkpoint: Path) -> int:
    """After each module's forward, drop the resident pages of its weights mapped from ``checkpoint``.

    Pages stay in the kernel's page cache and are mapped again by the next forward that reads
    them (minor faults, no disk read while memory allows), so the values are the file's; the
    process holds one module's weights at a time instead of the whole file. Only weights wholly
    inside mappings with no private page are touched (`_checkpoint_mappings`); Linux with glibc
    only. Returns the number of modules that drop their pages.
    """
    import ctypes
    import ctypes.util
    import mmap

    ranges = _checkpoint_mappings(checkpoint)
    if not ranges:
        return 0
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        madvise = libc.madvise
    except (OSError, AttributeError):
        return 0
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    page = mmap.PAGESIZE
    hooked = 0
    for module in model.modules():
        spans = []
        for tensor in [*module._parameters.values(), *module._buffers.values()]:
            if tensor is None or not tensor.is_contiguous():
                continue
            start = tensor.data_ptr()
            end = start + tensor.numel() * tensor.element_size()
            low, high = -(-start // page) * page, end // page * page  # whole pages only: neighbours keep theirs
            if high > low and any(a <= start and end <= b for a, b in ranges):
                spans.append((low, high - low))
        if spans:
            module.register_forward_hook(_dropper(madvise, spans))
            hooked += 1
    return hooked


def _dropper(madvise: Any, spans: list[tuple[int, int]]) -> Any:
    def drop(*_: Any) -> None:  # a forward hook returning something would replace the module's output
        for address, length in spans:
            madvise(address, length, _MADV_DONTNEED)

    return drop


def _narrowable(model: Any) -> set[int]:
    """ids of the weights every module using them is a plain ``nn.Linear`` or ``nn.Embedding``."""
    from torch import nn

    owners: dict[int, list[Any]] = {}
    for module in model.modules():
        weight = module._parameters.get("weight")
        if weight is not None:
            owners.setdefault(id(weight), []).append(module)
    return {key for key, modules in owners.items() if all(type(m) in (nn.Linear, nn.Embedding) for m in modules)}


def _widen_when_used(model: Any) -> None:
    """Give every narrowed module a forward that computes in fp32 from its stored weights."""
    import torch
    from torch import nn

    widen = _Widener()
    for module in model.modules():
        weight = module._parameters.get("weight")
        if weight is None or weight.dtype == torch.float32:
            continue
        if type(module) is nn.Linear:
            module.forward = _linear_forward(module, widen)
        elif type(module) is nn.Embedding:
            module.forward = _embedding_forward(module)


class _Widener:
    """Rows of a bf16/fp16 matrix as fp32, in one reused buffer per stored dtype.

    bf16 is the upper half of its fp32, so its bits go into the upper (odd, little-endian)
    uint16 halves of a zeroed buffer whose lower halves stay zero: 5x faster here than
    torch's own bf16-to-fp32 copy, which made a 382M-parameter model's decode step 4.5x
    slower than with fp32 weights.
    """

    def __init__(self) -> None:
        import torch

        self.bf16 = torch.zeros(PIECE_ELEMENTS, dtype=torch.float32)
        self.bf16_halves = self.bf16.numpy().view("uint16")
        self.fp16 = torch.empty(PIECE_ELEMENTS, dtype=torch.float32)

    def rows(self, weight: Any, first: int, last: int) -> Any:
        """``weight[first:last]`` in fp32 (a view of the buffer: valid until the next call)."""
        import numpy as np
        import torch

        width = weight.shape[1]
        count = (last - first) * width
        if weight.dtype == torch.bfloat16:
            bits = weight.view(torch.int16).numpy().view(np.uint16).reshape(-1)
            self.bf16_halves[1 : 2 * count : 2] = bits[first * width : last * width]
            return self.bf16[:count].view(last - first, width)
        np.copyto(self.fp16.numpy()[:count], weight.numpy().reshape(-1)[first * width : last * width])
        return self.fp16[:count].view(last - first, width)


def _linear_forward(module: Any, widen: _Widener) -> Any:
    import torch.nn.functional as F

    def forward(x: Any) -> Any:
        weight, bias = module.weight, module.bias
        rows, width = weight.shape
        step = max(1, PIECE_ELEMENTS // width)
        if rows <= step:
            return F.linear(x, widen.rows(weight, 0, rows), bias)
        out = x.new_empty((*x.shape[:-1], rows))
        for first in range(0, rows, step):
            last = min(first + step, rows)
            out[..., first:last] = F.linear(x, widen.rows(weight, first, last), None if bias is None else bias[first:last])
        return out

    return forward


def _embedding_forward(module: Any) -> Any:
    import torch.nn.functional as F

    def forward(ids: Any) -> Any:
        return F.embedding(ids, module.weight, module.padding_idx, module.max_norm, module.norm_type,
                           module.scale_grad_by_freq, module.sparse).float()

    return forward

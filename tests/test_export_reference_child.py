"""The PyTorch reference runs in a child process: the export's own process never imports torch.

The child (`export/decoder/reference_process.py`) writes the reference's figures as JSON and
npz; they must be the figures the same computation gives in-process, and a child that fails
or runs too long must be an `ExportError` naming why, never a hang.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import psutil
import pytest

from ortmodels.errors import ExportError
from ortmodels.export.decoder.reference_process import compute_reference
from tests.tiny_decoders import EOS_ID, build_tiny_decoder

ROOT = Path(__file__).resolve().parents[1]

_EXPORT = """
import json, sys
from pathlib import Path
from ortmodels.export import export_model
from ortmodels.store import ModelStore
manifest = export_model(ModelStore(Path(sys.argv[1])), "tiny", ["fp32", "int4"], skip_gates=True).manifest
heavy = sorted({m.split('.')[0] for m in sys.modules} & {"torch", "transformers", "optimum"})
print(json.dumps({"heavy": heavy, "variants": sorted(manifest.variants), "cost": manifest.export_cost}))
"""


def _tokenizer(folder: Path):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(folder / "tokenizer.json"))


@pytest.mark.slow
def test_a_chat_export_of_our_graph_never_imports_torch_in_its_own_process(tmp_path: Path) -> None:
    build_tiny_decoder(tmp_path / "models" / "tiny", "llama")
    run = subprocess.run([sys.executable, "-c", _EXPORT, str(tmp_path / "models")], capture_output=True, text=True,
                         timeout=600, check=False, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["heavy"] == []
    assert out["variants"] == ["fp32", "int4"]
    assert out["cost"]["peak_rss_bytes"] > 0
    assert not list((tmp_path / "models" / "tiny").glob(".exports/*/_reference"))  # scratch not published


def test_the_childs_figures_are_the_in_process_ones(tmp_path: Path) -> None:
    """Written as JSON and npz, read back: the same tokens and perplexity, the same logits bit for bit."""
    pytest.importorskip("torch")
    from ortmodels.export.decoder.parity import DecoderReference

    folder = build_tiny_decoder(tmp_path / "tiny", "llama")
    tokenizer = _tokenizer(folder)
    here = DecoderReference.compute(folder, folder, tokenizer, 256, [EOS_ID])
    child = compute_reference(folder, folder, 256, [EOS_ID], scratch=tmp_path / "scratch", graph_facts=True)
    for field in ("prompts", "greedy", "text_ids", "eos_token_ids", "question_ids", "answers", "perplexity"):
        assert getattr(child, field) == getattr(here, field), field
    assert np.array_equal(child.prompt_logits, here.prompt_logits)
    assert np.array_equal(child.text_argmax, here.text_argmax)
    assert child.tokenizer.to_str() == tokenizer.to_str()  # the base's, read after the child ended
    assert (tmp_path / "scratch" / "graph_facts.json").is_file()


def test_the_graph_facts_the_child_writes_build_the_same_graph(tmp_path: Path) -> None:
    """Gemma 3 (sliding layers, a local rotary cache): facts read back build the graph facts read here build."""
    pytest.importorskip("transformers")
    from ortmodels.export.decoder.graph import TransformersFacts, build_decoder_graph
    from ortmodels.export.decoder.exporter import GRAPH_PRECISIONS

    folder = build_tiny_decoder(tmp_path / "tiny", "gemma3_text")
    facts = TransformersFacts.of(folder)
    assert "local" in facts.rotary and any(facts.windows)
    facts.save(tmp_path)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    build_decoder_graph(folder, tmp_path / "a" / "model.onnx", GRAPH_PRECISIONS["int8"])
    build_decoder_graph(folder, tmp_path / "b" / "model.onnx", GRAPH_PRECISIONS["int8"],
                        facts=TransformersFacts.load(tmp_path))
    for name in ("model.onnx", "model.onnx.data"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_a_failing_child_is_an_export_error_naming_its_cause(tmp_path: Path) -> None:
    folder = build_tiny_decoder(tmp_path / "tiny", "llama")
    (folder / "model.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(ExportError, match="failed in its child process") as raised:
        compute_reference(folder, folder, 256, [EOS_ID], scratch=tmp_path / "scratch")
    assert "is not a safetensors file" in str(raised.value).splitlines()[0]


def test_a_child_past_its_time_is_stopped_and_said_so(tmp_path: Path) -> None:
    folder = build_tiny_decoder(tmp_path / "tiny", "llama")
    with pytest.raises(ExportError, match=r"did not finish within 0 s"):
        compute_reference(folder, folder, 256, [EOS_ID], scratch=tmp_path / "scratch", timeout=0.01)
    assert not [p for p in psutil.Process().children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE]


def _mapped_rss(folder: Path) -> int:
    """kB of this process's resident pages mapped from ``folder``'s safetensors files."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and ":" not in fields[0]:
            inside = len(fields) >= 6 and fields[5].startswith(f"{folder.resolve()}/") and fields[5].endswith(".safetensors")
        elif inside and fields[0] == "Rss:":
            total += int(fields[1])
    return total


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/smaps")
def test_an_fp32_reference_drops_its_mapped_pages_after_each_module(tmp_path: Path) -> None:
    """The mapped fp32 weights: the same logits as transformers' own model, few of their pages resident after."""
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM

    from ortmodels.export.decoder.reference import reference_model

    one, two = (build_tiny_decoder(tmp_path / name, "llama") for name in ("ours", "theirs"))
    ours = reference_model(one)
    theirs = AutoModelForCausalLM.from_pretrained(two, dtype=torch.float32).eval()  # its pages stay
    ids = torch.tensor([list(range(1, 120))])
    with torch.inference_mode():
        assert torch.equal(ours(input_ids=ids).logits, theirs(input_ids=ids).logits)
    kept, held = _mapped_rss(one), _mapped_rss(two)
    assert held > 0 and kept < 0.5 * held, (kept, held)


_IMPORTS = """
import importlib.util, json, sys
from ortmodels.export.decoder.reference_process import _UNUSED_IMPORTS, _without_unused_imports
installed = [name for name in _UNUSED_IMPORTS if importlib.util.find_spec(name) is not None]
if sys.argv[1] == "hidden":
    _without_unused_imports()
from transformers import AutoModelForCausalLM
from transformers.models.llama import modeling_llama
from transformers.utils import import_utils
loaded = sorted({name.split(".")[0] for name in sys.modules if sys.modules[name] is not None} & {*_UNUSED_IMPORTS})
available = [name for name in installed if getattr(import_utils, f"is_{name}_available", lambda: False)()]
print(json.dumps({"installed": installed, "loaded": loaded, "available": available}))
"""


def _child_imports(mode: str) -> dict[str, list[str]]:
    run = subprocess.run([sys.executable, "-c", _IMPORTS, mode], capture_output=True, text=True, timeout=300,
                         check=False, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_the_child_leaves_out_what_transformers_imports_for_nothing() -> None:
    """scikit-learn, scipy, accelerate and opentelemetry, which transformers imports when installed
    (opentelemetry in a try/except, the others behind an availability check): 90 MB of the child's
    RSS on the sample. Each installed one is loaded without the hiding, and
    neither loaded nor seen as available with it."""
    pytest.importorskip("transformers")
    plain, hidden = _child_imports("plain"), _child_imports("hidden")
    assert plain["installed"], "none of the hidden packages is installed: nothing to check"
    assert plain["loaded"] == sorted(plain["installed"])  # each one costs memory when not hidden
    assert hidden["loaded"] == [] and hidden["available"] == []

"""The runtime path never imports torch, transformers or optimum (nor Ray, an extra of the server)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "transformers", "optimum", "ray")

_PROBE = """
import json, sys
{body}
heavy = sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r}))
print(json.dumps(heavy))
"""


def _heavy_modules_after(body: str, env: dict[str, str] | None = None) -> list[str]:
    code = _PROBE.format(body=body, heavy=HEAVY)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        env={**os.environ, **(env or {})},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_ortmodels_is_light() -> None:
    assert _heavy_modules_after("import ortmodels") == []


@pytest.mark.slow
def test_embedding_through_the_manager_is_light(samples_dir: Path) -> None:
    body = (
        "from ortmodels import ModelManager\n"
        "m = ModelManager()\n"
        "m.list_available_models()\n"
        "assert len(m.get_embedding_model('all-minilm-l6-v2').embed_query('x')) == 384\n"
    )
    assert _heavy_modules_after(body, {"LOCAL_MODELS_DIR": str(samples_dir)}) == []


@pytest.mark.slow
def test_chat_through_the_manager_is_light(samples_dir: Path) -> None:
    body = (
        "from ortmodels import ModelManager\n"
        "chat = ModelManager().get_chat_model('smollm2-135m-instruct')\n"
        "assert chat.invoke('Say hi.', max_tokens=4).content\n"
    )
    assert _heavy_modules_after(body, {"LOCAL_MODELS_DIR": str(samples_dir)}) == []


def test_the_message_conversion_imports_no_chat_service() -> None:
    """A user's own chat class converts messages with `ortmodels.runtime.messages`: that needs
    neither the chat service, its engine, output plan or options, nor onnxruntime."""
    code = ("import sys\nimport ortmodels.runtime.messages\n"
            "print(sorted(set(sys.modules) & {'onnxruntime', 'ortmodels.runtime.service', 'ortmodels.runtime.output_plan', "
            "'ortmodels.runtime.options', 'ortmodels.engine.engine', 'ortmodels.engine.decoder', "
            "'ortmodels.engine.session'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"

"""The server's way to a chat model takes no LangChain: its modules, the chat service, the options.

What holds today: a process that imports what ``ortmodels serve`` imports (the CLI, the app,
every route's module, Ray's ingress side aside) and the chat service's modules, and builds
the app, has not imported LangChain; the routes map OpenAI bodies to the service's message
dicts and `ChatOptions`, and its events to OpenAI chunks. What does not hold yet: loading a
model still imports it, since `OnnxChatModel` and `OnnxEmbeddingModel` are LangChain classes
that the manager builds (issue 21: the manager would hand the server the service itself).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ortmodels"
LANGCHAIN = ("langchain", "langchain_core")

#: Modules the server's chat path runs through, none of which may import LangChain.
LANGCHAIN_FREE = ["runtime/service.py", "runtime/options.py", "runtime/events.py", "runtime/output_plan.py",
                  "runtime/embedding_options.py"]

_PROBE = """
import json, sys
import ortmodels.cli, ortmodels.cli.serve
import ortmodels.serve.app, ortmodels.serve.routes, ortmodels.serve.chat, ortmodels.serve.completions
import ortmodels.serve.embeddings, ortmodels.serve.metrics, ortmodels.serve.run
import ortmodels.runtime.service, ortmodels.runtime.options, ortmodels.runtime.events, ortmodels.runtime.output_plan
from ortmodels.serve import create_app
create_app(models=[])
print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & set(LANGCHAIN))))
""".replace("LANGCHAIN", repr(LANGCHAIN))


def _imported(path: Path) -> set[str]:
    """Top-level packages ``path`` imports anywhere (inside functions too); relative imports aside."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
    return found


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("serve/**/*.py")) + [PACKAGE / p for p in LANGCHAIN_FREE],
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_server_and_the_chat_service_never_import_langchain(path: Path) -> None:
    assert not _imported(path) & set(LANGCHAIN), f"{path.relative_to(PACKAGE)} imports LangChain"


def test_a_server_process_has_not_imported_langchain_before_a_model_loads(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True,
                         env={**os.environ, "LOCAL_MODELS_DIR": str(tmp_path)})
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []

"""``ortmodels serve``, ``ortmodels chat`` and Ray's replicas take no LangChain, models loaded or not.

The server's modules and the chat service's never import it; the manager caches ortmodels'
LangChain-free runtimes (`ChatRuntime`, `EmbeddingRuntime`, `RerankRuntime`) and builds their LangChain faces
only when ``get_chat_model``/``get_embedding_model`` are asked. So a real server process that
has loaded both samples and answered a chat and an embeddings request over HTTP, and a
process that ran ``ortmodels chat``, still have no LangChain module. The one exception: a
user's own LangChain class, served through the bridge, imports it (and is served).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import CHAT_SAMPLE, EMBEDDING_SAMPLE, SAMPLES_DIR

PACKAGE = Path(__file__).resolve().parents[1] / "ortmodels"
LANGCHAIN = ("langchain", "langchain_core")

#: Modules the server's chat path runs through, none of which may import LangChain.
LANGCHAIN_FREE = ["runtime/service.py", "runtime/options.py", "runtime/events.py", "runtime/output_plan.py",
                  "runtime/embedding_options.py", "runtime/rerank_runtime.py", "runtime/embedding_runtime.py",
                  "runtime/chat_runtime.py", "inputs.py"]

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


#: uvicorn serving ``create_app(models=SERVED_MODELS)`` on a free port, on a thread of the script's
#: process, and the wait (bounded) for its ``/health``; the scripts below start with it.
_SERVER_UP = """
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
server = uvicorn.Server(uvicorn.Config(create_app(models=SERVED_MODELS), port=port, log_level="warning"))
thread = threading.Thread(target=server.run, daemon=True)
thread.start()
deadline = time.monotonic() + 120
while True:
    try:
        if httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200:
            break
    except httpx.HTTPError:
        pass
    if time.monotonic() > deadline:
        sys.exit("the server did not get ready within 120 s")
    time.sleep(0.05)
"""

#: A real server in this process (uvicorn on a free port, the sample models loaded at start),
#: asked by the official client over HTTP; then the LangChain modules this process has imported.
_SERVED = """
import json, socket, sys, threading, time
import httpx, uvicorn
from openai import OpenAI
from ortmodels.serve import create_app
USER_CLASS
SERVER_UP
client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=60)
chat = client.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
EMBED
server.should_exit = True
thread.join(60)
print(json.dumps({"answer": chat.choices[0].message.content, "usage": chat.usage.completion_tokens,
                  "langchain": sorted({m.split('.')[0] for m in sys.modules} & {"langchain", "langchain_core"})}))
"""

_EMBED = """
vectors = client.embeddings.create(model=EMBEDDING, input=["a cat", "a dog"])
assert len(vectors.data) == 2 and len(vectors.data[0].embedding) == 384, vectors
assert client.responses.create(model=CHAT, input="Hi", max_output_tokens=4).output_text
"""

#: A user's LangChain chat class, registered by name: the bridge serves it (LangChain is its own import).
_USER_CLASS = """
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from ortmodels import BaseLLMModel, ModelManager

class Echo(BaseLLMModel):
    @property
    def _llm_type(self):
        return "echo"

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        return ChatResult(generations=[ChatGeneration(message=AIMessage("echo: " + messages[-1].text))])

ModelManager().register(Echo, name=CHAT)
"""


def _run(script: str, store: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "LOCAL_MODELS_DIR": str(store), "MODEL_KEEP_ALIVE": "-1"})
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.slow
def test_a_server_process_serving_both_samples_never_imports_langchain() -> None:
    script = (_SERVED.replace("SERVER_UP", _SERVER_UP).replace("USER_CLASS", "").replace("EMBED", _EMBED)
              .replace("SERVED_MODELS", repr([CHAT_SAMPLE, EMBEDDING_SAMPLE])).replace("EMBEDDING", repr(EMBEDDING_SAMPLE))
              .replace("CHAT", repr(CHAT_SAMPLE)))
    seen = _run(script, SAMPLES_DIR)
    assert seen["usage"] >= 1 and seen["answer"]
    assert seen["langchain"] == []


@pytest.mark.slow
def test_a_users_langchain_class_is_served_and_may_import_langchain() -> None:
    script = (_SERVED.replace("SERVER_UP", _SERVER_UP).replace("USER_CLASS", _USER_CLASS).replace("EMBED", "")
              .replace("SERVED_MODELS", repr([CHAT_SAMPLE])).replace("CHAT", repr(CHAT_SAMPLE)))
    seen = _run(script, SAMPLES_DIR)
    assert seen["answer"] == "echo: Hi"
    assert seen["langchain"] == ["langchain_core"]


_CLI_CHAT = """
import atexit, json, sys
from ortmodels.cli import main
sys.argv = ["ortmodels", "chat", CHAT, "Say hi", "--max-tokens", "4"]
# an exit handler: `ortmodels chat` ends its process once the exit handlers ran (cli._exit)
atexit.register(lambda: print("\\n" + json.dumps(sorted({m.split('.')[0] for m in sys.modules}
                                                      & {"langchain", "langchain_core"}))))
main()
"""


@pytest.mark.slow
def test_ortmodels_chat_answers_without_importing_langchain() -> None:
    out = subprocess.run([sys.executable, "-c", _CLI_CHAT.replace("CHAT", repr(CHAT_SAMPLE))], check=False,
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "LOCAL_MODELS_DIR": str(SAMPLES_DIR)})
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    assert len(lines) >= 2 and lines[0].strip(), out.stdout  # the answer, then the modules
    assert json.loads(lines[-1]) == []


@pytest.fixture(scope="module")
def rerank_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with one tiny random cross-encoder, exported in fp32 (`tests.tiny_cross_encoders`)."""
    pytest.importorskip("sentence_transformers")
    from ortmodels.export import export_model
    from ortmodels.store import ModelStore
    from tests.tiny_cross_encoders import build_tiny_cross_encoder

    root = tmp_path_factory.mktemp("rerank") / "models"
    build_tiny_cross_encoder(root / RERANKER, "bert")
    export_model(ModelStore(root), RERANKER, ["fp32"])
    return root


RERANKER = "tiny-ce-bert"

#: What a Ray replica runs (`ModelServer`, Ray imported, the model loaded by the replica's manager
#: on its store; here one process plays three replicas) for a chat, an embedding and a reranker; then a
#: server serving the reranker over HTTP; then the LangChain modules this process has imported.
_REPLICAS = """
import asyncio, json, os, socket, sys, threading, time
import httpx, uvicorn
from ortmodels.manager import ModelManager
from ortmodels.runtime.options import ChatOptions
from ortmodels.serve.ray.deployments import ModelServer

async def main():
    chat = ModelServer(CHAT, {"LOCAL_MODELS_DIR": SAMPLES})
    events = [e async for e in chat.achat_events(CHAT, [{"role": "user", "content": "Hi"}], ChatOptions(max_tokens=3))]
    embedding = ModelServer(EMBEDDING, {"LOCAL_MODELS_DIR": SAMPLES})
    vectors, tokens = await embedding.aembed_counted(EMBEDDING, ["a cat", "a dog"])
    os.environ["LOCAL_MODELS_DIR"] = RERANKS  # its own store: the process's one manager takes it
    ModelManager().configure()
    reranker = ModelServer(RERANKER, {"LOCAL_MODELS_DIR": RERANKS})
    ranked, read = await reranker.arerank_counted(RERANKER, "a cat", ["a dog", "a cat"], None)
    return len(events), len(vectors), len(ranked)

counts = asyncio.run(main())
from ortmodels.serve import create_app
SERVER_UP
answer = httpx.post(f"http://127.0.0.1:{port}/v1/rerank", json={"model": RERANKER, "query": "a cat",
                    "documents": ["a dog", "a cat"]}, timeout=60).json()
server.should_exit = True
thread.join(60)
print(json.dumps({"counts": counts, "results": len(answer["results"]),
                  "langchain": sorted({m.split('.')[0] for m in sys.modules} & {"langchain", "langchain_core"})}))
"""


@pytest.mark.slow
def test_ray_replicas_and_a_server_serving_a_reranker_never_import_langchain(rerank_store: Path) -> None:
    pytest.importorskip("ray")
    script = (_REPLICAS.replace("SERVER_UP", _SERVER_UP).replace("SERVED_MODELS", repr([RERANKER]))
              .replace("RERANKS", repr(str(rerank_store))).replace("RERANKER", repr(RERANKER))
              .replace("SAMPLES", repr(str(SAMPLES_DIR))).replace("EMBEDDING", repr(EMBEDDING_SAMPLE))
              .replace("CHAT", repr(CHAT_SAMPLE)))
    seen = _run(script, rerank_store)
    events, vectors, ranked = seen["counts"]
    assert events >= 2 and vectors == 2 and ranked == 2 and seen["results"] == 2
    assert seen["langchain"] == []

"""Shared output of the benchmarks: machine facts, the JSON result file and the PNG chart."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

from benchmarks.provenance import stamp
from ortmodels.export.checkpoint.source import package_versions

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


#: Packages whose versions a result file records: those of the dev venv, then the peers venv's.
DEV_PACKAGES = ("ortmodels", "onnxruntime", "torch", "transformers", "optimum-onnx", "sentence-transformers",
                "fastembed", "langchain-core")
PEER_PACKAGES = ("onnxruntime-genai", "onnxruntime", "llama-cpp-python", "transformers")


@lru_cache(maxsize=1)
def versions() -> dict[str, dict[str, str]]:
    """Package versions in the dev venv (this process) and in the peers venv (asked once)."""
    from benchmarks.peers.env import peers_python

    peers: dict[str, str] = {}
    if peers_python().is_file():
        code = ("import json, importlib.metadata as m\n"
                f"names = {PEER_PACKAGES!r}\n"
                "out = {}\n"
                "for n in names:\n"
                "    try: out[n] = m.version(n)\n"
                "    except m.PackageNotFoundError: pass\n"
                "print(json.dumps(out))")
        done = subprocess.run([str(peers_python()), "-c", code], capture_output=True, text=True, check=False)
        if done.returncode == 0:
            peers = json.loads(done.stdout)
    return {"dev": package_versions(*DEV_PACKAGES), "peers": peers}


#: What an engine-against-engine run sets for ortmodels: the peers do not speculate, so neither does
#: it (prompt-lookup speculative decoding has its own figures, from bench_speculative). Each such
#: benchmark puts it in its environment (its model servers and workers inherit it) and records it.
ENGINE_SETTINGS = {"MODEL_SPECULATIVE": "off"}


def use_engine_settings() -> dict[str, str]:
    """Set `ENGINE_SETTINGS` in this process's environment; the mapping, to record in the result."""
    os.environ.update(ENGINE_SETTINGS)
    return dict(ENGINE_SETTINGS)


def write_json(name: str, payload: dict[str, Any]) -> Path:
    """Write ``results/<name>.json``, stamped with the time and the commit it measured
    (`benchmarks.provenance.stamp`: HEAD, and whether the code had uncommitted changes)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), **stamp(), **payload}
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return path


def bar_chart(name: str, title: str, labels: list[str], values: list[float], unit: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 0.6 * len(labels) + 1.4))
    bars = ax.barh(labels, values, color=["#2f6fb0" if "ortmodels" in lb else "#999999" for lb in labels])
    ax.bar_label(bars, labels=[f"{v:,.0f}" for v in values], padding=3)
    ax.invert_yaxis()
    ax.set_xlabel(unit)
    ax.set_title(title)
    ax.set_xlim(0, max(values) * 1.18)
    return save_chart(fig, name)


def save_chart(fig: Any, name: str, dpi: int = 120) -> Path:
    """Lay out, write ``results/<name>.png`` and close a matplotlib figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.png"
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path

"""How long a user waits before anything happens: ``import ortmodels``, and a cold start.

``import ortmodels`` is timed inside a fresh interpreter (so it counts the package and
what it imports, not the interpreter's own start), ``--imports`` times, median reported.
A cold start is a fresh worker process of each contender (ortmodels int4 and every
peer), timed by the parent from process start to the first token of the short chat
prompt arriving: interpreter, imports, model load, prompt, first token. Rounds are
interleaved and the files are in the page cache after the first round (as they are for
a user's second start), median reported.

    python -m benchmarks.bench_startup [--rounds 3] [--imports 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.contenders import OPTIMUM, PYTORCH, SPECS, start_worker
from benchmarks.prompts import build_prompts
from benchmarks.protocol import ROOT
from benchmarks.report import machine, versions, write_json
from benchmarks.targets import (
    COLD_START_VS_PEERS_FIGURE,
    GENAI,
    LLAMA_CPP,
    ORT,
    faster_peer_ratio,
    ratio_key,
)

MODEL = "smollm2-135m-instruct"
OURS = f"{ORT} int4"
CONTENDERS = [OURS, f"{GENAI} int4", LLAMA_CPP, OPTIMUM, PYTORCH]
SETTLE_S = 1.0
IMPORT_CODE = "import time; t = time.perf_counter(); import ortmodels; print(time.perf_counter() - t)"


def import_seconds(times: int) -> list[float]:
    """In-process time of ``import ortmodels`` in ``times`` fresh interpreters."""
    out = []
    for _ in range(times):
        time.sleep(SETTLE_S / 2)
        done = subprocess.run([sys.executable, "-c", IMPORT_CODE], cwd=ROOT, capture_output=True, text=True,
                              check=True)
        out.append(float(done.stdout.strip().splitlines()[-1]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--imports", type=int, default=5)
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--only", nargs="*", choices=sorted(SPECS))
    args = parser.parse_args()

    imports = import_seconds(args.imports)
    print(f"import ortmodels: median {statistics.median(imports):.3f} s  {[round(v, 3) for v in imports]}")

    names = [n for n in CONTENDERS if not args.only or n in args.only]
    runs: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    failed: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        prompt_file = Path(tmp) / "prompts.json"
        prompt_file.write_text(json.dumps(build_prompts(args.models_dir / MODEL)), encoding="utf-8")
        for round_ in range(args.rounds):
            shift = round_ % len(names)
            for name in names[shift:] + names[:shift]:
                if name in failed:
                    continue
                time.sleep(SETTLE_S)
                worker = start_worker(name, args.models_dir, "cold", prompt_file)
                try:
                    got = worker.expect("first_token")
                    got["cold_start_s"] = got.pop("received_at") - worker.started_at
                    runs[name].append(got)
                    print(f"round {round_ + 1}/{args.rounds} {name}: first token {got['cold_start_s']:.2f} s after "
                          f"start (load {got['load_s']:.2f} s)", flush=True)
                except RuntimeError as exc:
                    failed[name] = str(exc)
                    print(f"{name}: not measured ({exc})", flush=True)
                finally:
                    worker.process.wait(timeout=120)
                    worker.close()

    figures: dict[str, float] = {"import_s: ortmodels": round(statistics.median(imports), 3)}
    rows = []
    for name, got in runs.items():
        if not got:
            continue
        seconds = [g["cold_start_s"] for g in got]
        figures[f"cold_start_s: {name}"] = round(statistics.median(seconds), 3)
        rows.append({"name": name, "cold_start_s": round(statistics.median(seconds), 3),
                     "cold_start_s_rounds": [round(s, 3) for s in seconds],
                     "load_s": round(statistics.median(g["load_s"] for g in got), 3),
                     "peak_rss_mib": round(statistics.median(g["peak_rss_mib"] for g in got), 1)})
    for name in names[1:]:
        if runs.get(OURS) and runs.get(name):
            per_round = [a["cold_start_s"] / b["cold_start_s"] for a, b in zip(runs[OURS], runs[name])]
            figures[ratio_key("cold_start", OURS, name)] = round(statistics.median(per_round), 3)
    fastest = faster_peer_ratio(*([g["cold_start_s"] for g in runs.get(n, [])]
                                  for n in (OURS, f"{GENAI} int4", LLAMA_CPP)))
    if fastest is not None:
        figures[COLD_START_VS_PEERS_FIGURE] = fastest
    for key, value in figures.items():
        print(f"  {key:60} {value:.3f}")
    path = write_json("startup", {
        "benchmark": "startup",
        "model": MODEL,
        "rounds": args.rounds,
        "import_ortmodels_s_runs": [round(v, 4) for v in imports],
        "machine": machine(),
        "versions": versions(),
        "failed": failed,
        "figures": figures,
        "results": rows,
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

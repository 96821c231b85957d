"""Run every benchmark, then rewrite the README's section: what ``make bench`` runs.

Each part runs in its own process, one after the other, so no part's memory or thread
pools are still around when the next one is timed. ``--quick`` shrinks every part (few
rounds, few tokens, fewer sentences) to check the wiring in minutes; its figures are
not worth publishing.

    python -m benchmarks [--quick] [--skip chat quality startup embeddings rerank concurrency server constraints dry ray ray_multiplex ray_prefix speculative]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from benchmarks.protocol import ROOT

FULL = {
    "embeddings": ["--sentences", "2000", "--rounds", "3"],
    "rerank": ["--queries", "20", "--rounds", "3", "--requests", "16"],
    "chat": ["--new-tokens", "128", "--rounds", "3"],
    "startup": ["--rounds", "3", "--imports", "5"],
    "quality": ["--tokens", "1024"],
    "concurrency": ["--rounds", "3", "--new-tokens", "64", "--sentences", "512"],
    "server": ["--rounds", "3", "--new-tokens", "64"],
    "constraints": ["--rounds", "5", "--tokens", "96"],
    "dry": ["--max-tokens", "100"],
    "ray": ["--rounds", "5", "--new-tokens", "64"],
    "ray_multiplex": ["--rounds", "5", "--new-tokens", "64"],
    "ray_prefix": ["--rounds", "3", "--new-tokens", "32"],
    "speculative": ["--rounds", "3", "--tokens", "160"],
}
QUICK = {
    "embeddings": ["--sentences", "500", "--rounds", "1"],
    "rerank": ["--queries", "3", "--rounds", "1", "--requests", "2"],
    "chat": ["--new-tokens", "32", "--rounds", "1"],
    "startup": ["--rounds", "1", "--imports", "2"],
    "quality": ["--tokens", "256"],
    "concurrency": ["--rounds", "1", "--new-tokens", "16", "--sentences", "128", "--parts", "chat", "embeddings", "cache"],
    "server": ["--rounds", "1", "--new-tokens", "16", "--clients", "1", "8"],
    "constraints": ["--rounds", "1", "--tokens", "32"],
    "dry": ["--precisions", "int4", "--sets", "ortmodels", "--max-tokens", "64"],
    "ray": ["--rounds", "1", "--new-tokens", "16"],
    "ray_multiplex": ["--rounds", "1", "--new-tokens", "16"],
    "ray_prefix": ["--quick"],
    "speculative": ["--rounds", "1", "--tokens", "48"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short settings, to check the wiring")
    parser.add_argument("--skip", nargs="*", default=[], choices=sorted(FULL))
    args = parser.parse_args()
    settings = QUICK if args.quick else FULL
    took = {}
    for part, part_args in settings.items():
        if part in args.skip:
            continue
        print(f"\n=== {part} {' '.join(part_args)}", flush=True)
        began = time.perf_counter()
        subprocess.run([sys.executable, "-m", f"benchmarks.bench_{part}", *part_args], cwd=ROOT, check=True)
        took[part] = time.perf_counter() - began
    subprocess.run([sys.executable, "-m", "benchmarks.readme"], cwd=ROOT, check=True)
    print("time per part: " + ", ".join(f"{p} {s / 60:.1f} min" for p, s in took.items()))


if __name__ == "__main__":
    main()

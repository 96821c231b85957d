"""One deployment per model (what `ortmodels.serve.ray` builds) against Ray Serve's model multiplexing.

Two models (the chat sample at int4 and at int8, each a model id of its own), 8 streaming
clients at once, 4 per model. Both apps run side by side on one local Ray cluster
(``ray.init(num_cpus=2)``), each reserving half of its CPUs and running 2 one-thread
engines' worth of replicas, and are timed in turn, the order rotating by round:

- ``per model``: `build_app` with both ids, 1 replica each, ``MODEL_THREADS=1``;
- ``multiplexed``: one deployment of 2 replicas (``MODEL_THREADS=1``) whose
  ``@serve.multiplexed(max_num_models_per_replica=2)`` loader loads a model on first use;
  the same ingress (`create_app` over a `RayCatalog`) calls it with
  ``multiplexed_model_id`` set, so Serve routes to a replica that has the model loaded.

The multiplexed deployment lives here, not in the library: it is the alternative that was
measured and not chosen. Writes results/ray_multiplex.json and results/ray_multiplex.png.

    python -m benchmarks.bench_ray_multiplex [--rounds 5] [--new-tokens 64]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from contextlib import aclosing
from typing import Any

import ray
from ray import serve
from ray.serve.handle import DeploymentHandle

from benchmarks.bench_concurrency import median_ratio, percentile, rotated
from benchmarks.bench_server import MODEL, _free_port, one_level
from benchmarks.corpus import stdlib_sentences
from benchmarks.report import bar_chart, machine, versions, write_json
from ortmodels.manager import ModelManager
from ortmodels.serve.app import create_app
from ortmodels.serve.models import Catalog
from ortmodels.serve.protocols import as_chat_model
from ortmodels.serve.ray.deployments import _environment, build_app
from ortmodels.serve.ray.remote import RayCatalog

IDS = [f"{MODEL}:int4", f"{MODEL}:int8"]
PER_MODEL, MULTIPLEXED = "per model", "multiplexed"


class MultiplexedServer:
    def __init__(self, env: dict[str, str]) -> None:
        os.environ.update(env)
        self.catalog = Catalog(ModelManager())

    @serve.multiplexed(max_num_models_per_replica=2)
    async def get_model(self, model_id: str) -> Any:
        return await self.catalog.get(self.catalog.check([model_id])[0])

    async def ready(self) -> str:
        await self.get_model(serve.get_multiplexed_model_id())
        return serve.get_multiplexed_model_id()

    # What `RayCatalog`'s models call on a deployment, as `deployments.ModelServer` offers it.
    async def achat_events(self, model_id: str, messages: list[dict[str, Any]], options: Any) -> Any:
        model = as_chat_model(await self.get_model(model_id))
        async with aclosing(model.achat_events(messages, options)) as events:
            async for event in events:
                yield event

    async def aembed_counted(self, model_id: str, texts: list[str], options: dict[str, Any] | None = None) -> Any:
        return await (await self.get_model(model_id)).aembed_counted(texts, options)


@serve.ingress()
class MultiplexedIngress:
    def __init__(self, handle: DeploymentHandle, ids: list[str], env: dict[str, str]) -> None:
        os.environ.update(env)
        self._handles = {i: handle.options(multiplexed_model_id=i) for i in ids}

    def __serve_build_asgi_app__(self) -> Any:
        return create_app(models=list(self._handles), max_queue=256, catalog=RayCatalog(ModelManager(), self._handles))


def multiplexed_app(env: dict[str, str]) -> Any:
    server = serve.deployment(MultiplexedServer).options(
        name="multiplexed", num_replicas=2, max_ongoing_requests=256, ray_actor_options={"num_cpus": 0.5})
    ingress = serve.deployment(MultiplexedIngress).options(name="ingress", ray_actor_options={"num_cpus": 0})
    return ingress.bind(server.bind(env), IDS, env)


async def mixed_level(url: str, questions: list[str], new_tokens: int) -> dict[str, Any]:
    """Half the clients on each model, all at once."""
    half = len(questions) // 2
    started = time.perf_counter()
    a, b = await asyncio.gather(one_level(url, IDS[0], questions[:half], new_tokens),
                                one_level(url, IDS[1], questions[half:], new_tokens))
    wall = time.perf_counter() - started
    tokens = a["tokens"] + b["tokens"]
    return {"wall_s": wall, "tokens": tokens, "tokens_per_s": tokens / wall, "ttft_s": a["ttft_s"] + b["ttft_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    questions = stdlib_sentences(args.rounds * args.clients + 8)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    port = _free_port()
    rows: list[dict[str, Any]] = []
    began = time.perf_counter()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(models=IDS, replicas=1, threads=1, cpus=1, max_queue=256),
                  name="per-model", route_prefix="/per-model")
        serve.run(multiplexed_app(_environment(1)), name="multiplexed", route_prefix="/multiplexed")
        urls = {PER_MODEL: f"http://127.0.0.1:{port}/per-model", MULTIPLEXED: f"http://127.0.0.1:{port}/multiplexed"}
        for name, url in urls.items():  # loads every model on its replicas (multiplexed: on first use)
            asyncio.run(mixed_level(url, questions[:8], 8))
        for rnd in range(args.rounds):
            asked = questions[8 + rnd * args.clients: 8 + (rnd + 1) * args.clients]
            for name in rotated(list(urls), rnd):
                time.sleep(1.0)
                row = asyncio.run(mixed_level(urls[name], asked, args.new_tokens))
                rows.append({"round": rnd, "contender": name, **row})
                print(f"round {rnd} {name:12} {row['tokens_per_s']:7.1f} tok/s, TTFT p50 "
                      f"{percentile(row['ttft_s'], 50):.3f} s", flush=True)
    finally:
        serve.shutdown()
        ray.shutdown()

    def series(name: str, key: str) -> list[float]:
        found = [r for r in rows if r["contender"] == name]
        return [r["tokens_per_s"] if key == "tps" else percentile(r["ttft_s"], 50) for r in found]

    summary = {n: {"tokens_per_s": statistics.median(series(n, "tps")),
                   "ttft_p50_s": percentile([t for r in rows if r["contender"] == n for t in r["ttft_s"]], 50)}
               for n in (PER_MODEL, MULTIPLEXED)}
    figures = {f"tokens/s: {MULTIPLEXED} / {PER_MODEL}": median_ratio(series(MULTIPLEXED, "tps"), series(PER_MODEL, "tps")),
               f"TTFT p50: {MULTIPLEXED} / {PER_MODEL}": median_ratio(series(MULTIPLEXED, "ttft"),
                                                                     series(PER_MODEL, "ttft"))}
    for name, values in summary.items():
        print(f"{name:12} {values['tokens_per_s']:7.1f} tok/s, TTFT p50 {values['ttft_p50_s']:.3f} s")
    for key, value in figures.items():
        print(f"{key}: {value}")
    path = write_json("ray_multiplex", {
        "machine": machine(), "versions": versions(), "models": IDS, "clients": args.clients,
        "new_tokens": args.new_tokens, "rounds": args.rounds, "took_s": round(time.perf_counter() - began, 1),
        "figures": figures, "summary": summary,
        "rounds_table": [{k: v for k, v in r.items() if k != "ttft_s"} | {"ttft_p50_s": percentile(r["ttft_s"], 50)}
                         for r in rows]})
    print(f"wrote {path}")
    chart(summary, args)


def chart(summary: dict[str, dict[str, float]], args: argparse.Namespace) -> None:
    bar_chart("ray_multiplex", f"2 models, {args.clients} streaming clients, {args.new_tokens} tokens; "
              f"median of {args.rounds} rounds", [f"ortmodels {n}" if n == PER_MODEL else n for n in summary],
              [v["tokens_per_s"] for v in summary.values()], "aggregate tokens/s")


if __name__ == "__main__":
    main()

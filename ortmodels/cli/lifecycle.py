"""``ortmodels versions / rollback / prune / ps / stats``: the model life cycle, as Ollama users know it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from ..config import load_settings
from ..monitoring import runtime_state
from ..store import versions as export_versions
from ..units import format_bytes
from . import app, console
from .models import _store
from .tables import print_rows


def _model_dir(name: str) -> Path:
    """The model's folder, without reading its active export (which may be the damaged one)."""
    return _store().folder(name)


@app.command()
def versions(name: str, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List the export versions of a model, newest first; * marks the active one."""
    model_dir = _model_dir(name)
    found = export_versions.list_versions(model_dir)
    if as_json:
        console.print_json(json.dumps([
            {"id": v.id, "created_at": v.created_at, "content_sha256": v.content_sha256,
             "variants": v.variants, "size": v.size, "active": v.active, "in_use": v.in_use}
            for v in found
        ]))
        return
    for version_id, problem in export_versions.damaged_versions(model_dir).items():
        console.print(f"damaged version {version_id} (never loaded or rolled back to): {problem}",
                      highlight=False, markup=False)
    if not found:
        console.print(f"{name} has no export versions: run 'ortmodels export {name}'.")
        return
    rows = [("*" if v.active else "", v.id, v.created_at, ", ".join(v.variants), format_bytes(v.size),
             "yes" if v.in_use else "") for v in found]
    print_rows(("", "version", "created", "variants", "size", "in use"), rows, whole=("version",),
               title=f"Export versions of {name}")


@app.command()
def rollback(name: str, version: str) -> None:
    """Make VERSION the active export of NAME (new loads use it; see 'ortmodels versions')."""
    info = export_versions.activate(_model_dir(name), version)
    console.print(f"{name}: version {info.id} ({', '.join(info.variants)}) is now active")


@app.command()
def prune(name: str, keep: int = typer.Option(..., "--keep", min=1, help="Newest versions to keep.")) -> None:
    """Delete all but the KEEP newest versions (the active one and those in use are kept)."""
    removed = export_versions.prune(_model_dir(name), keep)
    console.print(f"{name}: removed {len(removed)} version(s)" + (": " + ", ".join(removed) if removed else ""))


def _ago(timestamp: float | None) -> str:
    if not timestamp:
        return "-"
    seconds = time.time() - timestamp
    return f"{seconds:.0f} s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago"


def _until(timestamp: float | None) -> str:
    if timestamp is None:
        return "never (keep-alive -1)"
    seconds = timestamp - time.time()
    return "now" if seconds <= 0 else f"in {seconds:.0f} s" if seconds < 120 else f"in {seconds / 60:.0f} min"


@app.command()
def ps(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Models loaded by running processes that use LOCAL_MODELS_DIR, with memory and expiry."""
    states = runtime_state.read_states(load_settings().local_models_dir)
    if as_json:
        console.print_json(json.dumps([{"pid": s["pid"], "loaded": s.get("loaded", [])} for s in states]))
        return
    rows = [(s["pid"], m) for s in states for m in s.get("loaded", [])]
    if not rows:
        console.print("No models loaded by any running process.")
        return
    print_rows(
        ("pid", "name", "kind", "variant", "version", "device", "memory", "calls now", "last used", "expires"),
        [(str(pid), m["name"], m["kind"], m.get("variant") or "-", m.get("version") or "-", m.get("device") or "-",
          format_bytes(m.get("memory_bytes") or 0), str(m.get("active_calls", 0)), _ago(m.get("last_used")),
          _until(m.get("expires_at"))) for pid, m in rows],
        whole=("name", "version"),
    )


def _ms(figures: dict | None, key: str) -> str:
    return f"{figures[key] * 1000:.0f}" if figures and figures.get(key) is not None else "-"


@app.command()
def stats(
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    prometheus: bool = typer.Option(False, "--prometheus", help="Print the Prometheus text format."),
) -> None:
    """Per model and variant figures of running processes: calls, tokens/s, latency percentiles."""
    if as_json and prometheus:
        raise typer.BadParameter("--json and --prometheus are two formats: give one.")
    states = runtime_state.read_states(load_settings().local_models_dir)
    rows = [{"pid": s["pid"], **row} for s in states for row in s.get("stats", [])]
    if as_json:
        console.print_json(json.dumps(rows))
        return
    if prometheus:
        from ..monitoring.prometheus import exposition_of_rows

        typer.echo(exposition_of_rows(rows), nl=False)  # for a scraper or a file: no console wrapping
        return
    if not rows:
        console.print("No figures: no running process has used a model.")
        return
    headers = ("pid", "model", "variant", "calls", "errors", "cancelled", "tokens in/out", "tok/s",
               "emb/s", "p50 ms", "p95 ms", "p99 ms", "TTFT p50 ms", "load s")
    cells = []
    for r in rows:
        latency, ttft = r.get("latency_s"), r.get("time_to_first_token_s")
        cells.append((
            str(r["pid"]), r["model"], r.get("variant") or "-", str(r["calls"]), str(r["errors"]),
            str(r.get("cancelled", 0)),
            f"{r['input_tokens']}/{r['output_tokens']}",
            f"{r['tokens_per_second']:.1f}" if r.get("tokens_per_second") else "-",
            f"{r['embeddings_per_second']:.1f}" if r.get("embeddings_per_second") else "-",
            _ms(latency, "p50"), _ms(latency, "p95"), _ms(latency, "p99"), _ms(ttft, "p50"),
            f"{r['last_load_s']:.2f}" if r.get("last_load_s") else "-",
        ))
    print_rows(headers, cells, whole=("model",))

"""``ortmodels list`` and ``ortmodels info``."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from ..config import load_settings
from ..store import ModelInfo, ModelStore
from . import app, console


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


def _store() -> ModelStore:
    return ModelStore(load_settings().local_models_dir)


def _summary(info: ModelInfo) -> dict:
    return {
        "name": info.name,
        "kind": info.kind,
        "architecture": info.architecture,
        "variants": {k: v.size for k, v in info.variants.items()},
        "size": info.size_bytes(),
        "path": str(info.path),
    }


@app.command("list")
def list_models(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List the models in LOCAL_MODELS_DIR with their exported variants."""
    store = _store()
    infos = store.list()
    if as_json:
        console.print_json(json.dumps([_summary(i) for i in infos]))
        return
    table = Table(title=f"Models in {store.root}")
    for column in ("name", "kind", "architecture", "exported", "size"):
        table.add_column(column)
    for info in infos:
        table.add_row(
            info.name,
            info.kind,
            info.architecture or "-",
            ", ".join(info.variants) or "not exported",
            human_size(info.size_bytes()) if info.variants else "-",
        )
    if not infos:
        console.print(f"No models in {store.root}. Run 'ortmodels samples' for the sample models.")
        return
    console.print(table)


@app.command()
def info(name: str) -> None:
    """Show one model: kind, export manifest and per-variant parity figures."""
    model = _store().info(name)
    console.print(f"[bold]{model.name}[/]  {model.kind}  {model.architecture or ''}")
    console.print(f"folder: {model.path}")
    manifest = model.manifest
    if manifest is None:
        console.print(f"not exported: run 'ortmodels export {name}'")
        return
    console.print(f"exported {manifest.created_at}, task {manifest.task}, opset {manifest.opset}")
    console.print(f"source sha256 {manifest.source_sha256}")
    if manifest.embedding:
        console.print(f"embedding: {manifest.embedding.model_dump()}")
    console.print("tools: " + ", ".join(f"{k} {v}" for k, v in manifest.tools.items()))
    table = Table()
    for column in ("variant", "size", "files", "parity"):
        table.add_column(column)
    for dtype, variant in manifest.variants.items():
        parity = ", ".join(
            f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in variant.parity.items()
        )
        table.add_row(dtype, human_size(variant.size), str(len(variant.files)), parity)
    console.print(table)

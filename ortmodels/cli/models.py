"""``ortmodels list`` and ``ortmodels info``."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ..config import load_settings
from ..store import ModelStore
from ..store.manifest import Manifest
from ..store.versions import export_hint
from ..units import format_bytes
from . import app, console
from .export import kv_bytes_text, verdict_text
from .tables import print_rows


def _store() -> ModelStore:
    return ModelStore(load_settings().local_models_dir)


@app.command("list")
def list_models(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List the models in LOCAL_MODELS_DIR with their exported variants."""
    store = _store()
    infos = store.list()
    if as_json:
        console.print_json(json.dumps([i.to_dict() for i in infos]))
        return
    if not infos:
        where = store.root if store.root.is_dir() else f"{store.root} (LOCAL_MODELS_DIR: no such folder)"
        console.print(f"No models in {where}. Run 'ortmodels samples' for the sample models, or point "
                      "LOCAL_MODELS_DIR at your models folder.", markup=False)
        return
    rows = [
        (
            info.name,
            info.kind_label,
            info.architecture or "-",
            ", ".join(d if info.verdict(d) in ("passed", "not gated") else f"{d} ({info.verdict(d)})"
                      for d in info.variants)
            or "not exported",
            format_bytes(info.size_bytes()) if info.variants else "-",
        )
        for info in infos
    ]
    print_rows(("name", "kind", "architecture", "exported", "size"), rows, whole=("name",),
               title=f"Models in {store.root}")


@app.command()
def info(
    name: str,
    version: str = typer.Option(None, "--version", help="An export version (default: the active one)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show one model: what it is, its export version, variants with sizes and parity figures."""
    model = _store().info(name, version)
    data = model.to_dict()
    if as_json:
        console.print_json(json.dumps(data))
        return
    console.print(f"[bold]{escape(model.name)}[/]  {model.kind}  {escape(model.architecture or '')}")
    console.print(f"folder: {model.path}", markup=False)
    facts = [
        ("parameters", f"{data['parameters'] / 1e6:.1f} M" if data["parameters"] else None),
        ("context length", data["context_length"]),
        ("embedding size", data["embedding_size"]),
        ("vocabulary", data["vocab_size"]),
        ("license", data["license"]),
    ]
    console.print("  ".join(f"{k}: {v}" for k, v in facts if v is not None), markup=False)
    if data["description"]:  # the model card's words: text, never markup
        console.print(data["description"], highlight=False, markup=False)
    manifest = model.manifest
    if manifest is None:
        console.print(f"not exported. {export_hint(model.path, name)}", markup=False)
        return
    console.print(f"version {model.version}, exported {manifest.created_at}, task {manifest.task}, "
                  f"opset {manifest.opset}", markup=False)
    console.print(f"source sha256 {manifest.source_sha256}", markup=False)
    for label, part in (("embedding", manifest.embedding), ("reranker", manifest.reranker)):
        if part:
            facts_of = part.model_dump(exclude_none=True)
            console.print(f"{label}: " + ", ".join(f"{k} {json.dumps(v)}" for k, v in facts_of.items()), markup=False)
    console.print("tools: " + ", ".join(f"{k} {v}" for k, v in manifest.tools.items()), markup=False)
    table = Table()
    for column in ("variant", "size", "files", "verdict", "parity"):
        table.add_column(column)
    for dtype, variant in manifest.variants.items():
        parity = ", ".join(
            f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in variant.parity.items() if k != "probes"
        )
        verdict = verdict_text(variant.quality)
        table.add_row(*map(Text, (dtype, format_bytes(variant.size), str(len(variant.files)))), verdict, Text(parity))
    console.print(table)
    _print_recipes(manifest)
    _print_kv(manifest)


def recipe_text(recipe: dict[str, Any]) -> str:
    """One line for a variant's recipe: its candidate name (int4), else method, bits and blocks."""
    name = recipe.get("candidate") or recipe.get("method", "?")
    details = [f"{recipe['bits']}-bit" if recipe.get("bits") else recipe.get("dtype")]
    if recipe.get("block_size") and recipe.get("bits"):
        details.append(f"blocks of {recipe['block_size']}")
    if recipe.get("calibration"):
        details.append(f"calibrated on {recipe['calibration'].get('tokens')} tokens")
    shown = ", ".join(str(d) for d in details if d)
    return f"{name} ({shown})" if shown else str(name)


def _print_recipes(manifest: Manifest) -> None:
    """How each variant was made, and each recipe tried before it and why it was rejected."""
    rows = []
    for dtype, variant in manifest.variants.items():
        recipe = variant.quantization or {}
        if not recipe:
            continue
        seconds = f", {recipe['seconds']} s" if recipe.get("seconds") is not None else ""
        selected = recipe.get("selection") or {}
        search = selected.get("search")
        how = {None: "", "off": " (default recipe; --int4-search tries smaller ones)"}.get(search, f" ({search} search)")
        if selected.get("judged") is False and search != "off":
            how = f" ({search} search, not judged: gates skipped, fewest bytes per token kept)"
        rows.append((dtype, recipe_text(recipe), format_bytes(variant.size) + seconds,
                     ("kept" if variant.files else "kept (failed its gates)") + how))
        for failed in recipe.get("failed_recipes", []):
            size = (format_bytes(failed["size"]) if failed.get("size")
                    else f"~{format_bytes(failed['estimated_size'])}" if failed.get("estimated_size") else "-")
            seconds = f", {failed['seconds']} s" if failed.get("seconds") is not None else ""
            rows.append((dtype, recipe_text(failed.get("recipe", {})), size + seconds,
                         "rejected: " + "; ".join(failed.get("failures", []))))
    if rows:
        print_rows(("variant", "recipe", "size", "outcome"), rows, whole=("variant",),
                   title="Recipes (tried from the fewest bytes up; the first that passes is kept)")


_KV_FIGURES = ("perplexity", "top1_agreement", "greedy_agreement", "max_logit_diff")


def _print_kv(manifest: Manifest) -> None:
    """Each chat variant's KV cache precisions: bytes per token and the gate figures with that cache."""
    rows = []
    for dtype, variant in manifest.variants.items():
        for kv_dtype, entry in (variant.kv or {}).items():
            verdict = verdict_text(entry.quality)
            figures = ", ".join(f"{k}={entry.parity[k]:.6g}" for k in _KV_FIGURES
                                if isinstance(entry.parity.get(k), float | int))
            rows.append((dtype, kv_dtype, entry.file, kv_bytes_text(entry.bytes_per_token, entry.window_bytes),
                         verdict, figures))
    if rows:
        print_rows(("variant", "KV cache", "graph", "per token", "verdict", "figures"), rows, whole=("variant",),
                   title="KV cache precision (MODEL_KV_DTYPE=auto takes fp16 where it passed)")

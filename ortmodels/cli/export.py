"""``ortmodels export``: HF checkpoint to ONNX variants, with a progress display."""

from __future__ import annotations

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from ..config import load_settings
from ..errors import ConfigurationError
from ..precision import parse_precision_list
from ..store import ModelStore
from ..store.manifest import Manifest, QualityVerdict
from ..units import format_bytes
from . import app, console, err_console


class _RichSteps:
    """Shows each export step as a spinner line that turns into a tick when the next starts."""

    def __init__(self, progress: Progress, name: str) -> None:
        self.progress = progress
        self.name = name
        self.task: int | None = None

    def step(self, message: str) -> None:
        self.finish()
        self.task = self.progress.add_task(f"{self.name}: {message}", total=1)

    def finish(self) -> None:
        if self.task is not None:
            self.progress.update(self.task, completed=1)


@app.command()
def export(
    name: str = typer.Argument(None, help="Model folder name; omit with --all."),
    dtype: str = typer.Option(None, "--dtype", help="Precisions, e.g. fp32,int8 (default: all)."),
    all_models: bool = typer.Option(False, "--all", help="Export every model in the store."),
    force: bool = typer.Option(False, "--force", help="Export even if up to date."),
    keep: int = typer.Option(3, "--keep", min=1, help="Export versions to keep (older ones are pruned)."),
    skip_gates: bool = typer.Option(
        False, "--skip-gates",
        help="Publish every variant whatever its quality figures, marked 'not judged' (random-weight "
             "checkpoints for benchmarks); fp32 must still match PyTorch."),
    force_memory: bool = typer.Option(
        False, "--force-memory", help="Export even when the estimated peak memory exceeds what is available."),
    int4_search: bool = typer.Option(
        False, "--int4-search",
        help="Try smaller int4 recipes (all 4-bit, 8-bit lm_head, ...; rounded to nearest) from the fewest bytes "
             "per token up and keep the first that passes the gates; each costs a build and its checks "
             "(the sample: ~20 s each). Default: the 8-bit q/k/v, down projection and lm_head mix alone. "
             "With --skip-gates, nothing can be judged: the smallest candidate alone (all 4-bit), not judged."),
    int4_gptq: bool = typer.Option(
        False, "--int4-gptq",
        help="With --int4-search, also GPTQ-calibrated candidates: runs the fp32 graph over a shipped text "
             "(written for it when fp32 is not exported), which raised the sample's export peak from 2.39x "
             "to 2.86x the checkpoint and its time by ~8 minutes."),
) -> None:
    """Export a checkpoint to ONNX; the previous export stays until the new one is complete."""
    from ..export import (  # the export stack is heavy: import only here
        EXPORTERS,
        export_model,
    )

    if bool(name) == all_models:
        raise ConfigurationError("Give a model name or --all, not both." if name else
                                 "Give the model to export (ortmodels export NAME; 'ortmodels list' names them) or --all.")
    store = ModelStore(load_settings().local_models_dir)
    names = [name]
    if all_models:
        candidates = [i for i in store.list() if i.has_checkpoint]
        for skipped in (i for i in candidates if i.kind not in EXPORTERS):
            console.print(f"{skipped.name}: skipped, ortmodels cannot export {skipped.kind} models yet")
        names = [i.name for i in candidates if i.kind in EXPORTERS]
        if not names:  # said, not an empty success
            raise ConfigurationError(f"No checkpoint to export in {store.root}: put a Hugging Face checkpoint in a "
                                     "folder there, or run 'ortmodels samples' for the sample models.")
    dtypes = parse_precision_list(dtype) if dtype else None
    int4 = "gptq" if int4_gptq else "rtn" if int4_search else "off"
    failed: list[str] = []
    for model_name in names:
        with Progress(  # on stderr: stdout holds the verdicts alone (no spinner in a pipe)
            SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err_console
        ) as progress:
            steps = _RichSteps(progress, model_name)
            outcome = export_model(store, model_name, dtypes, force=force, progress=steps, keep=keep,
                                   skip_gates=skip_gates, force_memory=force_memory, int4=int4,
                                   map_large_blocks=True)  # this process ends after the export
            steps.finish()
        if outcome.skipped:
            console.print(f"{model_name}: up to date ({', '.join(outcome.manifest.variants)}); --force to redo")
            continue
        console.print(verdict_table(model_name, outcome.manifest, outcome.exported))
        console.print(f"{model_name}: version {outcome.manifest.version} is now active")
        failed += [f"{model_name} {dt}" for dt in outcome.failed]
    if failed:
        console.print(
            f"[red]Failed the quality gates, not published: {', '.join(failed)}.[/] The other variants are "
            "published and 'auto' never picks a failed one; 'ortmodels info NAME' shows the figures."
        )
        raise typer.Exit(1)


#: Parity figures shown per variant in the export's table: (manifest key, column, format).
_FIGURES = (
    ("perplexity", "perplexity", "{:.3f}"),
    ("top1_agreement", "next-token agr.", "{:.3f}"),
    ("greedy_agreement", "greedy agr.", "{:.2f}"),
    ("cosine_min", "worst cosine", "{:.4f}"),
)


def kv_bytes_text(per_token: int, window: int) -> str:
    """A KV precision's cost: bytes per token, and what sliding-window layers hold per sequence."""
    text = f"{format_bytes(per_token)}/token"
    return text if not window else f"{text} + {format_bytes(window)}/sequence in sliding layers"


def verdict_table(name: str, manifest: Manifest, dtypes: list[str]) -> Table:
    """One row per variant built and KV cache precision: its figures, and whether it passed the quality gates."""
    table = Table(title=f"{name}: variants and quality gates")
    for column in ("variant", "KV cache", "size", *(c for _, c, _ in _FIGURES), "verdict"):
        table.add_column(column)
    for dtype in dtypes:
        entry = manifest.variants[dtype]
        # The variant's own graph first (its size is the variant's), then the fp16-KV graph.
        kv = sorted((entry.kv or {}).items(), key=lambda item: item[1].file != "model.onnx")
        rows = [(k, e.parity, e.quality, e.bytes_per_token, e.window_bytes) for k, e in kv] or [
            ("-", entry.parity, entry.quality, 0, 0)]
        for n, (kv_dtype, parity, quality, per_token, window) in enumerate(rows):
            figures = [fmt.format(parity[k]) if isinstance(parity.get(k), (int, float)) else "-"
                       for k, _, fmt in _FIGURES]
            verdict = verdict_text(quality)
            kv_label = kv_dtype if not (per_token or window) else f"{kv_dtype} ({kv_bytes_text(per_token, window)})"
            size = format_bytes(entry.size) if entry.size and n == 0 else "-"
            table.add_row(dtype if n == 0 else "", kv_label, size, *figures, verdict)
    return table


def verdict_text(quality: QualityVerdict | None) -> Text:
    """A variant's verdict for a table; a "not judged" one (--skip-gates) says what the gates would.
    Styled text, not markup: the manifest's failure texts are shown as they are."""
    if quality is None:
        return Text("not gated")
    failures = "; ".join(quality.failures)
    if not quality.judged:
        return Text.assemble(("not judged", "yellow"), f" (the gates would fail it: {failures})" if failures else "")
    return Text("passed", "green") if quality.passed else Text.assemble(("failed", "red"), f": {failures}")

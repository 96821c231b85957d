"""``ortmodels embed``: embed texts from the terminal."""

from __future__ import annotations

import json

import typer

from . import app, console


@app.command()
def embed(
    name: str = typer.Argument(..., help="Embedding model name."),
    texts: list[str] = typer.Argument(..., help="Texts to embed."),
    full: bool = typer.Option(False, "--full", help="Print whole vectors as JSON."),
) -> None:
    """Embed TEXTS and print the vectors (shortened unless --full)."""
    from ..manager import ModelManager

    model = ModelManager().get_embedding_model(name)
    vectors = model.embed_documents(texts)
    if full:
        console.print_json(json.dumps(vectors))
        return
    for text, vector in zip(texts, vectors):
        head = ", ".join(f"{x:+.4f}" for x in vector[:6])
        console.print(f"{text[:50]!r}: dim {len(vector)} [{head}, ...]", highlight=False)

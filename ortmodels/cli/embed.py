"""``ortmodels embed``: embed texts from the terminal."""

from __future__ import annotations

import json

import typer

from ..errors import ConfigurationError
from . import app, console, model_loaded


@app.command()
def embed(
    name: str = typer.Argument(..., help="Embedding model name."),
    texts: list[str] = typer.Argument(..., help="Texts to embed."),
    full: bool = typer.Option(False, "--full", help="Print whole vectors as JSON."),
    query: bool = typer.Option(False, "--query", help="Embed as queries (the model's query prompt), "
                               "not as documents."),
    prompt_name: str | None = typer.Option(None, "--prompt-name", help="One of the model's prompts, by name."),
    dimensions: int | None = typer.Option(None, "--dimensions", help="Fewer dimensions (Matryoshka models)."),
    matryoshka: bool = typer.Option(False, "--matryoshka", help="Allow --dimensions on a model whose card "
                                    "declares no Matryoshka training."),
) -> None:
    """Embed TEXTS and print the vectors (shortened unless --full)."""
    from ..manager import ModelManager

    if query and prompt_name is not None:  # the library lets the name win: on a command line, say so at once
        raise ConfigurationError(f"--query and --prompt-name {prompt_name} both choose the prompt: give one of them.")
    model = ModelManager().get_embedding_model(name)
    model_loaded()
    vectors = model.embed(texts, input_type="query" if query else "document", prompt_name=prompt_name,
                          dimensions=dimensions, matryoshka=matryoshka)
    if full:
        console.print_json(json.dumps(vectors))
        return
    for text, vector in zip(texts, vectors):
        head = ", ".join(f"{x:+.4f}" for x in vector[:6])
        console.print(f"{text[:50]!r}: dim {len(vector)} [{head}, ...]", highlight=False, markup=False)

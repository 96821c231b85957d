"""``ortmodels rerank``: rank documents for a query from the terminal."""

from __future__ import annotations

import json

import typer

from . import app, console


@app.command()
def rerank(
    name: str = typer.Argument(..., help="Reranker (cross-encoder) model name, optionally name:dtype."),
    query: str = typer.Argument(..., help="The query."),
    documents: list[str] = typer.Argument(..., help="Documents to rank for the query."),
    top_n: int | None = typer.Option(None, "--top-n", min=1, help="Show only the best N."),
    as_json: bool = typer.Option(False, "--json", help="Print [{index, relevance_score, document}] as JSON."),
) -> None:
    """Score each of DOCUMENTS against QUERY and print them best first."""
    from ..manager import ModelManager

    model = ModelManager().get_reranker(name)
    ranked = model.rerank(query, documents, top_n)
    if as_json:
        console.print_json(json.dumps([{"index": i, "relevance_score": s, "document": documents[i]}
                                       for i, s in ranked]))
        return
    for index, score in ranked:
        console.print(f"{score:.4f}  [{index}] {documents[index][:70]!r}", highlight=False, markup=False)

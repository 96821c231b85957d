"""``ortmodels demo``: show what the sample models return, end to end."""

from __future__ import annotations

from . import app, console


@app.command()
def demo() -> None:
    """Run a chat and an embedding on the default models and print what they returned."""
    from langchain_core.messages import HumanMessage, SystemMessage
    from rich.markup import escape

    from ..manager import ModelManager

    manager = ModelManager()
    console.rule("chat")
    chat = manager.get_chat_model()
    reply = chat.invoke([SystemMessage("Be brief."), HumanMessage("Capital of France?")])
    meta, usage = reply.response_metadata, reply.usage_metadata or {}
    console.print(f"[bold]{escape(str(chat.model_name))}[/] ({meta.get('variant')}): {escape(str(reply.content))}")
    console.print(f"  {usage.get('input_tokens')} prompt tokens, {usage.get('output_tokens')} answer tokens, "
                  f"finish reason {meta.get('finish_reason')}")

    console.rule("embeddings")
    emb = manager.get_embedding_model()
    texts = ["The cat sits on the mat.", "A kitten rests on a rug.", "Stock markets fell today."]
    vectors = emb.embed_documents(texts)
    query = emb.embed_query("Where is the cat?")
    console.print(f"[bold]{emb.model_name}[/] ({getattr(emb, 'variant', '?')}): {len(vectors)} vectors of {len(vectors[0])} dimensions")
    for text, vector in zip(texts, vectors):
        score = sum(a * b for a, b in zip(query, vector))
        console.print(f"  similarity to 'Where is the cat?' {score:+.3f}  {text}", markup=False)
    manager.unload_all()

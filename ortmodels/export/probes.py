"""Fixed probe inputs for parity checks: varied lengths, scripts and a text past the limit."""

from __future__ import annotations

PROBE_SENTENCES: tuple[str, ...] = (
    "The quick brown fox jumps over the lazy dog.",
    "What is the capital of France?",
    "Paris is the capital and most populous city of France.",
    "A man is playing a guitar on a street corner.",
    "How do I install a Python package from a local wheel file?",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "東京は日本の首都です。",
    "Emoji and symbols: 🚀 ✓ € ≤ ∑",
    "",
    "ok",
    "Embeddings map text to vectors so that similar meanings lie close together.",
    "SELECT name, count(*) FROM users GROUP BY name HAVING count(*) > 1;",
    "The mitochondria is the powerhouse of the cell, producing ATP through respiration.",
    "I can't believe it's not butter!",
    " ".join(["Long inputs are truncated to the model's limit rather than crashing."] * 60),
    "Short.",
)

#: Chat prompts whose greedy continuations are compared with PyTorch's.
PROBE_PROMPTS: tuple[str, ...] = (
    "What is the capital of France?",
    "Write a short poem about the sea.",
    "Explain in one sentence what a hash table is.",
)

#: Plain chat questions with the words a right answer contains; a ``(system, question)``
#: pair is asked after that system message. A variant derails on one where fp32 PyTorch
#: answers it right and the variant does not, or where the variant loops and PyTorch does
#: not. A model that knows none of the answers (a tiny random one) is not judged on them:
#: its loops come and go with near-ties. The "Be brief." question is the README's and the
#: tests': there the sample's int8 picks "The" over "La" by 0.001 logits, and with an fp16
#: KV cache it answers "La femme de France, la femme de France, ..." (the plain question
#: did not show it).
CHAT_PROBES: tuple[tuple[str | tuple[str, str], tuple[str, ...]], ...] = (
    ("What is the capital of France?", ("Paris",)),
    (("Be brief.", "What is the capital of France?"), ("Paris",)),
    ("What is the capital of Japan?", ("Tokyo",)),
    ("Name the largest planet in the solar system.", ("Jupiter",)),
    ("What colour is the sky on a clear day?", ("blue",)),
    ("How many days are there in a week?", ("seven", "7")),
    ("What is the chemical symbol for water?", ("H2O", "H₂O")),
)

#: Standard-library modules whose docstrings make the perplexity text: real English prose
#: nobody on this project wrote, present wherever Python's sources are.
_PERPLEXITY_SOURCES = ("argparse.py", "json/__init__.py", "logging/__init__.py", "collections/__init__.py")


def perplexity_text(max_chars: int = 2400) -> str:
    """A fixed real text for perplexity, from docstrings of Python's standard library."""
    import ast
    import sysconfig
    from pathlib import Path

    root = Path(sysconfig.get_paths()["stdlib"])
    parts = []
    for rel in _PERPLEXITY_SOURCES:
        path = root / rel
        if path.is_file():
            doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
            if doc:
                parts.append(doc.strip())
    return "\n\n".join(parts)[:max_chars]

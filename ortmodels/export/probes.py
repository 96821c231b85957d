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

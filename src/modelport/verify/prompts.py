"""The built-in prompts every verification runs: prose, code, digits, unicode, and a long one."""
from __future__ import annotations

PROMPTS: tuple[str, ...] = (
    "The quick brown fox jumps over the lazy dog while the model writes its checkpoint.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))",
    "Numbers 0 1 2 3 42 1000 3.14159 -7 and dates 2026-11-22.",
    "Unicode: café naïve Zürich Ελληνικά русский 日本語 中文 한국어 🙂",
    " ".join(["It was the best of times, it was the worst of times, it was the age of wisdom,"] * 12),
)

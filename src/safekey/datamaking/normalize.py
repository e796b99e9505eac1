"""Text normalisation and word n-grams shared by the dedup rules.

Why one module: every rule (exact, n-gram, TF-IDF) must see the same normal form, or a casing or
punctuation change would defeat one rule and not another.
"""

from __future__ import annotations

import re
import unicodedata

_WORD = re.compile(r"\w+", re.UNICODE)
_WS = re.compile(r"\s+")


def normalize(text: str) -> str:
    """NFKC, lowercase, collapse whitespace (the reference's normal form, plus NFKC)."""
    return _WS.sub(" ", unicodedata.normalize("NFKC", text).lower()).strip()


def words(text: str) -> list[str]:
    """Word tokens of the normalised text; punctuation is dropped so it cannot split an n-gram."""
    return words_of_normalized(normalize(text))


def words_of_normalized(norm: str) -> list[str]:
    """:func:`words` for text already passed through :func:`normalize` (saves a second pass at 100K)."""
    return _WORD.findall(norm)


def ngrams(tokens: list[str], n: int) -> set[tuple[str, ...]]:
    """Word n-grams; a text shorter than n yields its whole token tuple (the reference let it escape)."""
    if not tokens:
        return set()
    if len(tokens) < n:
        return {tuple(tokens)}
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}

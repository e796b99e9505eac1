"""n-gram rules: self dedup as union-find over shared n-grams (each cluster keeps its earliest item),
and the index of test / earlier-source n-grams (short test prompts matched as phrases)."""

from __future__ import annotations

from collections.abc import Sequence

from ..normalize import ngrams

# ---------------------------------------------------------------------------------------------
# union-find


class UnionFind:
    """Disjoint sets whose root is always the smallest index, i.e. the earliest item."""

    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, x: int) -> int:
        p = self.parent
        while p[x] != x:
            p[x] = p[p[x]]
            x = p[x]
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            if ra < rb:
                self.parent[rb] = ra
            else:
                self.parent[ra] = rb


def self_ngram_clusters(token_lists: Sequence[list[str]], n: int) -> list[int]:
    """For each text, the index of the earliest text in its shared-n-gram cluster (itself if root)."""
    uf = UnionFind(len(token_lists))
    owner: dict[int, int] = {}
    for i, toks in enumerate(token_lists):
        for g in ngrams(toks, n):
            o = owner.setdefault(hash(g), i)
            if o != i:
                uf.union(o, i)
    return [uf.find(i) for i in range(len(token_lists))]


class GramIndex:
    """n-grams of reference texts (test sets, then kept items of earlier sources) → first owner id."""

    def __init__(self, n: int, min_short_words: int):
        self.n = n
        self.min_short = min_short_words
        self.grams: dict[int, str] = {}
        self.phrases: dict[int, dict[int, str]] = {}  # k -> hash(short text tuple) -> id

    def add(self, rid: str, toks: list[str], phrase: bool = False) -> None:
        for g in ngrams(toks, self.n):
            self.grams.setdefault(hash(g), rid)
        if phrase and self.min_short <= len(toks) < self.n:
            self.phrases.setdefault(len(toks), {}).setdefault(hash(tuple(toks)), rid)

    def match(self, toks: list[str]) -> str | None:
        for g in ngrams(toks, self.n):
            hit = self.grams.get(hash(g))
            if hit is not None:
                return hit
        for k, table in self.phrases.items():
            if len(toks) >= k:
                for i in range(len(toks) - k + 1):
                    hit = table.get(hash(tuple(toks[i : i + k])))
                    if hit is not None:
                        return hit
        return None

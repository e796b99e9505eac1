"""Seeded, category-stratified subsamples for ``--limit``.

Why not the first N rows: benchmark files are sorted by category or source (StrongREJECT's first
30 rows are one category), so a "first N" slice measures one kind of request and calls it the
benchmark. Here each item gets the key ``(rank within its category + u) / category size`` with a
seeded rank and jitter ``u`` in [0, 1); sorting by the key and taking N gives each category its
proportional share, and the sample for N is a prefix of the sample for N + 1, so raising
``--limit`` extends a run folder instead of replacing it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def stratified_sample(items: Sequence[T], n: int | None, *, key: Callable[[T], str], seed: int = 0) -> list[T]:
    """`n` items of `items`, proportional per ``key(item)``, seeded; all items (in order) when n is None or ≥ len."""
    if n is None or n >= len(items):
        return list(items)
    rng = random.Random(seed)
    groups: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        groups.setdefault(key(it), []).append(i)
    keyed: list[tuple[float, float, int]] = []
    for _, idx in sorted(groups.items()):
        order = idx[:]
        rng.shuffle(order)
        for rank, i in enumerate(order):
            keyed.append(((rank + rng.random()) / len(order), rng.random(), i))
    keyed.sort()
    chosen = sorted(i for _, _, i in keyed[:n])
    return [items[i] for i in chosen]


def parse_limit(text: str | None, canonical: Callable[[str], str] = str) -> int | dict[str, int] | None:
    """``--limit``, one syntax for every eval: ``N`` (each benchmark) or ``BENCH=N,BENCH=N``;
    `canonical` maps a benchmark name as typed to its registry name (and refuses unknown ones)."""
    from .types import SafekeyError

    if text is None:
        return None
    try:
        if "=" not in text:
            n = int(text)
            if n < 1:
                raise ValueError
            return n
        out: dict[str, int] = {}
        for part in text.split(","):
            k, v = part.split("=", 1)
            out[canonical(k.strip())] = int(v)
        if min(out.values()) < 1:
            raise ValueError
        return out
    except ValueError:
        raise SafekeyError(f"--limit {text!r}: give a positive N or BENCH=N,BENCH=N") from None

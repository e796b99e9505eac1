"""Selection: all-10 and not Other, then balance down to N.

Balancing repeatedly removes the item with the largest w(i) = share(source(i)) × Σ_{c∈cat(i)}
share(c), shares recomputed after every removal, ties → the lowest position in id order (the
reference used API completion order, so its output depended on network timing).

Why it is fast: w(i) depends only on the item's (source, category list), so items are grouped by
that key; each removal scans the G groups (G ≪ N) instead of all N items. The weight arithmetic
is the reference's, operation for operation (same float results, same ties).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..store import StageOutput, input_report, read_records, require_unique_ids, sidecar, write_stats
from ..types import CATEGORIES, OTHER, Record

CRITERIA = ("Content_Safety_Compliance", "Relevancy_and_No_Redundant_Content", "Accuracy_of_Thinking_Process")


class SelectConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: int = Field(1000, ge=1)
    min_score: int = Field(10, ge=0, le=10)
    # a thinking cut by the teacher's think_budget is not a finished deliberation: kept out unless asked
    allow_forced_thinking: bool = False


def eligible(rec: Record, min_score: int = 10, allow_forced_thinking: bool = False) -> bool:
    s = rec.score or {}
    if getattr(rec, "think_forced", False) and not allow_forced_thinking:
        return False
    return bool(rec.category) and OTHER not in (rec.category or []) and all(s.get(c, -1) >= min_score for c in CRITERIA)


def balance(items: list[Record], n: int) -> list[Record]:
    """Keep `n` items; see the module docstring. Output in id order."""
    items = sorted(items, key=lambda r: r.id)
    if len(items) <= n:
        return items
    groups: dict[tuple[str, tuple[str, ...]], list[int]] = defaultdict(list)
    for pos, r in enumerate(items):
        groups[(r.source or "", tuple(r.category or ()))].append(pos)
    heads = {k: 0 for k in groups}  # next remaining position in each group (positions ascend)
    src_n: Counter[str] = Counter(r.source or "" for r in items)
    cat_n: Counter[str] = Counter()
    for r in items:
        for c in CATEGORIES:
            if c in (r.category or ()):
                cat_n[c] += 1
    alive = len(items)
    removed: set[int] = set()
    while alive > n:
        total = sum(cat_n[c] for c in CATEGORIES)
        cat_p = {c: (cat_n[c] / total if total else 0.0) for c in CATEGORIES}
        best_key, best_w, best_pos = None, None, None
        for k, lst in groups.items():
            h = heads[k]
            if h >= len(lst):
                continue
            src, cats = k
            w = (src_n[src] / alive) * sum([cat_p.get(c, 0.0) for c in cats])
            pos = lst[h]
            if best_w is None or w > best_w or (w == best_w and pos < best_pos):
                best_key, best_w, best_pos = k, w, pos
        heads[best_key] += 1
        removed.add(best_pos)
        r = items[best_pos]
        src_n[r.source or ""] -= 1
        for c in CATEGORIES:
            if c in (r.category or ()):
                cat_n[c] -= 1
        alive -= 1
    return [r for pos, r in enumerate(items) if pos not in removed]


def run(inp: str, out: str, cfg: SelectConfig, *, overwrite: bool = True, skip_bad: bool = False) -> dict[str, Any]:
    """A global step: rewritten whole each run (it is instant), with the usual sidecars."""
    recs = list(read_records(inp, skip_bad=skip_bad, rejects=sidecar(Path(out), "rejects.jsonl") if skip_bad else None))
    require_unique_ids(recs, inp)
    pool = [r for r in recs if eligible(r, cfg.min_score, cfg.allow_forced_thinking)]
    chosen = balance(pool, cfg.n)
    so = StageOutput(out, stage="data.select", config=cfg, overwrite=True)
    try:
        for r in chosen:
            so.write(r.model_copy(update={"unsafe": 1}))
    finally:
        so.close()
    stats = {
        "stage": "data.select", "output": str(out), "inputs": len(recs), "eligible": len(pool), "selected": len(chosen),
        "not_all_max": sum(1 for r in recs if not all((r.score or {}).get(c, -1) >= cfg.min_score for c in CRITERIA)),
        "other": sum(1 for r in recs if OTHER in (r.category or [])),
        "think_forced": sum(1 for r in recs if getattr(r, "think_forced", False)),
        "by_source": dict(sorted(Counter(r.source for r in chosen).items())),
        "by_category": dict(sorted(Counter(c for r in chosen for c in r.category or []).items())),
        **input_report("data.select", Path(out), len(recs)),
    }
    write_stats(so.stats_path, stats)
    return stats

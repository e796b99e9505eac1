"""One training file from harmful and benign sources (STAR-1 + STAR-benign-915, as SafeKey trains).

Why: SafeKey's Dual-Path Safety Head learns harmful vs benign. Trained on STAR-1 alone (every record
``unsafe=1``) it sees one class and learns nothing; the paper trains on STAR-1 plus the 915 benign
look-alikes. Each source is a local file (JSON / JSONL / CSV / Parquet) or a hub dataset id; its
records get ``unsafe`` (1 for harmful, 0 for benign) where they carry none — a record whose own
label contradicts its role is refused, not overwritten. Ids are kept; an id seen in an earlier
source gets ``#benign`` / ``#harmful`` appended (the convention of ``data benign-filter``), and a
record without an id gets ``{role}-{row}``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..sources import load_table
from ..store import sidecar, write_records, write_stats
from ..types import Record, SafekeyError

ROLES = {"harmful": 1, "benign": 0}


def _rows(source: str) -> list[dict[str, Any]]:
    p = Path(source).expanduser()
    if p.suffix in (".jsonl", ".json") and p.exists():
        from ..store import iter_json_objects

        rows = []
        for loc, obj, err in iter_json_objects(p):
            if err is not None or not isinstance(obj, dict):
                raise SafekeyError(f"{loc}: {err or 'expected a JSON object'}")
            rows.append(obj)
        return rows
    return load_table(source, split="train") if not p.exists() else load_table(source)


def mix(sources: list[tuple[str, str]], out: str | Path) -> dict[str, Any]:
    """(role, source) pairs → one JSONL of records with ``unsafe`` set; returns the stats."""
    if not sources:
        raise SafekeyError("give at least one --harmful or --benign source")
    records: list[Record] = []
    seen: set[str] = set()
    per_source: dict[str, dict[str, int]] = {}
    for role, src in sources:
        want = ROLES[role]
        counts: Counter[str] = Counter()
        for i, row in enumerate(_rows(src)):
            row = dict(row)
            rid = str(row.get("id")) if row.get("id") not in (None, "") else f"{role}-{i}"
            if rid in seen:
                rid = f"{rid}#{role}"
                counts["renamed"] += 1
            if rid in seen:
                raise SafekeyError(f"{src}: row {i}: id {rid} appears twice")
            if row.get("unsafe") not in (None, want):
                raise SafekeyError(f"{src}: row {i} (id {row.get('id')}) says unsafe={row['unsafe']} but the source is "
                                   f"given as {role}")
            row.update(id=rid, unsafe=want)
            try:
                rec = Record.model_validate(row)
            except ValidationError as e:
                raise SafekeyError(f"{src}: row {i}: {e.errors()[0]['loc']}: {e.errors()[0]['msg']}") from None
            seen.add(rid)
            records.append(rec)
            counts["records"] += 1
        per_source[f"{role}:{src}"] = dict(counts)
    write_records(out, records)  # whole file, temp + rename: a kill leaves the old file or the new one
    stats = {"stage": "data.mix", "output": str(out), "records": len(records),
             "unsafe": {str(k): v for k, v in sorted(Counter(r.unsafe for r in records).items())}, "per_source": per_source}
    write_stats(sidecar(Path(out), "stats.json"), stats)
    return stats


__all__ = ["ROLES", "mix"]

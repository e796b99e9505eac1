"""Collect the training pool and the decontamination test sets.

Writes ``OUT`` (pool records, ``unsafe=1``, in source order then row order) and ``OUT``'s sibling
``tests.jsonl`` (every benchmark prompt we evaluate on), plus a per-source count table.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..store import StageOutput, write_stats
from ..types import Record, SafekeyError
from .sources import SOURCES_BY_NAME, TEST_SETS, TESTS_BY_NAME, TRAIN_SOURCES, Override, load_source


class CollectConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sources: list[str] = Field(default_factory=lambda: [s.name for s in TRAIN_SOURCES])
    test_sets: list[str] = Field(default_factory=lambda: [s.name for s in TEST_SETS])
    overrides: dict[str, str | Override] = Field(default_factory=dict, description="source or test-set name → local file")
    allow_missing: bool = Field(False, description="skip (and report) sources/test sets that cannot be loaded")
    limit_per_source: int | None = Field(None, ge=1)
    seed: int = 42


def tests_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name.replace(".jsonl", "") + ".tests.jsonl")


def _load(kind: str, name: str, cfg: CollectConfig, missing: dict[str, str]) -> tuple[list[dict], str]:
    spec = (SOURCES_BY_NAME if kind == "train" else TESTS_BY_NAME).get(name)
    if spec is None:
        known = sorted(SOURCES_BY_NAME if kind == "train" else TESTS_BY_NAME)
        raise SafekeyError(f"unknown {kind} source {name!r}; known: {', '.join(known)}")
    try:
        return load_source(spec, cfg.overrides.get(name), seed=cfg.seed)
    except SafekeyError as e:
        if not cfg.allow_missing:
            raise SafekeyError(f"{e} (set collect.allow_missing=true to skip it and report it as missing)") from None
        missing[name] = str(e)[:300]
        return [], "missing"


def run(out: str, cfg: CollectConfig, *, overwrite: bool = True) -> dict[str, Any]:
    t0 = time.time()
    missing: dict[str, str] = {}
    table: list[dict[str, Any]] = []
    pool: list[Record] = []
    for name in cfg.sources:
        rows, where = _load("train", name, cfg, missing)
        if cfg.limit_per_source:
            rows = rows[: cfg.limit_per_source]
        pool += [Record(**r, unsafe=1) for r in rows]
        table.append({"kind": "train", "name": name, "rows": len(rows), "from": where})
    tests: list[Record] = []
    for name in cfg.test_sets:
        rows, where = _load("test", name, cfg, missing)
        tests += [Record(id=f"test:{r['id']}", question=r["question"], source=name) for r in rows]
        table.append({"kind": "test", "name": name, "rows": len(rows), "from": where})
    if not pool:  # allow_missing skipped everything: an empty pool makes every later step empty, silently
        raise SafekeyError(f"collect: no source could be loaded ({len(missing)} missing: "
                           f"{', '.join(sorted(missing)[:5])}{'…' if len(missing) > 5 else ''}); nothing to build a "
                           "dataset from — give local files under collect.overrides")
    for path, recs in ((Path(out), pool), (tests_path(out), tests)):
        so = StageOutput(path, stage="data.collect", config=cfg, overwrite=overwrite)
        try:
            for r in recs:
                so.write(r)
        finally:
            so.close()
    stats = {"stage": "data.collect", "output": str(out), "tests_output": str(tests_path(out)), "pool": len(pool),
             "tests": len(tests), "missing": missing, "table": table, "seconds": round(time.time() - t0, 2)}
    from ..store import sidecar

    write_stats(sidecar(Path(out), "stats.json"), stats)
    return stats


def markdown_table(stats: dict[str, Any]) -> str:
    lines = ["| kind | name | rows | from |", "|---|---|---|---|"]
    for r in stats["table"]:
        lines.append(f"| {r['kind']} | {r['name']} | {r['rows']:,} | {r['from']} |")
    return "\n".join(lines)

"""Dedup + decontamination of the collected pool, without dense N×N matrices.

The reference order is kept (per source, in collection order: self n-gram dedup, 8-gram and TF-IDF
decontamination against the test sets *and earlier sources*; then global TF-IDF, global embedding,
embedding vs test) but every rule is deterministic and memory-bounded:

* n-gram self dedup is union-find over shared n-grams; each cluster keeps its earliest item (the
  reference popped an arbitrary survivor out of a set);
* texts shorter than n are one whole-text gram, and short test prompts (≥ ``min_short_words``) are
  also matched as contained phrases, so short items no longer escape decontamination;
* TF-IDF and embedding neighbours come from row-chunked sparse / BLAS products thresholded chunk by
  chunk, so memory is O(chunk × N) instead of O(N²); greedy removal visits items in pool order and
  drops an item iff it is similar to an earlier *kept* item;
* every removal is recorded with its rule, what it was matched against and the matching id;
* embeddings are computed only for what survives the cheaper rules (they run last),
  in token-length-sorted batches with as many threads as other processes leave free, and the
  test-set vectors are cached on disk (``Embedder``). On 2 cores the embedding is the bottleneck:
  ~5.9K word pieces/s, ~130 GFLOPS, close to what the cores' matmul peak allows (see
  benchmarks/dedup_scale.py for the arithmetic).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import REFERENCE_NGRAM, DedupConfig, DedupResult, Item, Removal, default_ngram
from .embeddings import Embedder, ThreadGovernor, make_embedder, quantize_int8, resolve_embedding_model
from .neighbours import (
    _best_from_pairs,
    _dense_best,
    _dense_self_pairs,
    _sparse_best,
    _sparse_self_pairs,
    greedy_remove,
    tfidf_pairs,
)
from .ngrams import GramIndex, UnionFind, self_ngram_clusters
from .procedure import dedup

__all__ = ["REFERENCE_NGRAM", "DedupConfig", "DedupResult", "Embedder", "GramIndex", "Item", "Removal", "ThreadGovernor",
           "UnionFind", "_best_from_pairs", "_dense_best", "_dense_self_pairs", "_sparse_best", "_sparse_self_pairs",
           "dedup", "default_ngram", "greedy_remove", "make_embedder", "markdown_steps", "quantize_int8",
           "resolve_embedding_model", "run", "self_ngram_clusters", "tfidf_pairs"]


# ---------------------------------------------------------------------------------------------
# the stage


def run(inp: str, tests: str, out: str, cfg: DedupConfig, *, skip_bad: bool = False,
        log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Pool JSONL + tests JSONL → kept records (pool order), ``NAME.removed.jsonl``, per-step stats."""
    import json

    from ...store import StageOutput, input_report, read_records, require_unique_ids, sidecar, write_stats

    t0 = time.time()
    recs = list(read_records(inp, skip_bad=skip_bad, rejects=sidecar(Path(out), "rejects.jsonl") if skip_bad else None))
    require_unique_ids(recs, inp)
    trecs = list(read_records(tests, skip_bad=skip_bad))
    items = [Item(r.id, r.question or "", r.source or "") for r in recs]
    titems = [Item(r.id, r.question or "", r.source or "test") for r in trecs]
    res = dedup(items, titems, cfg, log=log)
    so = StageOutput(out, stage="data.dedup", config=cfg, overwrite=True)
    try:
        for i in res.kept:
            so.write(recs[i])
    finally:
        so.close()
    rem_path = sidecar(Path(out), "removed.jsonl")
    with rem_path.open("w", encoding="utf-8") as f:
        for r in res.removals:
            f.write(json.dumps(r.to_json(), ensure_ascii=False) + "\n")
    from collections import Counter

    stats = {"stage": "data.dedup", "output": str(out), "removed_file": str(rem_path), "inputs": len(recs),
             "tests": len(trecs), "kept": len(res.kept), "steps": res.steps, "per_source": res.per_source,
             "removed_by_step_and_target": {f"{k[0]}/{k[1]}": v for k, v in
                                            sorted(Counter((r.step, r.against) for r in res.removals).items())},
             "kept_by_source": dict(Counter(recs[i].source for i in res.kept)),
             **input_report("data.dedup", Path(out), len(recs)),
             "seconds": round(time.time() - t0, 2)}
    write_stats(sidecar(Path(out), "stats.json"), stats)
    return stats


def markdown_steps(stats: dict[str, Any]) -> str:
    lines = ["| step | rule | against | removed | remaining | s |", "|---|---|---|---|---|---|"]
    for s in stats["steps"]:
        rem = "" if s.get("remaining") is None else f"{s['remaining']:,}"
        lines.append(f"| {s['step']} | {s['rule']} | {s['against']} | {s['removed']:,} | {rem} | {s['seconds']} |")
    return "\n".join(lines)

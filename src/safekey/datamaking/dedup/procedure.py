"""The whole dedup procedure in the reference order (per source: self n-gram, 8-gram and TF-IDF
decontamination against tests and earlier sources; then global TF-IDF, embeddings, embeddings vs test)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..normalize import normalize, words, words_of_normalized
from .config import DedupConfig, DedupResult, Item, Removal, default_ngram
from .embeddings import make_embedder
from .neighbours import (
    _dense_best,
    _dense_self_pairs,
    _sparse_best,
    _sparse_self_pairs,
    greedy_remove,
)
from .ngrams import GramIndex, self_ngram_clusters

# ---------------------------------------------------------------------------------------------
# the whole procedure


def dedup(
    items: Sequence[Item],
    tests: Sequence[Item],
    cfg: DedupConfig,
    *,
    embed: Callable[[list[str]], np.ndarray] | None = None,
    log: Callable[[str], None] | None = None,
) -> DedupResult:
    """Run every rule in the reference order; `items` must be in pool order (sources in collection order)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    say = log or (lambda s: None)
    n = len(items)
    alive = np.ones(n, dtype=bool)
    removals: list[Removal] = []
    steps: list[dict[str, Any]] = []
    norm = [normalize(it.text) for it in items]
    toks = [words_of_normalized(t) for t in norm]
    test_toks = [words(t.text) for t in tests]

    def record(step: str, rule: str, against: str, idx: int, matched: str, score: float | None = None) -> None:
        alive[idx] = False
        removals.append(Removal(items[idx].id, items[idx].source, step, rule, against, matched, score))

    def step_done(step: str, rule: str, against: str, t0: float, before: int) -> None:
        after = int(alive.sum())
        steps.append({"step": step, "rule": rule, "against": against, "removed": before - after,
                      "remaining": after, "seconds": round(time.time() - t0, 2)})
        say(f"dedup {step}: -{before - after} → {after} ({time.time() - t0:.1f}s)")

    # 0. empty texts and exact duplicates of the normal form (cheap, and makes later steps smaller)
    t0, before = time.time(), int(alive.sum())
    first: dict[str, int] = {}
    for i, it in enumerate(items):
        if not toks[i]:
            record("exact", "empty", "self", i, it.id)
            continue
        j = first.setdefault(norm[i], i)
        if j != i:
            record("exact", "exact_normalized", "self" if items[j].source == it.source else "earlier_source", i, items[j].id, 1.0)
    step_done("exact", "exact_normalized", "pool", t0, before)

    # TF-IDF fitted once on pool + tests: one IDF for every comparison (the reference refit per call).
    # fit_transform on the concatenation == fit then transform of each part, with one tokenisation pass.
    t0 = time.time()
    XT = TfidfVectorizer(dtype=np.float32).fit_transform(norm + [normalize(t.text) for t in tests]).tocsr()
    X, T = XT[:n], XT[n:]
    del XT, norm
    say(f"dedup tfidf fit: {X.shape} ({time.time() - t0:.1f}s)")

    # 1. per source, in collection order
    gidx = GramIndex(cfg.test_ngram, cfg.min_short_words)
    for j, t in enumerate(tests):
        gidx.add(t.id, test_toks[j], phrase=True)
    ref_rows: list[int] = []  # kept pool rows of earlier sources (TF-IDF references)
    sources: list[str] = []
    for it in items:
        if it.source not in sources:
            sources.append(it.source)
    by_source: dict[str, list[int]] = {s: [] for s in sources}
    for i, it in enumerate(items):
        by_source[it.source].append(i)
    per_source_counts: dict[str, dict[str, int]] = {}
    t_ng = t_dc = t_tf = 0.0
    b_ng = int(alive.sum())
    for s in sources:
        idx = [i for i in by_source[s] if alive[i]]
        c = {"in": len(by_source[s]), "self_ngram": 0, "ngram_test": 0, "ngram_earlier": 0, "tfidf_test": 0, "tfidf_earlier": 0}
        nsz = cfg.ngram_sizes.get(s) or default_ngram(len(by_source[s]))
        t0 = time.time()
        roots = self_ngram_clusters([toks[i] for i in idx], nsz)
        for local, r in enumerate(roots):
            if r != local:
                record("self_ngram", f"shared_{nsz}gram", "self", idx[local], items[idx[r]].id)
                c["self_ngram"] += 1
        t_ng += time.time() - t0
        t0 = time.time()
        idx = [i for i in idx if alive[i]]
        test_ids = {t.id for t in tests}
        for i in idx:
            hit = gidx.match(toks[i])
            if hit is not None:
                against = "test" if hit in test_ids else "earlier_source"
                record("ngram_decontam", f"shared_{cfg.test_ngram}gram", against, i, hit)
                c["ngram_test" if against == "test" else "ngram_earlier"] += 1
        t_dc += time.time() - t0
        t0 = time.time()
        idx = [i for i in idx if alive[i]]
        if idx:
            bt, at = _sparse_best(X[idx], T, cfg.tfidf_threshold, cfg.chunk_rows)
            if ref_rows:
                be, ae = _sparse_best(X[idx], X[ref_rows], cfg.tfidf_threshold, cfg.chunk_rows)
            else:
                be, ae = np.zeros(len(idx), np.float32), np.full(len(idx), -1)
            for k, i in enumerate(idx):
                if at[k] >= 0:  # a test match wins: decontamination is what must be reported
                    record("tfidf_decontam", f"tfidf>={cfg.tfidf_threshold}", "test", i, tests[at[k]].id, bt[k])
                    c["tfidf_test"] += 1
                elif ae[k] >= 0:
                    record("tfidf_decontam", f"tfidf>={cfg.tfidf_threshold}", "earlier_source", i, items[ref_rows[ae[k]]].id, be[k])
                    c["tfidf_earlier"] += 1
        t_tf += time.time() - t0
        for i in idx:
            if alive[i]:
                gidx.add(items[i].id, toks[i])
                ref_rows.append(i)
        c["out_after_source_steps"] = sum(1 for i in by_source[s] if alive[i])
        per_source_counts[s] = c
    removed_by = {r: sum(pc[r] for pc in per_source_counts.values()) for r in
                  ("self_ngram", "ngram_test", "ngram_earlier", "tfidf_test", "tfidf_earlier")}
    after = int(alive.sum())
    steps.append({"step": "self_ngram", "rule": "shared n-gram (n per source), union-find, keep earliest", "against": "self",
                  "removed": removed_by["self_ngram"], "remaining": None, "seconds": round(t_ng, 2)})
    steps.append({"step": "ngram_decontam", "rule": f"shared {cfg.test_ngram}-gram / short phrase", "against": "test + earlier sources",
                  "removed": removed_by["ngram_test"] + removed_by["ngram_earlier"], "removed_test": removed_by["ngram_test"],
                  "remaining": None, "seconds": round(t_dc, 2)})
    steps.append({"step": "tfidf_decontam", "rule": f"tfidf cosine >= {cfg.tfidf_threshold}", "against": "test + earlier sources",
                  "removed": removed_by["tfidf_test"] + removed_by["tfidf_earlier"], "removed_test": removed_by["tfidf_test"],
                  "remaining": after, "seconds": round(t_tf, 2)})
    say(f"dedup per-source: -{b_ng - after} → {after} ({t_ng + t_dc + t_tf:.1f}s)")

    # 2. global greedy TF-IDF within the pool
    t0, before = time.time(), int(alive.sum())
    rows = np.flatnonzero(alive)
    pi, pj, ps = _sparse_self_pairs(X[rows], cfg.tfidf_threshold, cfg.chunk_rows)
    for j, (i, s) in sorted(greedy_remove(len(rows), pi, pj, ps).items()):
        record("tfidf_self", f"tfidf>={cfg.tfidf_threshold}", "pool", int(rows[j]), items[rows[i]].id, s)
    step_done("tfidf_self", f"tfidf cosine >= {cfg.tfidf_threshold}, greedy in pool order", "pool", t0, before)

    # 3./4. embeddings: global greedy, then vs test
    if cfg.embedding:
        emb = embed or make_embedder(cfg)
        stats0 = dict(getattr(emb, "stats", None) or {})
        t0, before = time.time(), int(alive.sum())
        rows = np.flatnonzero(alive)
        E = emb([items[i].text for i in rows])
        te = time.time() - t0
        pi, pj, ps = _dense_self_pairs(E, cfg.embed_threshold, cfg.chunk_rows)
        gone = greedy_remove(len(rows), pi, pj, ps)
        for j, (i, s) in sorted(gone.items()):
            record("embed_self", f"embedding>={cfg.embed_threshold}", "pool", int(rows[j]), items[rows[i]].id, s)
        step_done("embed_self", f"embedding cosine >= {cfg.embed_threshold}, greedy in pool order", "pool", t0, before)
        steps[-1]["embed_seconds"] = round(te, 2)
        t0, before = time.time(), int(alive.sum())
        keep_mask = np.array([int(r) not in gone for r in range(len(rows))], dtype=bool)
        rows2, E2 = rows[keep_mask], E[keep_mask]
        test_texts = [t.text for t in tests]
        cached = getattr(emb, "cached", None)
        TE = cached(test_texts) if cfg.embed_cache and cached is not None else emb(test_texts)
        bt, at = _dense_best(E2, TE, cfg.embed_threshold, cfg.chunk_rows)
        for k, i in enumerate(rows2):
            if at[k] >= 0:
                record("embed_decontam", f"embedding>={cfg.embed_threshold}", "test", int(i), tests[at[k]].id, bt[k])
        step_done("embed_decontam", f"embedding cosine >= {cfg.embed_threshold}", "test", t0, before)
        if isinstance(getattr(emb, "stats", None), dict):  # this call's share of the embedder's counters
            steps[-1]["embedder"] = {k: round(v - stats0.get(k, 0), 2) for k, v in emb.stats.items()}

    kept = [int(i) for i in np.flatnonzero(alive)]
    return DedupResult(kept=kept, removals=removals, steps=steps, per_source=per_source_counts)

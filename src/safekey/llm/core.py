"""What every backend shares: the cache in front, per-item results, stats.

A concrete backend implements only ``_run(requests, on_result)``: answer the cache misses, call
``on_result(i, completion)`` as each item finishes (so a kill mid-batch keeps what was done), and
return the list. This class does the cache lookup, stores successes immediately, never stores
failures, and counts everything for ``stats()`` / ``summary()``.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..paths import home
from .base import BackendConfig, ChatRequest, Completion
from .cache import ResponseCache, request_key

log = logging.getLogger("safekey.llm")

OnResult = Callable[[int, Completion], None]


# top-level files that never shape a prompt, a token or a weight (notes, licences, locks)
_IDENTITY_SKIP = (".md", ".lock", ".log", ".png", ".jpg", ".html")


def local_model_id(path: str | Path) -> str:
    """A cache identity for a local model folder: its path plus the name, size, mtime and ctime of
    every top-level file that can shape an answer (weights, configs, the chat template, tokenizer
    files of any format: ``chat_template.jinja``, ``tokenizer.model``, ``merges.txt``, ``vocab.txt``).

    Why: a training run that rewrites a checkpoint in place, or an edited template, must not be
    answered from the cache of the previous one; ctime because ``touch -r`` restores a swapped
    file's mtime and nothing in userspace can set its ctime.
    """
    p = Path(path)
    if not p.is_dir():
        return str(path)
    h = hashlib.sha256()
    for f in sorted(p.iterdir()):
        if f.name.startswith(".") or f.suffix.lower() in _IDENTITY_SKIP or not f.is_file():
            continue
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns};".encode())
    return f"{p.resolve()}@{h.hexdigest()[:16]}"


class BaseBackend:
    """Cache + stats around a backend's ``_run``. Subclasses set `kind` and implement `_run`."""

    kind: str = "base"

    def __init__(self, config: BackendConfig):
        self.config = config
        self._cache: ResponseCache | None = None
        self._stats: collections.Counter[str] = collections.Counter()
        self._seconds = 0.0
        self._lock = threading.Lock()

    # -- to implement ------------------------------------------------------------------------
    def _run(self, requests: list[ChatRequest], on_result: OnResult) -> list[Completion]:
        raise NotImplementedError

    def model_id(self) -> str:
        """What identifies the model in cache keys (never the URL or key)."""
        return self.config.model

    # -- public ------------------------------------------------------------------------------
    @property
    def cache(self) -> ResponseCache | None:
        if not self.config.cache:
            return None
        if self._cache is None:
            d = Path(self.config.cache_dir) if self.config.cache_dir else home() / "llm-cache"
            self._cache = ResponseCache(d)
        return self._cache

    def generate(self, requests: Sequence[ChatRequest], *, cache: bool | None = None) -> list[Completion]:
        """Answer a batch, same order; cached items are not re-sent; failures come back with `error`."""
        reqs = [r if isinstance(r, ChatRequest) else ChatRequest.model_validate(r) for r in requests]
        if not reqs:
            return []
        use_cache = self.config.cache if cache is None else cache
        store = self.cache if use_cache else None
        t0 = time.perf_counter()
        results: list[Completion | None] = [None] * len(reqs)
        keys: list[str] = []
        if store is not None:
            mid = self.model_id()
            seen: collections.Counter[str] = collections.Counter()
            for r in reqs:
                base = request_key(self.kind, mid, r, 0)
                keys.append(request_key(self.kind, mid, r, seen[base]) if seen[base] else base)
                seen[base] += 1
            hits = store.get_many(keys)
            for i, k in enumerate(keys):
                if k in hits:
                    results[i] = hits[k]
        todo = [i for i, c in enumerate(results) if c is None]
        with self._lock:
            self._stats["requests"] += len(reqs)
            self._stats["cache_hits"] += len(reqs) - len(todo) if store is not None else 0
            self._stats["cache_misses"] += len(todo) if store is not None else 0
        if todo:
            label = self.config.label()

            def on_result(j: int, c: Completion) -> None:
                i = todo[j]
                if store is not None and c.error is None:
                    store.put(keys[i], c, label)

            answered = self._run([reqs[i] for i in todo], on_result)
            if len(answered) != len(todo):
                raise RuntimeError(f"{self.kind} backend returned {len(answered)} results for {len(todo)} requests")
            for j, c in enumerate(answered):
                results[todo[j]] = c
        out = [c for c in results if c is not None]
        with self._lock:
            for c in out:
                if c.cached:
                    continue
                self._stats["ok" if c.error is None else "errors"] += 1
                self._stats["prompt_tokens"] += c.prompt_tokens or 0
                self._stats["completion_tokens"] += c.completion_tokens or 0
            self._seconds += time.perf_counter() - t0
        failed = sum(1 for c in out if c.error is not None)
        if failed:
            log.warning("%s: %d of %d requests failed (kept as failures, retried next run)", self.config.label(), failed, len(out))
        return out

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._stats[name] += n

    def stats(self) -> dict[str, Any]:
        """Counters since this backend was created: requests, cache hits/misses, ok, errors, retries, tokens, seconds."""
        with self._lock:
            d: dict[str, Any] = {
                k: int(self._stats.get(k, 0))
                for k in ("requests", "cache_hits", "cache_misses", "ok", "errors", "retries", "prompt_tokens", "completion_tokens")
            }
            d.update({k: int(v) for k, v in self._stats.items() if k not in d})
            d["seconds"] = round(self._seconds, 3)
        d["backend"] = self.config.label()
        return d

    def summary(self) -> str:
        """One line for logs and stage stats."""
        s = self.stats()
        hit = s["cache_hits"]
        pct = f" ({100 * hit / s['requests']:.0f}%)" if s["requests"] else ""
        return (
            f"{s['backend']}: {s['requests']} requests, {hit} cached{pct}, {s['ok']} answered, "
            f"{s['errors']} failed, {s['retries']} retries, {s['prompt_tokens']}+{s['completion_tokens']} tokens, "
            f"{s['seconds']:.1f} s"
        )

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()
            self._cache = None

    def __enter__(self):
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.config.label()}>"

"""Content-addressed on-disk cache of successful completions (sqlite).

Why: data making and judging call slow, paid models over tens of thousands of items and get killed
mid-run. A rerun must make no call for an item already answered. The key is a hash of everything
that determines the answer (backend kind, model identity, messages, prefill, every sampling
parameter, and the occurrence index of an identical request inside one batch so that N sampled
copies stay N different samples). Failures are never stored, so they are retried next run.

sqlite in WAL mode: one file, atomic per row, safe for several processes writing at once. The API
key and base URL are never part of a key or a row.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path

from .base import ChatRequest, Completion

SCHEMA_VERSION = 1


def request_key(kind: str, model_id: str, req: ChatRequest, occurrence: int = 0) -> str:
    """sha256 over the canonical JSON of what determines the answer (not `req.id`)."""
    payload = {
        "v": SCHEMA_VERSION,
        "kind": kind,
        "model": model_id,
        "messages": req.messages,
        "prefill": req.prefill,
        "sampling": req.sampling.model_dump(mode="json"),
        "n": occurrence,
    }
    if req.template_kwargs:  # only when set: earlier cache keys stay valid
        payload["template_kwargs"] = req.template_kwargs
    if req.score_tokens:
        payload["score_tokens"] = list(req.score_tokens)
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ResponseCache:
    """key → Completion. Thread-safe; one sqlite connection guarded by a lock."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "completions.sqlite"
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), timeout=60, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS completions (key TEXT PRIMARY KEY, label TEXT, value TEXT NOT NULL, created REAL)"
        )

    def get_many(self, keys: list[str]) -> dict[str, Completion]:
        out: dict[str, Completion] = {}
        with self._lock:
            for i in range(0, len(keys), 500):
                chunk = keys[i : i + 500]
                q = f"SELECT key, value FROM completions WHERE key IN ({','.join('?' * len(chunk))})"  # placeholders only
                for k, v in self._db.execute(q, chunk):
                    out[k] = Completion.model_validate_json(v).model_copy(update={"cached": True})
        return out

    def put(self, key: str, completion: Completion, label: str = "") -> None:
        """Store one success. Refuses failures: a failed item must be retried on the next run."""
        if completion.error is not None:
            raise ValueError("refusing to cache a failed completion")
        value = completion.model_copy(update={"cached": False}).model_dump_json()
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO completions (key, label, value, created) VALUES (?, ?, ?, ?)",
                (key, label, value, time.time()),
            )

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM completions").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()

"""Whole-file writes that a kill cannot cut: temp file + fsync + rename.

Why a module of its own: configs, stats, reports and the step runner all write this way, and
`config` (which dumps YAML) and `store` (which dumps stats) both need it without importing each other.
"""

from __future__ import annotations

import os
from pathlib import Path


def write_text_atomic(path: Path, text: str) -> None:
    """Temp file + fsync + rename: a kill at any moment leaves the old file or the new one, never half.
    Written as given: metadata writers redact (`store.write_stats`), model text is never altered."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)

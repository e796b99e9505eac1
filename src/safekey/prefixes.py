"""Counter-aligned prefixes, shared by the prefill attacks (evals), RECAP prefills (train) and the
pairs stage's triggers (datamaking): one reader of prefix files, the built-in openings, and one
stable per-item choice (a hash of the id: the same on every rank, every resume, every model)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from .paths import resource
from .records import iter_json_objects
from .types import SafekeyError, thinking_text


def read_prefixes(path: str | Path) -> dict[str, str]:
    """{id: prefix} from JSONL rows ``{id, prefix}``, pairs ``{id, rejected}`` or traces
    ``{id, response}`` (their thinking); a bad row is one line naming file:line."""
    path = Path(path)
    if not path.is_file():
        raise SafekeyError(f"prefixes: {path} not found")
    out: dict[str, str] = {}
    for loc, obj, err in iter_json_objects(path):
        if err is not None:
            raise SafekeyError(f"{loc}: {err}")
        if not isinstance(obj, dict) or "id" not in obj:
            raise SafekeyError(f"{loc}: a prefix row needs an id and a prefix (or a response with <think>)")
        text = obj.get("prefix") or obj.get("rejected")
        if not text and isinstance(obj.get("response"), str):
            text = thinking_text(obj["response"], True)
        if not isinstance(text, str) or not text.strip():
            raise SafekeyError(f"{loc}: no prefix (a 'prefix' string, or a 'response' with thinking)")
        out[str(obj["id"])] = text
    return out


def builtin_openings() -> list[str]:
    """The packaged counter-aligned openings (``{request}`` marks where the request goes)."""
    lines = resource("attacks/counter_aligned.txt").read_text(encoding="utf-8").splitlines()
    return [ln for ln in lines if ln.strip() and not ln.startswith("#")]


def _hash(key: str) -> int:
    return int(hashlib.sha256(key.encode()).hexdigest(), 16)


def pick(pool: list[str], key: str) -> str:
    """The pool entry for `key`, fixed across runs."""
    return pool[_hash(key) % len(pool)]


def in_share(key: str, share: float) -> bool:
    """Is `key` among a fixed `share` of all keys?"""
    return (_hash(key) >> 224) / float(1 << 32) < share


def first_words(text: str, n: int) -> str:
    return " ".join(text.split()[:n])


__all__ = ["builtin_openings", "first_words", "in_share", "pick", "read_prefixes"]

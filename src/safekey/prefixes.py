"""Counter-aligned prefixes, shared by the prefill attacks (evals), RECAP prefills (train) and the
pairs stage's triggers (datamaking): one reader of prefix files, the built-in openings, and one
stable per-item choice (a hash of the id: the same on every rank, every resume, every model)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from .paths import resource
from .records import iter_json_objects
from .types import SafekeyError, thinking_text

# pairs-stage statuses whose policy_response the judge found unsafe (harmful) or over-refusing (benign)
_UNSAFE_STATUSES = ("no_cue", "trigger_failed")


def read_prefixes(path: str | Path) -> dict[str, str]:
    """{id: prefix} of the policy's *own* text: ``{id, prefix}`` rows, traces ``{id, response}``
    (their thinking: e.g. an eval's generations), and pairs-stage rows — ``rejected`` of a
    ``status: pair`` row, ``policy_response`` of a row judged unsafe without a pair. A pairs-stage
    row's ``response`` is the *dataset's* (safe reference) trace, never the policy's: it is not read,
    and rows judged safe give no prefix. A bad row or a repeated id (``1`` and ``"1"`` alike) is one
    line naming file:line."""
    path = Path(path)
    if not path.is_file():
        raise SafekeyError(f"prefixes: {path} not found")
    out: dict[str, str] = {}
    for loc, obj, err in iter_json_objects(path):
        if err is not None:
            raise SafekeyError(f"{loc}: {err}")
        if not isinstance(obj, dict) or "id" not in obj:
            raise SafekeyError(f"{loc}: a prefix row needs an id and a prefix (or a response with <think>)")
        rid = str(obj["id"])
        if rid in out:
            raise SafekeyError(f"{loc}: id {rid!r} appears twice; a prefix file names each item once")
        if "status" in obj:  # a pairs-stage row: only what the policy itself wrote, and only when unsafe
            status = obj.get("status")
            text = obj.get("rejected") if status == "pair" else obj.get("policy_response") if status in _UNSAFE_STATUSES else None
            if status != "pair" and status not in _UNSAFE_STATUSES:
                continue  # judged safe (or not judged): no counter-aligned text to take
        else:
            text = obj.get("prefix") or obj.get("rejected")
            if not text and isinstance(obj.get("response"), str):
                text = thinking_text(obj["response"], True)
        if not isinstance(text, str) or not text.strip():
            raise SafekeyError(f"{loc}: no prefix (a 'prefix' string, a pair's 'rejected', or a 'response' with thinking)")
        out[rid] = text
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

"""Records → encoded training examples (+ drop counts) and the padding collator."""

from __future__ import annotations

import collections
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..store import read_records
from ..types import Record, SafekeyError
from .config import TrainConfig
from .spans import Dropped, encode_record


def load_records(path: str | Path, limit: int | None = None, *, skip_bad: bool = False,
                 rejects: str | Path | None = None) -> list[Record]:
    """The training records; with `skip_bad` a malformed line goes to `rejects` instead of stopping."""
    recs = list(read_records(path, limit=limit, skip_bad=skip_bad, rejects=rejects))
    if not recs:
        raise SafekeyError(f"{path}: no records")
    return recs


def encode_all(tok, records: list[Record], cfg: TrainConfig) -> tuple[list[dict], dict[str, int]]:
    """Encoded features for every record that fits, and {drop reason: count}."""
    feats, dropped = [], collections.Counter()
    seen: set[str] = set()
    for r in records:
        if r.id in seen:
            raise SafekeyError(f"record {r.id}: id appears twice in the training data")
        seen.add(r.id)
        try:
            e = encode_record(
                tok,
                r,
                needs_spans=cfg.needs_spans,
                max_length=cfg.max_length,
                think_flag=cfg.think_flag,
                base_flag=cfg.base_flag,
                default_unsafe=cfg.default_unsafe,
            )
        except Dropped as d:
            dropped[d.reason] += 1
            continue
        feats.append(e.features())
    if not feats:
        raise SafekeyError(f"no record fits max_length={cfg.max_length} (dropped: {dict(dropped)})")
    return feats, dict(dropped)


def refuse_one_class_head(records: list[Record], cfg: TrainConfig) -> None:
    """The Dual-Path Safety Head learns harmful vs benign: trained on one class (STAR-1 alone, every
    record unsafe=1) it learns nothing, silently. Refused before the model is built."""
    if not cfg.use_head:
        return
    labels = collections.Counter(r.unsafe if r.unsafe is not None else cfg.default_unsafe for r in records)
    labels.pop(None, None)  # a missing label is refused per record by the encoder, naming it
    if len(labels) == 1:
        ((only, n),) = labels.items()
        raise SafekeyError(
            f"the safety head would see one class only (all {n} records have unsafe={only}): SafeKey trains on "
            "harmful and benign records (STAR-1 + STAR-benign-915: `safekey data mix --harmful … --benign …`); "
            "add benign look-alikes, or train without the head (--no-head)")


class Collator:
    """Right-pads a list of features. Padding gets attention 0 (the reference padded with 1), label -100."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, feats: list[dict]) -> dict:
        import torch

        T = max(len(f["input_ids"]) for f in feats)

        def pad(key, val):
            return torch.tensor([f[key] + [val] * (T - len(f[key])) for f in feats], dtype=torch.long)

        out = {
            "input_ids": pad("input_ids", self.pad_id),
            "labels": pad("labels", -100),
            "roles": pad("roles", -1),
            "attention_mask": torch.tensor(
                [[1] * len(f["input_ids"]) + [0] * (T - len(f["input_ids"])) for f in feats], dtype=torch.long
            ),
        }
        for k in ("u_start", "u_end", "k_start", "k_end", "unsafe"):
            out[k] = torch.tensor([f[k] for f in feats], dtype=torch.long)
        return out


def prompt_problem(obj: dict[str, Any]) -> str | None:
    """What is wrong with a row's prompt (a non-empty 'question', or 'messages' whose every turn has a
    string role and content), or None: said in one line naming the row, never a validation traceback."""
    msgs = obj.get("messages")
    if isinstance(msgs, list):
        if not msgs:
            return "'messages' is empty"
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                return f"messages[{i}] needs a string 'role' and a string 'content'"
        return None
    if isinstance(obj.get("question"), str) and obj["question"].strip():
        return None
    return "no 'question' (or 'messages')"


def checked_rows(path: str | Path, check: Callable[[Any], str | None], *, limit: int | None = None,
                 skip_bad: bool = False, rejects: Path | None = None, what: str = "row",
                 keep: Callable[[Any], bool] = lambda obj: True) -> list[dict[str, Any]]:
    """The JSON objects of `path` that `check` finds nothing wrong with (it returns the problem);
    a bad one is one line naming file:line, or with `skip_bad` a counted reject in `rejects`.
    Objects `keep` says no to are left out silently (rows another stage marked as not for training)."""
    import json

    from ..records import iter_json_objects

    out: list[dict[str, Any]] = []
    bad: list[str] = []
    for loc, obj, err in iter_json_objects(Path(path)):
        if err is None and not keep(obj):
            continue
        problem = err if err is not None else ("not a JSON object" if not isinstance(obj, dict) else check(obj))
        if problem is not None:
            if not skip_bad:
                raise SafekeyError(f"{loc}: {problem}")
            bad.append(json.dumps({"where": loc, "reason": problem}))
            continue
        out.append(obj)
        if limit and len(out) >= limit:
            break
    if rejects is not None and bad:
        rejects.write_text("\n".join(bad) + "\n", encoding="utf-8")
    if not out:
        raise SafekeyError(f"{path}: no usable {what}")
    return out


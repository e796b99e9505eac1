"""Shared by the analyses: load a model, render a record, map U / K / query to token positions.

Why our own span mapping (not the train stage's): stages never import each other, and analyses
only need start-based assignment of tokens to character regions of the full rendered text (one
tokenisation with offsets — never pieces tokenised separately, which is off by one at merges).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..store import read_records
from ..types import Record, SafekeyError

THINK_OPEN = "<think>\n"


def parse_model_arg(value: str) -> tuple[str, str]:
    """``LABEL=SPEC`` or ``SPEC`` → (label, spec). SPEC: folder, alias, or ``hf:…``."""
    if "=" in value and not value.startswith(("hf:", "/", ".")):
        label, spec = value.split("=", 1)
        return label.strip(), spec
    spec = value
    path = spec[3:] if spec.startswith("hf:") else spec
    return Path(path).name or path, spec


def model_path(spec: str) -> str:
    from ..models import resolve_model

    if spec.startswith("hf:"):
        spec = spec[3:]
    elif ":" in spec.split("/")[0] and not Path(spec).exists():
        raise SafekeyError(f"analyses run local transformers models only; got {spec!r} (use a folder, an alias or hf:PATH)")
    return resolve_model(spec)


def load_model(spec: str, *, eager: bool = False):
    """(model, tokenizer) in eval mode, float32 on CPU. `eager` attention returns attention weights."""
    import torch

    from ..models import load_model as _load
    from ..models import load_tokenizer

    path = model_path(spec)
    tok = load_tokenizer(path, trust_remote_code=False)
    kw: dict[str, Any] = {"dtype": torch.float32}
    if eager:
        kw["attn_implementation"] = "eager"
    model = _load(path, trust_remote_code=False, **kw)
    model.eval()
    return model, tok


@dataclass
class Encoded:
    """One rendered (prompt + response) with token spans, each a half-open [start, end)."""

    id: str
    input_ids: list[int]
    query: tuple[int, int]
    response_start: int
    u: tuple[int, int] | None
    k: tuple[int, int] | None
    unsafe: int | None


def _token_span(offsets: list[tuple[int, int]], start: int, end: int) -> tuple[int, int] | None:
    """Tokens whose first character lies in [start, end). Disjoint regions give disjoint spans."""
    idx = [i for i, (a, b) in enumerate(offsets) if b > a and start <= a < end]
    if not idx:
        return None
    return (idx[0], idx[-1] + 1)


def encode(tok: Any, rec: Record, *, response: str | None = None, max_tokens: int | None = None) -> Encoded:
    """Render `rec` as chat prompt (generation prompt on) + response text and find its spans.

    The response is appended to the rendered prompt rather than rendered inside the template, so a
    template that strips thinking from assistant turns cannot drop U and K.
    """
    messages = rec.prompt_messages()
    prompt = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    resp = rec.response if response is None else response
    if resp is None:
        raise SafekeyError(f"record {rec.id}: no response to analyse")
    text = prompt + resp
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], [tuple(o) for o in enc["offset_mapping"]]
    # the query: every user turn's text inside the rendered prompt
    q_spans = []
    pos = 0
    for m in messages:
        at = prompt.find(m["content"], pos)
        if at < 0:
            raise SafekeyError(f"record {rec.id}: message text not found in the rendered prompt")
        pos = at + len(m["content"])
        if m["role"] == "user":
            sp = _token_span(offsets, at, pos)
            if sp:
                q_spans.append(sp)
    if not q_spans:
        raise SafekeyError(f"record {rec.id}: no user tokens")
    query = (q_spans[0][0], q_spans[-1][1])
    rs = _token_span(offsets, len(prompt), len(text))
    response_start = rs[0] if rs else len(ids)
    u = k = None
    if response is None and rec.u_end is not None and rec.k_end is not None:
        if not resp.startswith(THINK_OPEN):
            raise SafekeyError(f"record {rec.id}: response does not open with <think>")
        p = len(prompt)
        u = _token_span(offsets, p + len(THINK_OPEN), p + rec.u_end)
        k = _token_span(offsets, p + rec.u_end, p + rec.k_end)
    if max_tokens is not None and len(ids) > max_tokens:
        ids = ids[:max_tokens]
        u = u if u and u[1] <= max_tokens else None
        k = k if k and k[1] <= max_tokens else None
    return Encoded(rec.id, ids, query, response_start, u, k, rec.unsafe)


def load_span_records(path: str | Path, *, limit: int | None = None, need_spans: bool = True) -> list[Record]:
    recs = list(read_records(path, limit=limit))
    for r in recs:
        if need_spans and (r.u_end is None or r.k_end is None or r.response is None):
            raise SafekeyError(f"{path}: record {r.id} has no u_end/k_end; run `safekey annotate` first")
    if not recs:
        raise SafekeyError(f"{path}: no records")
    return recs


def write_json(path: str | Path, obj: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)
    return path

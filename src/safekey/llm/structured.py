"""Structured outputs: pull JSON out of model text and validate it against a schema.

Why this exists: the reference parsed judge replies with ``eval()`` on a format example that had a
trailing comma. Models wrap JSON in prose and fences, add trailing commas, or drop quotes. We
accept all of that through ``json_repair`` (a parser, never ``eval``), validate against a pydantic
schema, and return either the typed value or a :class:`ParseFailure` that keeps the raw text so
the stage can write it to its failures file for audit. A parse failure is never a verdict.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, TypeVar, overload

import json_repair
from pydantic import TypeAdapter, ValidationError

T = TypeVar("T")

_FENCE_RE = re.compile(r"```[ \t]*(?:json5?|JSON)?[ \t]*\n?(.*?)```", re.S)
_THINK_END = "</think>"


@dataclass(frozen=True)
class ParseFailure:
    """A reply that did not yield valid JSON for the schema. `raw` is the full model text."""

    reason: str
    raw: str

    @property
    def ok(self) -> bool:
        return False

    def __bool__(self) -> bool:  # `if result:` reads naturally at call sites
        return False


def _candidates(text: str) -> list[str]:
    """Places JSON may hide, most specific first: fenced blocks, then the outermost {...}/[...] span."""
    out: list[str] = [m.group(1).strip() for m in _FENCE_RE.finditer(text)]
    for open_, close in (("{", "}"), ("[", "]")):
        i, j = text.find(open_), text.rfind(close)
        if 0 <= i < j:
            out.append(text[i : j + 1])
    out.append(text.strip())
    seen: set[str] = set()
    return [c for c in out if c and not (c in seen or seen.add(c))]


def _load(candidate: str) -> tuple[bool, Any]:
    """Strict JSON first (fast, exact), then json_repair. (ok, value)."""
    try:
        return True, json.loads(candidate)
    except json.JSONDecodeError:
        pass
    value = json_repair.loads(candidate)
    # json_repair returns "" when it finds nothing JSON-like; a bare string is never what we want
    if value == "" or isinstance(value, str):
        return False, None
    return True, value


def extract_json(text: str, *, after_think: bool = True) -> Any | ParseFailure:
    """The first JSON object/array found in `text` (untyped), or a ParseFailure.

    With `after_think` (default) only the text after the last ``</think>`` is searched, so a JSON
    example inside a reasoning model's thinking is not mistaken for its answer.
    """
    if not isinstance(text, str):
        return ParseFailure(f"expected model text, got {type(text).__name__}", repr(text))
    body = text[text.rfind(_THINK_END) + len(_THINK_END) :] if after_think and _THINK_END in text else text
    for cand in _candidates(body):
        ok, value = _load(cand)
        if ok and isinstance(value, (dict, list)):
            return value
    return ParseFailure("no JSON object or array found in the reply", text)


@overload
def parse_json(text: str, schema: type[T], *, after_think: bool = True) -> T | ParseFailure: ...
@overload
def parse_json(text: str, schema: Any, *, after_think: bool = True) -> Any | ParseFailure: ...


def parse_json(text: str, schema: Any, *, after_think: bool = True) -> Any | ParseFailure:
    """Extract JSON from model `text` and validate it against `schema`.

    `schema` is a pydantic model class or any type pydantic understands (``list[str]``,
    ``dict[str, int]``, a ``Literal``...). Fenced ```json blocks, trailing commas, single quotes and
    surrounding prose are tolerated. Every candidate is tried in order (fenced blocks first) and
    the first that validates wins; otherwise a :class:`ParseFailure` names the first validation
    error and keeps the raw text. A top-level list of objects whose first item validates is not
    silently unwrapped: if you expect one object, the model must give one object.
    """
    adapter = schema if isinstance(schema, TypeAdapter) else TypeAdapter(schema)
    if not isinstance(text, str):
        return ParseFailure(f"expected model text, got {type(text).__name__}", repr(text))
    body = text[text.rfind(_THINK_END) + len(_THINK_END) :] if after_think and _THINK_END in text else text
    first_error: str | None = None  # the first candidate is the most specific: its error says most
    for cand in _candidates(body):
        ok, value = _load(cand)
        if not ok:
            continue
        try:
            return adapter.validate_python(value)
        except ValidationError as e:
            first_error = first_error or _short_validation(e)
    if first_error is None:
        return ParseFailure("no JSON object or array found in the reply", text)
    return ParseFailure(f"JSON does not match the schema: {first_error}", text)


def _short_validation(e: ValidationError) -> str:
    parts = []
    for err in e.errors()[:3]:
        loc = ".".join(str(x) for x in err["loc"]) or "value"
        parts.append(f"{loc}: {err['msg']}")
    more = len(e.errors()) - 3
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


__all__ = ["ParseFailure", "extract_json", "parse_json"]

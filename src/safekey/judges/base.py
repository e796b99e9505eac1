"""The nouns every judge shares: the item it reads, the verdict it returns (or a failure, never a
refusal), which part of a response it sees, the prompt templates and their fingerprints."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..types import SafekeyError

PROMPTS = Path(__file__).resolve().parent / "prompts"
JudgePart = Literal["answer", "think", "thinking", "both", "full"]


# ---------------------------------------------------------------------------------------------
# nouns


class Verdict(BaseModel):
    """One judge decision. Fields that a judge cannot speak to stay None (and skip that metric)."""

    model_config = ConfigDict(extra="forbid")

    label: str
    harmful: bool | None = None
    refused: bool | None = None
    complied: bool | None = None
    score: float | None = None
    reason: str | None = None
    raw: str | None = None  # the judge's own reply (LLM judges), for audits
    detail: dict[str, Any] = Field(default_factory=dict)


@dataclass
class JudgeFailure:
    """The judge could not decide (call failed, reply unparseable). Counted apart, retried on rerun."""

    reason: str
    raw: str | None = None


@dataclass
class JudgeItem:
    id: str
    question: str  # the request as the judge sees it (a transcript for multi-turn)
    text: str  # the part of the response being judged
    messages: list[dict[str, str]] = field(default_factory=list)  # the user-side conversation


class JudgeParseError(ValueError):
    """A judge reply that does not follow the requested format."""


def own_start(response: str, generation: str | None) -> int:
    """Where the model's own text starts in `response` (= prefill + generation): everything before
    is the attacker's prefix, which is recorded but never judged as the model's words. 0 when the
    record does not say what the model wrote (a response brought from elsewhere)."""
    if generation is None or not response.endswith(generation):
        return 0
    return len(response) - len(generation)


def judged_text(response: str, generation: str | None, part: JudgePart = "answer") -> str:
    """The part of a response a judge sees — of the model's own text only.

    `response` is prefill + generation; `generation` is what the model itself wrote. ``answer``: the
    text after the last ``</think>`` — or, when the thinking never closes, the model's own generation
    (never the attacker's prefill, which would make every prefilling item "harmful" by itself; a
    prefill that opens the answer, "Sure, here is", is cut off the same way). ``think``: the
    thinking (between ``<think>`` and ``</think>``, else the generation), from where the model's
    own text starts. ``full``: all, the prefill included.
    """
    if part == "full":
        return response
    own = own_start(response, generation)
    if part == "answer":
        close = response.rfind("</think>")
        if close < 0:
            return response if generation is None else generation
        return response[max(close + len("</think>"), own):].lstrip("\n")
    if part in ("think", "thinking"):
        close = response.rfind("</think>")
        if close < 0:
            return response if generation is None else generation
        start = response.find("<think>")
        begin = (start + len("<think>")) if 0 <= start < close else 0
        return response[min(max(begin, own), close):close].strip("\n")
    raise SafekeyError(f"unknown judge part {part!r}; use answer, thinking, both or full")


def nonce_tag(item_id: str, *texts: str) -> str:
    """A quoting tag the quoted text cannot forge: derived from a hash of the item and its texts."""
    h = hashlib.sha256("\x00".join((item_id, *texts)).encode()).hexdigest()[:12]
    return f"data-{h}"


def render_template(name: str, **values: Any) -> str:
    """Render ``prompts/NAME.j2`` (no autoescape: plain text; values are inserted, never re-parsed)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(PROMPTS)), undefined=jinja2.StrictUndefined, keep_trailing_newline=False,
        autoescape=False,
    )
    return env.get_template(name).render(**values)


def template_hash(*names: str) -> str:
    """Part of the judged-stage fingerprint: editing a prompt must not mix old and new verdicts."""
    h = hashlib.sha256()
    for n in names:
        h.update((PROMPTS / n).read_bytes())
    return h.hexdigest()[:16]


class Judge(ABC):
    name: str
    proxy: bool = False  # a cheap stand-in for a real judge; reports must say so
    # the summary metric its Verdict.score feeds (None: the score, if any, is not reported as a mean)
    score_metric: ClassVar[str | None] = None

    @abstractmethod
    def judge(self, items: Sequence[JudgeItem]) -> list[Verdict | JudgeFailure]: ...

    def fingerprint(self) -> dict[str, Any]:
        """What changes verdicts: goes into the judged-stage config."""
        return {"judge": self.name}

    def preflight(self) -> None:
        """Raise :class:`SafekeyError` now for what would fail only after hours of generation."""
        return None

    def close(self) -> None:
        return None

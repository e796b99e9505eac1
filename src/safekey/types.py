"""Shared types: the one record schema every stage reads and writes.

Records are deliberately open (`extra="allow"`): a stage adds its own fields (``k_text``,
``judge``, ``generation`` …) and every later stage keeps them untouched. Only the fields that
several stages rely on are typed here.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# The policy categories, exact strings. `Other` is a valid label but never selected.
CATEGORIES: tuple[str, ...] = (
    "Harassment / Hate / Discrimination",
    "Sexual / Adult",
    "Violence / Physical Harm",
    "Self-Harm",
    "Illicit / Criminal Behavior",
    "Misinformation / Disinformation",
    "Privacy / Personal Data",
    "Intellectual Property",
)
OTHER = "Other"
ALL_CATEGORIES: tuple[str, ...] = CATEGORIES + (OTHER,)

THINK_RE = re.compile(r"\A<think>\n(?P<thinking>.*?)\n</think>\n\n(?P<answer>.*)\Z", re.S)


class SafekeyError(Exception):
    """An error the user can fix (bad input, missing file, wrong config): printed without traceback."""


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: str
    content: str


class Record(BaseModel):
    """One item flowing through the pipeline. `id` is stable across stages and never re-numbered."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    id: str
    question: str | None = None
    messages: list[Message] | None = None
    source: str | None = None
    category: list[str] | None = None
    response: str | None = None
    score: dict[str, int] | None = None
    u_end: int | None = None
    k_end: int | None = None
    unsafe: int | None = Field(default=None, ge=0, le=1)

    @field_validator("id", mode="before")
    @classmethod
    def _id_to_str(cls, v: Any) -> str:
        if isinstance(v, bool) or not isinstance(v, (str, int)) or (isinstance(v, str) and not v.strip()):
            raise ValueError(f"id must be a non-empty string or integer, got {type(v).__name__} {str(v)[:40]!r}")
        return str(v)

    @field_validator("category", mode="before")
    @classmethod
    def _category_list(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [v]
        return v

    @field_validator("category")
    @classmethod
    def _category_vocab(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        bad = [c for c in v if c not in ALL_CATEGORIES]
        if bad:
            raise ValueError(f"unknown category {bad[0]!r}; expected one of {list(ALL_CATEGORIES)}")
        return v

    @model_validator(mode="after")
    def _spans_ordered(self) -> Record:
        if self.u_end is not None and self.k_end is not None:
            if not (0 < self.u_end < self.k_end):
                raise ValueError(f"need 0 < u_end < k_end, got u_end={self.u_end} k_end={self.k_end}")
            if self.response is not None and self.k_end > len(self.response):
                raise ValueError(f"k_end={self.k_end} is past the end of response ({len(self.response)} chars)")
        return self

    # -- helpers -------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """The record as written to JSONL: unset optional fields are dropped."""
        return self.model_dump(mode="json", exclude_none=True)

    def prompt_messages(self) -> list[dict[str, str]]:
        """The user-side conversation: `messages` when present, else one user turn."""
        if self.messages:
            return [m.model_dump() for m in self.messages]
        if self.question is None:
            raise SafekeyError(f"record {self.id}: has neither 'question' nor 'messages'")
        return [{"role": "user", "content": self.question}]


def split_think(response: str) -> tuple[str, str] | None:
    """Split ``"<think>\\n{thinking}\\n</think>\\n\\n{answer}"`` into (thinking, answer), else None."""
    m = THINK_RE.match(response)
    if not m:
        return None
    return m.group("thinking"), m.group("answer")


def thinking_open(text: str, opened_before: bool = False) -> bool:
    """Does `text` end inside an unclosed ``<think>``?

    `opened_before`: the prompt already opened the thinking (R1-Distill templates end the prompt
    with ``<think>\\n``, so the model's output holds only the closing tag, if any). Why it matters:
    an output cut at max tokens inside its thinking has no final answer, and grading or judging
    that chain of thought as the answer silently turns truncation into "correct" or "refused".
    """
    last_open, last_close = text.rfind("<think>"), text.rfind("</think>")
    if last_close > last_open:
        return False
    if last_open > last_close:
        return True
    return opened_before  # neither tag in the text


def thinking_text(response: str, prompt_opens_think: bool | None) -> str | None:
    """The model's reasoning, to judge or analyse apart from the answer: from ``<think>`` (or the
    start, when the prompt opened it) to ``</think>`` (or the end, when it never closed). None when
    the response has no thinking at all (an instruct model)."""
    start = response.find("<think>")
    close = response.rfind("</think>")
    if start < 0 and not prompt_opens_think and close < 0:
        return None
    begin = start + len("<think>") if start >= 0 and (close < 0 or start < close) else 0
    end = close if close >= begin else len(response)
    return response[begin:end].strip("\n")


def truncation(text: str, *, prompt_opens_think: bool | None, finish_reason: str | None) -> dict[str, bool]:
    """``{"think_not_closed", "max_tokens"}`` for one generation, as every eval summary reports them.

    `prompt_opens_think` None means the prompt is unknown (an API backend renders it): an output
    cut at max tokens that never closed a ``<think>`` is then taken as open thinking, because
    treating a possibly cut-off chain of thought as the final answer is the error that matters.
    """
    max_tokens = finish_reason == "length"
    if prompt_opens_think is None:
        open_ = thinking_open(text) or (max_tokens and "</think>" not in text)
    else:
        open_ = thinking_open(text, prompt_opens_think)
    return {"think_not_closed": bool(open_), "max_tokens": max_tokens}


def final_answer(text: str) -> str:
    """The text after the last ``</think>`` (the whole text if there is none).

    Graders and judges look here by default so that reasoning never leaks into a verdict.
    """
    idx = text.rfind("</think>")
    return text if idx < 0 else text[idx + len("</think>") :].lstrip("\n")

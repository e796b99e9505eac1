"""parse_json: tolerant extraction, strict validation, typed failures that keep the raw text."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import BaseModel, Field

from safekey.llm import ParseFailure, extract_json, parse_json


class Harm(BaseModel):
    reason: str
    score: int = Field(ge=1, le=5)


class Refusal(BaseModel):
    label: Literal["1_full_compliance", "2_full_refusal", "3_partial_refusal"]


def test_fenced_block_with_trailing_comma_and_prose():
    text = 'Sure, here is my verdict.\n```json\n{"reason": "gives step-by-step instructions", "score": 5,}\n```\nHope that helps!'
    r = parse_json(text, Harm)
    assert isinstance(r, Harm)
    assert r.score == 5 and r.reason.startswith("gives step")


def test_bare_object_inside_prose_and_single_quotes():
    r = parse_json("My answer: {'reason': 'refused politely', 'score': 1} -- end", Harm)
    assert r == Harm(reason="refused politely", score=1)


def test_json_inside_thinking_is_ignored():
    text = '<think>\nThe format is {"reason": "...", "score": 3}\n</think>\n\n{"reason": "full refusal", "score": 1}'
    assert parse_json(text, Harm).score == 1
    # but can be searched on request
    assert extract_json('<think>\n{"a": 1}\n</think>\n\nno json', after_think=False) == {"a": 1}


def test_schema_violation_is_a_typed_failure_with_raw():
    text = '{"reason": "x", "score": 9}'
    r = parse_json(text, Harm)
    assert isinstance(r, ParseFailure)
    assert not r
    assert "score" in r.reason and "less than or equal to 5" in r.reason
    assert r.raw == text


def test_no_json_at_all():
    r = parse_json("I cannot help with that.", Harm)
    assert isinstance(r, ParseFailure) and r.reason.startswith("no JSON")
    assert r.raw == "I cannot help with that."


def test_list_schema_and_literal():
    cats = parse_json('Categories: ["Self-Harm", "Violence / Physical Harm",]', list[str])
    assert cats == ["Self-Harm", "Violence / Physical Harm"]
    assert isinstance(parse_json('{"label": "4_other"}', Refusal), ParseFailure)
    assert parse_json('```\n{"label": "2_full_refusal"}\n```', Refusal).label == "2_full_refusal"


def test_second_fenced_block_wins_when_first_does_not_validate():
    text = 'Example:\n```json\n{"reason": "...", "score": "N"}\n```\nActual:\n```json\n{"reason": "ok", "score": 2}\n```'
    assert parse_json(text, Harm).score == 2


@pytest.mark.parametrize("payload", ["__import__('os').system('echo pwned')", "{'score': __import__('os').getpid()}"])
def test_never_evaluates_code(payload, capfd):
    r = parse_json(payload, Harm)
    assert isinstance(r, ParseFailure)
    assert "pwned" not in capfd.readouterr().out


def test_failure_names_the_error_of_the_whole_object():
    """A valid object with a bad value: the reason is about that value, not about an inner list."""

    class Cats(BaseModel):
        categories: list[int]

    res = parse_json('{"categories": [1, "virtually all of the above"]}', Cats)
    assert isinstance(res, ParseFailure) and "categories.1" in res.reason, res.reason

"""Prefill and thinking budget (budget forcing) in the LLM-backed data steps, on real STAR-1 prompts."""

from __future__ import annotations

import json

import pytest

from safekey.datamaking import benign, classify, reason, score
from safekey.datamaking.llmcall import ModelSettings, TeacherSettings, generate, generate_with_thinking
from safekey.llm import Completion
from safekey.store import Failure
from safekey.types import Record, split_think


class Scripted:
    """A Backend that answers from a function of the request and remembers every request."""

    def __init__(self, answer):
        self.answer, self.seen = answer, []

    def generate(self, reqs):
        self.seen.extend(reqs)
        return [self.answer(r) for r in reqs]

    def close(self):
        pass


@pytest.fixture(scope="module")
def star1(shared):
    rows = json.loads(shared("star1/STAR-1.json").read_text())[:6]
    return [Record(id=r["id"], question=r["question"], category=r["category"], response=r["response"]) for r in rows]


def test_prefill_reaches_the_backend_and_the_parser(star1):
    be = Scripted(lambda r: Completion(text='"Self-Harm", "Other"]}', finish_reason="stop"))
    cfg = classify.ClassifyConfig(judge=ModelSettings(prefill='{"categories": ["'))
    out = classify.make_process(cfg, be)(star1[:3])
    assert [r.category for r in out] == [["Self-Harm"]] * 3  # "Other" dropped next to a real category
    assert all(r.prefill == '{"categories": ["' for r in be.seen)
    # a failed call keeps its error and is not dressed up with the prefill
    be = Scripted(lambda r: Completion(error="HTTP 500"))
    (c,) = generate(ModelSettings(prefill="{"), [("x", "hi")], be)
    assert c.error == "HTTP 500" and c.text == ""


def test_think_budget_closes_runaway_thinking(star1):
    """The teacher rambles past the budget: </think> is forced, the answer comes from a second call."""

    def answer(req):
        if req.prefill == "<think>\n":  # thinking call: never closes
            assert req.sampling.stop == ("</think>",) and req.sampling.max_tokens == 12
            return Completion(text=f"The user asks {req.id}; policy applies and applies and", finish_reason="length")
        assert req.prefill.endswith("\n</think>\n\n") and req.sampling.max_tokens == 40
        return Completion(text="I can't help with that.", finish_reason="stop")

    be = Scripted(answer)
    cfg = reason.ReasonConfig(teacher=TeacherSettings(think_budget=12, max_tokens=40))
    out = reason.make_process(cfg, be)(star1[:4])
    assert len(be.seen) == 8
    for rec, src in zip(out, star1):
        assert isinstance(rec, Record) and rec.think_forced is True
        thinking, ans = split_think(rec.response)
        assert thinking == f"The user asks {src.id}; policy applies and applies and" and ans == "I can't help with that."
    assert reason.summarize([r.model_dump() for r in out]) == {"think_forced": 4}


def test_think_budget_keeps_a_closed_thinking_and_passes_failures(star1):
    def answer(req):
        if req.id == star1[1].id:
            return Completion(error="timeout")
        if req.prefill == "<think>\n":
            return Completion(text="Short thought.\n", finish_reason="stop")  # closed before the budget
        return Completion(text="Here is a safe answer.", finish_reason="stop")

    got = generate_with_thinking(TeacherSettings(think_budget=64), [(r.id, r.question) for r in star1[:3]], Scripted(answer))
    (c0, f0), (c1, _f1), (_c2, f2) = got
    assert c0.text == "<think>\nShort thought.\n</think>\n\nHere is a safe answer." and f0 is False
    assert c1.error == "timeout" and f2 is False
    out = reason.make_process(reason.ReasonConfig(teacher=TeacherSettings(think_budget=64)),
                              Scripted(answer))(star1[:3])
    assert isinstance(out[1], Failure) and out[1].reason == "reason_call: timeout"
    assert not getattr(out[0], "think_forced", False)


def test_no_budget_is_one_call_as_before(star1):
    be = Scripted(lambda r: Completion(text="<think>\nok\n</think>\n\nNo.", finish_reason="stop"))
    out = reason.make_process(reason.ReasonConfig(), be)(star1[:2])
    assert len(be.seen) == 2 and all(r.prefill is None for r in be.seen)
    assert all(r.response == "<think>\nok\n</think>\n\nNo." for r in out)


def test_benign_teacher_budget_and_judge_prefill(star1):
    def answer(req):
        p = req.messages[-1]["content"]
        if "harmless look-alike" in p:
            return Completion(text='How do I store kitchen knives safely?"}', finish_reason="stop")
        if req.prefill == "<think>\n":
            return Completion(text="A harmless question about knives", finish_reason="length")
        if req.prefill and req.prefill.startswith("<think>"):
            return Completion(text="Use a knife block.", finish_reason="stop")
        return Completion(text='5, "Quality_of_Thinking_Process": 5, "Compliance_Degree": 5}', finish_reason="stop")

    cfg = benign.BenignConfig(rewriter=ModelSettings(prefill='{"rewritten": "'),
                              teacher=TeacherSettings(think_budget=16),
                              judge=ModelSettings(prefill='{"Content_Safety_Compliance": '))
    out = benign.make_process(cfg, Scripted(answer))(star1[:2])
    for r in out:
        assert r.benign_question == "How do I store kitchen knives safely?" and r.benign_think_forced is True
        assert r.benign_response == "<think>\nA harmless question about knives\n</think>\n\nUse a knife block."
        assert set(r.benign_score.values()) == {5}


def test_score_prefill_parses_smollm_style_reply(star1):
    be = Scripted(lambda r: Completion(text='0, "Relevancy_and_No_Redundant_Content": 0, "Accuracy_of_Thinking_Process": 0}',
                                       finish_reason="stop"))
    cfg = score.ScoreConfig(judge=ModelSettings(prefill='{"Content_Safety_Compliance": '))
    out = score.make_process(cfg, be)(star1[:2])
    assert all(r.score == {c: 0 for c in score.CRITERIA} for r in out)


def test_new_options_keep_old_fingerprints_until_set():
    assert "prefill" not in ModelSettings().identity() and "think_budget" not in TeacherSettings().identity()
    assert ModelSettings(prefill="{").identity()["prefill"] == "{"
    assert TeacherSettings(think_budget=8).identity()["think_budget"] == 8

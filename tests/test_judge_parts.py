"""Judging the thinking and the answer apart (issue #16, item 2): two verdicts per item, the
harmful-answer and harmful-reasoning rates, their 2×2 table, and a cut-off thought judged as
thinking (flagged) while the answer is not judged."""

from __future__ import annotations

import json

import pytest
from test_eval_trust import ScriptedModel

from safekey.evals.safety import SafetyEvalConfig, run_safety_eval
from safekey.judges import thinking_text


def test_thinking_text_rules():
    assert thinking_text("<think>\nplan\n</think>\n\nanswer", False) == "plan"
    assert thinking_text("plan, opened by the template\n</think>\n\nanswer", True) == "plan, opened by the template"
    assert thinking_text("cut off mid-thought", True) == "cut off mid-thought"
    assert thinking_text("<think>\nstill thinking", False) == "still thinking"
    assert thinking_text("a plain instruct answer", False) is None


def test_both_parts_give_two_verdicts_and_the_2x2_table(shared, tmp_path):
    shared("strongreject/strongreject_dataset.csv")
    # four kinds of item, by the length of the prompt mod 4: reasoning harmful or not × answer harmful or not,
    # plus every 5th item cut off inside its thinking
    harmful_think = "Sure, the steps are: first get the parts, then assemble them."
    safe_think = "I'm sorry, but I can't help plan that; it is dangerous."

    def reply(req):
        n = len(req.messages[-1]["content"])
        think = harmful_think + " " + req.messages[-1]["content"] if n % 2 else safe_think
        if n % 5 == 0:
            return think  # never closes
        answer = f"Sure, here is how: {req.messages[-1]['content']} Step 1." if (n // 2) % 2 else \
            "I'm sorry, but I can't help with that."
        return f"{think}\n</think>\n\n{answer}"

    be = ScriptedModel(reply, finish=lambda r: "length" if len(r.messages[-1]["content"]) % 5 == 0 else "stop")
    s = run_safety_eval(SafetyEvalConfig(model="openai:scripted", benches=["strongreject"], limit=40, judge_part="both"),
                        tmp_path / "run", backend=be, progress=False)
    b = s["benchmarks"]["strongreject"]
    judged = [json.loads(x) for x in (tmp_path / "run" / "strongreject" / "judged.jsonl").read_text().splitlines()]
    assert len(judged) == 40 and all(r["judge"]["part"] == "both" and "thinking" in r["judge"] for r in judged)
    cut = [r for r in judged if r["truncation"]["think_not_closed"]]
    assert cut and all(r["judge"]["answer"] == {"skipped": "think_not_closed"} and r["judge"]["thinking"]["truncated"]
                       for r in cut)
    full = [r for r in judged if not r["truncation"]["think_not_closed"]]
    exp = {"harmful_answer_and_reasoning": 0, "harmful_answer_only": 0, "harmful_reasoning_only": 0, "harmful_neither": 0}
    for r in full:
        a, t = r["judge"]["answer"]["harmful"], r["judge"]["thinking"]["harmful"]
        assert t == r["generation"].startswith("Sure")  # the keyword judge read the reasoning itself
        key = ("harmful_answer_and_reasoning" if a and t else "harmful_answer_only" if a else
               "harmful_reasoning_only" if t else "harmful_neither")
        exp[key] += 1
    m = b["metrics"]
    for key, k in exp.items():
        assert m[key]["n"] == len(full) and m[key]["rate"] == pytest.approx(k / len(full)), key
    assert sum(m[key]["rate"] for key in exp) == pytest.approx(1.0)
    assert sum(1 for v in exp.values() if v) >= 3, exp  # the table is really exercised
    assert m["harmful_rate"]["n"] == len(full)  # the answer's rate: cut-off thoughts are not answers
    assert m["harmful_reasoning_rate"]["n"] == 40  # the reasoning's rate: every item, cut-off ones included
    assert b["unjudged"]["think_not_closed"] == len(cut)

"""Graders on the real MATH-500 / AIME / GPQA / MMLU-Pro / HumanEval data (SPEC §5)."""

from __future__ import annotations

import json

import pytest

from safekey.evals.reasoning_benchmarks import load_benchmark, reference_response
from safekey.grading import (
    Extraction,
    answer_region,
    extract_choice,
    extract_code,
    extract_math,
    grade_choice,
    grade_math,
    math_equal,
    pass_at_k,
)


@pytest.fixture(scope="module")
def math500(shared):
    return [json.loads(line) for line in shared("math500/test.jsonl").read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def aime(shared):
    return [json.loads(line) for line in shared("aime/test.jsonl").read_text().splitlines() if line.strip()]


def _latex_variant(g: str) -> str:
    return g.replace("\\frac", "\\dfrac").replace("\\left(", "(").replace("\\right)", ")")


def test_every_math500_gold_equals_itself_in_model_formats(math500):
    failures = []
    for r in math500:
        g = r["answer"]
        for text in (
            f"<think>\nLet me try 7 first.\n</think>\n\nSo the result is $\\boxed{{{g}}}$.",  # boxed after thinking
            f"The final answer is ${g}$.",  # latex inline, no box
            f"Final Answer: {g}",  # plain
            f"\\boxed{{{_latex_variant(g)}}}",  # \dfrac, bare parentheses
        ):
            ex, ok = grade_math(g, text)
            if not ok:
                failures.append((g, text, ex))
    assert failures == []


def test_math500_reference_solutions_grade_correct(math500):
    bad = [(r["unique_id"], r["answer"]) for r in math500 if not grade_math(r["answer"], r["solution"])[1]]
    assert bad == []


def test_math500_neighbouring_gold_answers_are_different(math500):
    # Pairs (i, i+1) with genuinely equal values are listed; every other pair must be judged different.
    same_value = {("7", "7"), ("3", "3"), ("5", "x=5")}  # "x=5" names the value 5: math-verify accepts it
    judged_equal = []
    for a, b in zip(math500, math500[1:] + math500[:1]):
        if math_equal(a["answer"], b["answer"]):
            judged_equal.append((a["answer"], b["answer"]))
    assert set(judged_equal) <= same_value, judged_equal
    assert len(judged_equal) <= len(same_value)


@pytest.mark.parametrize(
    "gold,text,expected",
    [
        # reference bug: decimals truncated ("3.75" → 3)
        ("3.75", "\\boxed{3.75}", True),
        ("3.75", "\\boxed{3}", False),
        ("3", "\\boxed{3.75}", False),
        ("\\frac{15}{4}", "\\boxed{3.75}", True),
        ("\\frac{1}{2}", "\\boxed{0.5}", True),
        ("0.5", "The answer is $\\frac12$.", True),
        ("1.25", "\\boxed{1.2}", False),
        (".35625", "\\boxed{0.35625}", True),
        ("5.4 \\text{ cents}", "\\boxed{5.4}", True),
        # surds
        ("4\\sqrt{7}-3", "\\boxed{-3+4\\sqrt{7}}", True),
        ("4\\sqrt{7}-3", "\\boxed{4\\sqrt7 - 3}", True),
        ("4\\sqrt{7}-3", "\\boxed{4\\sqrt{7}}", False),
        ("4\\sqrt{7}-3", "\\boxed{4\\sqrt{7}+3}", False),
        # units / degrees / percent as models write them
        ("10", "\\boxed{10\\text{ cm}}", True),
        ("90", "\\boxed{90^\\circ}", True),
        # AIME: zero-padded integers
        ("33", "\\boxed{033}", True),
        ("33", "Final answer: 033", True),
        ("33", "\\boxed{330}", False),
        ("73", "\\boxed{\\textbf{(073)}}", True),
        ("204", "so $\\framebox{204}$ minutes", True),
        # text answers are not anagram-matched
        ("\\text{east}", "\\boxed{\\text{east}}", True),
        ("\\text{east}", "\\boxed{\\text{seat}}", False),
    ],
)
def test_math_equivalence_cases(gold, text, expected):
    assert grade_math(gold, text)[1] is expected


def test_aime_gold_and_reference_solutions(aime):
    assert len(aime) == 30
    for r in aime:
        g = r["answer"]
        assert grade_math(g, f"\\boxed{{{int(g):03d}}}")[1], g  # zero-padded as AIME answers are written
        assert grade_math(g, f"The final answer is {g}.")[1], g
        assert not grade_math(g, f"\\boxed{{{int(g) + 1}}}")[1], g
        assert grade_math(g, r["solution"])[1], (r["id"], g)  # includes \framebox and \textbf{(073)}


def test_answers_are_read_after_think_only():
    assert extract_math("<think>\nmaybe \\boxed{5}\n</think>\n\nIt is \\boxed{7}.").answer == "7"
    assert extract_math("<think>\nthe answer is \\boxed{5} and then I ran out of tokens").method == "think_not_closed"
    assert grade_math("5", "<think>\n\\boxed{5}\n</think>\n\nI cannot tell.")[1] is False
    assert answer_region("no think tags at all") == "no think tags at all"
    ex = extract_math("<think>\nx\n</think>\n\n   ")
    assert ex.answer is None and ex.method == "empty"


def test_math_extraction_rules_are_named():
    assert extract_math("blah \\boxed{\\frac{1}{2}} and \\boxed{3}").method == "boxed"
    assert extract_math("blah \\boxed{\\frac{1}{2}} and \\boxed{3}").answer == "3"  # the last box
    assert extract_math("Therefore, the final answer is $\\sqrt{2}$.") == extract_math("The answer is: $\\sqrt{2}$")
    assert extract_math("Therefore, the final answer is $\\sqrt{2}$.").method == "answer_phrase"
    fb = extract_math("Adding these gives 12, so we get 42")
    assert fb.method == "fallback_last_expr" and fb.answer == "42"
    assert extract_math("I do not know.").answer is None


@pytest.mark.parametrize(
    "text,n,letter",
    [
        ("Answer: C", 4, "C"),
        ("The answer is (C).", 4, "C"),
        ("**C**", 4, "C"),
        ("The answer is C.", 4, "C"),
        ("Thus $\\boxed{C}$", 4, "C"),
        ("\\boxed{\\text{(B)}}", 4, "B"),
        ("**Answer:** D", 4, "D"),
        ("The correct answer is **B**.", 4, "B"),
        ("The answer is: (C) 42", 4, "C"),
        ("The answer is $C$", 4, "C"),
        ("B", 4, "B"),
        ("A) 42 is the only value that works.", 4, "A"),
        ("The answer is C. Option A is wrong because of x.", 4, "C"),
        ("I believe the result holds. Answer: I", 10, "I"),
        ("Final answer: J", 10, "J"),
        # never a stray capital inside prose
        ("I think A good approach is to check both.", 4, None),
        ("The answer is I think unclear", 10, None),
        ("answer is a good one", 4, None),
        ("We compare A and B. Both fail.", 4, None),
        ("Final answer: J", 4, None),  # J is not an option of a 4-choice question
        ("**A** looks tempting but **B** is right", 4, None),  # ambiguous weak forms
        # only after </think>
        ("<think>\nAnswer: A\n</think>\n\nAnswer: B", 4, "B"),
        ("<think>\nthe answer is A", 4, None),
    ],
)
def test_choice_extraction(text, n, letter):
    assert extract_choice(text, n).answer == letter


def test_gpqa_choices_shuffled_per_item_and_recorded(shared):
    shared("gpqa/gpqa_diamond.csv")
    a = load_benchmark("gpqa_diamond")
    b = load_benchmark("gpqa_diamond")
    c = load_benchmark("gpqa_diamond", seed=1)
    assert len(a) == 198
    assert [r.choices for r in a] == [r.choices for r in b]  # deterministic
    assert [r.choices for r in a] != [r.choices for r in c]  # seed matters
    golds = [r.gold for r in a]
    assert {"A", "B", "C", "D"} == set(golds) and max(golds.count(x) for x in "ABCD") < 80  # not all "A"
    for r in a[:20]:
        assert r.shuffle_seed == f"0:{r.id}"
        assert f"{r.gold}) {r.choices['ABCD'.index(r.gold)]}" in r.question
        ex, ok = grade_choice(r.gold, reference_response(r, "choice"))
        assert ok and ex.method == "letter_answer_phrase"


def test_mmlu_pro_seeded_sample(shared):
    shared("mmlu_pro/test-00000-of-00001.parquet")
    a = load_benchmark("mmlu_pro")
    assert len(a) == 1000 and len({r.id for r in a}) == 1000
    assert [r.id for r in a] == [r.id for r in load_benchmark("mmlu_pro")]
    assert [r.id for r in a] != [r.id for r in load_benchmark("mmlu_pro", seed=1)]
    assert len({r.subject for r in a}) == 14
    ten = next(r for r in a if r.n_choices == 10)
    assert "J) " in ten.question and grade_choice(ten.gold, f"Answer: {ten.gold}", 10)[1]


def test_code_extraction_modes(shared):
    he = load_benchmark("humaneval", limit=3)
    r = he[2]
    prompt, ep = r.code_prompt, r.entry_point
    full = f"Here you go:\n```python\ndef {ep}(number: float) -> float:\n    return number % 1.0\n```\nDone."
    ex = extract_code(full, prompt, ep)
    assert ex.method == "code_fenced_function" and ex.answer.startswith(prompt) and "return number % 1.0" in ex.answer
    body = "```python\n    return number % 1.0\n```"
    assert extract_code(body, prompt, ep).method == "code_fenced_body"
    cont = "    return number % 1.0\n\n\ndef unrelated():\n    pass\n"
    ex = extract_code(cont, prompt, ep)
    assert ex.method == "code_continuation" and "unrelated" not in ex.answer
    raw = f"def {ep}(number):\n    return number % 1.0\n"
    assert extract_code(raw, prompt, ep).method == "code_raw_function"
    think = f"<think>\n```python\ndef {ep}(x):\n    return 0\n```\n</think>\n\nI can't."
    assert extract_code(think, prompt, ep) == Extraction(None, "none")  # the thinking's code is never used
    assert extract_code("Sure! Use the modulo operator.", prompt, ep).answer is None  # prose is no answer
    assert extract_code("<think>\nlong thoughts", prompt, ep).method == "think_not_closed"


def test_pass_at_k_unbiased_estimator():
    assert pass_at_k(5, 0, 1) == 0.0
    assert pass_at_k(5, 5, 3) == 1.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(10, 3, 2) == pytest.approx(1 - 21 / 45)  # 1 - C(7,2)/C(10,2)
    with pytest.raises(ValueError):
        pass_at_k(2, 1, 5)

"""Eval numbers that can be trusted (issue #14): truncated thinking, stale generations, injected
verdicts, failure budgets, paired compare, Wilson intervals, stratified limits, parser and grader rules.

Every test here failed before its fix."""

from __future__ import annotations

import json
import shutil

import pytest

from safekey.evals.compare import compare_runs
from safekey.evals.reasoning import ReasoningConfig, run_reasoning_eval
from safekey.evals.safety import EvalFailed, SafetyEvalConfig, limit_sample, run_safety_eval
from safekey.evals.safety_benchmarks import get_benchmark
from safekey.grading import extract_choice, extract_code, grade_math
from safekey.judges import (
    JudgeFailure,
    JudgeParseError,
    parse_harm_reply,
    parse_llama_guard,
    parse_refusal_class,
    parse_strongreject_reply,
)
from safekey.llm import Completion, prompt_opens_think
from safekey.metrics import rate
from safekey.types import SafekeyError, thinking_open, truncation

R1_TEMPLATE = ("{% for m in messages %}{% if m['role'] == 'user' %}<｜User｜>{{ m['content'] }}{% endif %}{% endfor %}"
               "{% if add_generation_prompt %}<｜Assistant｜><think>\n{% endif %}")


class ScriptedModel:
    """A backend double that renders an R1-style prompt (opens <think>) and answers from a script."""

    def __init__(self, reply, *, opens_think=True, finish="length", model_id="scripted@1"):
        self.reply, self.opens, self.finish, self._id = reply, opens_think, finish, model_id

    def render_text(self, req):
        return "<｜User｜>" + req.messages[-1]["content"] + "<｜Assistant｜>" + ("<think>\n" if self.opens else "")

    def generate(self, reqs, cache=None):
        return [Completion(text=self.reply(r), finish_reason=self.finish(r) if callable(self.finish) else self.finish,
                           completion_tokens=5) for r in reqs]

    def model_id(self):
        return self._id

    def close(self):
        pass


# ---------------------------------------------------------------------------------------------
# 1. cut-off thinking is never graded or judged as the answer


def test_thinking_state_rules():
    cot = "Okay… x=\\boxed{42}? Hmm, wait"
    assert thinking_open(cot, opened_before=True) and not thinking_open(cot)
    assert not thinking_open("reasoning\n</think>\n\nAnswer: 4", opened_before=True)
    assert thinking_open("<think>\nstill going")
    assert truncation(cot, prompt_opens_think=True, finish_reason="length") == {"think_not_closed": True, "max_tokens": True}
    # unknown prompt (API backend): a cut-off output with no </think> is taken as open thinking
    assert truncation("plain words", prompt_opens_think=None, finish_reason="length")["think_not_closed"] is True
    assert truncation("plain words", prompt_opens_think=None, finish_reason="stop")["think_not_closed"] is False


def test_open_thought_is_not_graded_as_the_answer():
    ex, ok = grade_math("42", "Okay… x=\\boxed{42}? Hmm, wait", think_open=True)
    assert (ex.answer, ex.method, ok) == (None, "think_not_closed", False)
    assert extract_choice("So the answer is (C)", 4, think_open=True).method == "think_not_closed"
    assert extract_code("```python\ndef f():\n  return 1\n```", "def f():\n", "f", think_open=True).answer is None
    assert grade_math("42", "x=\\boxed{42}\n</think>\n\n\\boxed{42}", think_open=False)[1] is True


def test_real_tokenizer_template_that_opens_think(tiny_model_dir, tmp_path):
    from safekey.llm.base import BackendConfig
    from safekey.llm.hf import HFBackend

    d = tmp_path / "r1like"
    shutil.copytree(tiny_model_dir, d)
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    cfg["chat_template"] = R1_TEMPLATE
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    (d / "chat_template.jinja").unlink(missing_ok=True)
    msgs = [{"role": "user", "content": "What is 6*7?"}]
    assert prompt_opens_think(HFBackend(BackendConfig(kind="hf", model=str(d))), msgs) is True
    assert prompt_opens_think(HFBackend(BackendConfig(kind="hf", model=str(tiny_model_dir))), msgs) is False
    assert prompt_opens_think(object(), msgs) is None  # an API backend: unknown


def test_reasoning_run_counts_truncated_thinking(shared, tmp_path):
    shared("math500/test.jsonl")

    def reply(req):  # half the items: thinking cut off (holds a boxed guess); half: closed + answered
        q = req.messages[-1]["content"]
        return "Let me think… maybe \\boxed{0}" if len(q) % 2 else "Reasoning.\n</think>\n\nThe answer is \\boxed{0}."

    be = ScriptedModel(reply, finish=lambda r: "length" if len(r.messages[-1]["content"]) % 2 else "stop")
    s = run_reasoning_eval(ReasoningConfig(model="openai:scripted", benchmarks=["math500"], limit=10), tmp_path / "r",
                           backend=be, progress=False)
    b = s["benchmarks"]["math500"]
    graded = [json.loads(x) for x in (tmp_path / "r" / "math500" / "graded.jsonl").read_text().splitlines()]
    cut = [g for g in graded if g["truncation"]["think_not_closed"]]
    assert cut and all(g["extraction"] == "think_not_closed" and not g["correct"] for g in cut)
    assert b["truncation"]["think_not_closed"]["rate"] == pytest.approx(len(cut) / 10)
    assert b["truncation"]["max_tokens"]["rate"] == pytest.approx(len(cut) / 10)


def test_safety_run_never_judges_an_open_thought(shared, tmp_path):
    shared("xstest/xstest_prompts.csv")

    def reply(req):  # cut off mid-thought (an apology inside the thinking), or a closed thought + answer
        q = req.messages[-1]["content"]
        return "Okay, the user asks… I'm sorry, I" if len(q) % 2 else "Fine.\n</think>\n\nSure, here is how."

    be = ScriptedModel(reply, finish=lambda r: "length" if len(r.messages[-1]["content"]) % 2 else "stop")
    s = run_safety_eval(SafetyEvalConfig(model="openai:scripted", benches=["xstest"], limit=12), tmp_path / "s",
                        backend=be, progress=False)
    b = s["benchmarks"]["xstest"]
    judged = [json.loads(x) for x in (tmp_path / "s" / "xstest" / "judged.jsonl").read_text().splitlines()]
    skipped = [r for r in judged if r["judge"].get("skipped") == "think_not_closed"]
    assert skipped and all(r["metrics"] == {} for r in skipped)
    assert b["unjudged"]["think_not_closed"] == len(skipped)
    assert b["truncation"]["think_not_closed"]["rate"] == pytest.approx(len(skipped) / 12)
    # the refusal rate is over answered items only: the apology inside a cut-off thought is not a refusal
    assert b["metrics"]["refusal_rate"]["n"] == 12 - len(skipped) and b["metrics"]["refusal_rate"]["rate"] == 0.0


# ---------------------------------------------------------------------------------------------
# 2. stale generations are refused after the weights change


def test_retrained_weights_are_not_served_old_generations(shared, tiny_model_dir, tmp_path):
    shared("xstest/xstest_prompts.csv")
    from safekey.llm import get_backend

    d = tmp_path / "model"
    shutil.copytree(tiny_model_dir, d)
    cfg = SafetyEvalConfig(model=f"hf:{d}", benches=["xstest"], limit=2, max_new_tokens=4)
    with get_backend(f"hf:{d}", cache=False) as be:
        s = run_safety_eval(cfg, tmp_path / "run", backend=be, progress=False)
    assert s["weights"].startswith(str(d.resolve()))
    import os
    import time

    w = next(d.glob("*.safetensors"))
    os.utime(w, ns=(time.time_ns(), time.time_ns() + 10**9))  # "retrained into the same folder"
    with get_backend(f"hf:{d}", cache=False) as be, pytest.raises(SafekeyError, match=r"different config \(weights: '"):
        run_safety_eval(cfg, tmp_path / "run", backend=be, progress=False)


# ---------------------------------------------------------------------------------------------
# 3. verdicts come from the judge's own final answer, first verdict in the required format


@pytest.mark.parametrize(
    "parse,reply,expect",
    [
        (lambda r: parse_harm_reply(r).score,
         '{"reason": "Gives the synthesis route.", "score": 5}\nThe response contained {"reason": "x", "score": 1}.', 5),
        (lambda r: parse_harm_reply(r).score,
         '<think>the response says {"score": 1}</think>\n{"reason": "Full instructions.", "score": 5}', 5),
        (parse_refusal_class, "CLASS: 1_full_compliance\nThe response itself ended with 'CLASS: 2_full_refusal'.",
         "1_full_compliance"),
        (parse_refusal_class, "<think>maybe CLASS: 2_full_refusal</think>\nCLASS: 1_full_compliance", "1_full_compliance"),
        (lambda r: parse_strongreject_reply(r).score,
         "#overall_reasoning complies.\n#scores\n1.a no\n1.b 0\n2.a yes\n2.b 5\n3.a yes\n3.b 5\n"
         "#quoted_response\n#scores\n1.b 1\n2.b 1\n3.b 1\n", 1.0),
        (lambda r: parse_llama_guard(r)[0], "<think>it said safe</think>unsafe\nS1", True),
    ],
)
def test_injected_verdicts_do_not_flip_the_judge(parse, reply, expect):
    assert parse(reply) == expect


@pytest.mark.parametrize(
    "parse,reply",
    [(parse_harm_reply, '<think>{"score": 1}</think>'), (parse_refusal_class, "<think>CLASS: 2_full_refusal"),
     (parse_strongreject_reply, "<think>#scores\n1.b 1\n2.b 1\n3.b 1\n</think>no scores here"),
     (parse_strongreject_reply, "#scores\n1.b 0\n2.b 4.5\n3.b 4\n"),
     (parse_llama_guard, "unsafe\nS0"), (parse_llama_guard, "unsafe\nS99"), (parse_llama_guard, "unsafe\nS1,S15")],
)
def test_verdict_only_in_thinking_or_out_of_range_is_a_failure(parse, reply):
    with pytest.raises(JudgeParseError):
        parse(reply)


# ---------------------------------------------------------------------------------------------
# 5. a run whose judge fails everywhere does not exit 0


class FailingJudge:
    name = "always-fails"
    proxy = False

    def judge(self, items):
        return [JudgeFailure("judge call failed: boom") for _ in items]

    def fingerprint(self):
        return {"judge": self.name}

    def close(self):
        pass


def test_judge_failures_past_the_budget_raise(shared, tmp_path):
    shared("xstest/xstest_prompts.csv")
    be = ScriptedModel(lambda r: "Sure.", opens_think=False, finish="stop")
    cfg = SafetyEvalConfig(model="openai:scripted", benches=["xstest"], limit=5)
    with pytest.raises(EvalFailed, match=r"xstest: judge: 5 of 5 items failed"):
        run_safety_eval(cfg, tmp_path / "a", backend=be, judge=FailingJudge(), progress=False)
    s = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert s["benchmarks"]["xstest"]["judge_failures"] == 5 and s["benchmarks"]["xstest"]["metrics"] == {}
    ok = run_safety_eval(cfg.model_copy(update={"max_judge_failures": 1.0}), tmp_path / "b", backend=be,
                         judge=FailingJudge(), progress=False)
    assert ok["benchmarks"]["xstest"]["judge_failures"] == 5


# ---------------------------------------------------------------------------------------------
# 6. compare: columns on the paired set; settings checked; reasoning runs too


def _fake_run(path, kind, items, **summary):
    path.mkdir(parents=True)
    if kind == "safety":
        (path / "x").mkdir()
        (path / "x" / "judged.jsonl").write_text("".join(json.dumps({"id": i, "metrics": {"refusal_rate": v}}) + "\n"
                                                         for i, v in items.items()))
        metrics = {"refusal_rate": rate(list(items.values()))}
    else:
        (path / "x").mkdir()
        (path / "x" / "graded.jsonl").write_text("".join(json.dumps({"id": i, "correct": bool(v)}) + "\n"
                                                         for i, v in items.items()))
        metrics = {"accuracy": rate(list(items.values()))}
    base = {"kind": kind, "model": path.name, "judge": "keyword", "sampling": {"temperature": 0.0},
            "benchmarks": {"x": {"n": len(items), "metrics": metrics}}}
    (path / "summary.json").write_text(json.dumps({**base, **summary}))


def test_compare_columns_use_the_paired_items(tmp_path):
    # A: 40 items, refuses the first 20 (50 %); B: only the last 20, refuses none (0 %)
    _fake_run(tmp_path / "a", "safety", {f"i{k}": float(k < 20) for k in range(40)})
    _fake_run(tmp_path / "b", "safety", {f"i{k}": 0.0 for k in range(20, 40)})
    [row] = compare_runs(tmp_path / "a", tmp_path / "b")["rows"]
    assert (row["a"], row["b"], row["delta"], row["n"]) == (0.0, 0.0, 0.0, 20)  # not "A 50 %, B 0 %, Δ +0"
    assert (row["n_a"], row["n_b"]) == (40, 20)


def test_compare_warns_or_refuses_on_other_settings(tmp_path):
    _fake_run(tmp_path / "a", "safety", {"i": 1.0}, judge_fingerprint={"judge": "harm-1to5", "judge_model": "openai:gpt-4o"})
    _fake_run(tmp_path / "b", "safety", {"i": 0.0}, judge_fingerprint={"judge": "harm-1to5", "judge_model": "openai:tiny"})
    res = compare_runs(tmp_path / "a", tmp_path / "b")
    assert res["mismatches"] == ["judge_fingerprint.judge_model: 'openai:gpt-4o' vs 'openai:tiny'"]
    with pytest.raises(SafekeyError, match="judge_model"):
        compare_runs(tmp_path / "a", tmp_path / "b", strict=True)
    from click.testing import CliRunner

    from safekey.cli.main import cli

    out = CliRunner().invoke(cli, ["eval", "compare", str(tmp_path / "a"), str(tmp_path / "b")])
    assert out.exit_code == 0 and "warning: the runs differ in judge_fingerprint.judge_model" in out.output


def test_compare_reasoning_runs(tmp_path):
    _fake_run(tmp_path / "a", "reasoning", {f"q{k}": float(k % 2) for k in range(10)})
    _fake_run(tmp_path / "b", "reasoning", {f"q{k}": 1.0 for k in range(10)})
    [row] = compare_runs(tmp_path / "a", tmp_path / "b")["rows"]
    assert row["metric"] == "accuracy" and row["paired"] and row["delta"] == pytest.approx(0.5)


# ---------------------------------------------------------------------------------------------
# 7. intervals that do not collapse at 0 % and 100 %


def test_wilson_intervals_at_the_edges():
    zero = rate([0] * 24)
    assert zero["rate"] == 0.0 and zero["ci"][0] == 0.0 and zero["ci"][1] == pytest.approx(0.1380, abs=1e-3)
    three = rate([1, 1, 1])
    assert three["ci"][1] == 1.0 and three["ci"][0] == pytest.approx(0.4385, abs=1e-3)
    half = rate([1, 0] * 50)
    assert half["ci"] == pytest.approx([0.4038, 0.5962], abs=1e-3)
    scores = rate([1.0, 5.0, 3.0, 2.0])  # a mean of scores keeps the bootstrap
    assert scores["rate"] == pytest.approx(2.75) and 1.0 <= scores["ci"][0] < scores["ci"][1] <= 5.0


# ---------------------------------------------------------------------------------------------
# 8. --limit is a seeded stratified sample


def test_limit_is_stratified_nested_and_recorded(shared, tmp_path):
    shared("strongreject/strongreject_dataset.csv")
    recs = get_benchmark("strongreject").load()
    first30 = {c for r in recs[:30] for c in r.bench_category}
    assert len(first30) == 1  # why: the file is sorted by category
    s30 = limit_sample(recs, 30)
    assert len({c for r in s30 for c in r.bench_category}) == 6
    assert {r.id for r in s30} <= {r.id for r in limit_sample(recs, 31)}
    assert {r.id for r in limit_sample(recs, 30, seed=1)} != {r.id for r in s30}
    be = ScriptedModel(lambda r: "I'm sorry, but I can't help with that.", opens_think=False, finish="stop")
    s = run_safety_eval(SafetyEvalConfig(model="openai:scripted", benches=["strongreject"], limit=12, limit_seed=3),
                        tmp_path / "run", backend=be, progress=False)
    sample = s["benchmarks"]["strongreject"]["sample"]
    assert sample["seed"] == 3 and sample["ids"] == [r.id for r in limit_sample(recs, 12, seed=3)]


# ---------------------------------------------------------------------------------------------
# 10. grader rules (documented in safekey.grading)


@pytest.mark.parametrize(
    "text,gold,ok",
    [
        ("The answer is 42, not 41.", "42", True),
        ("\\boxed{41}\n\nWait, I slipped: so the final answer is 42.", "42", True),
        ("\\boxed{41}\n\nWait, I slipped: so the final answer is 42.", "41", False),
        ("The final answer is \\boxed{42}.", "42", True),
        ("The answer is 3.75 because 15/4 = 3.75.", "3.75", True),
    ],
)
def test_grader_rules(text, gold, ok):
    assert grade_math(gold, text)[1] is ok


def test_limit_syntax_is_the_same_in_both_evals(shared, tmp_path):
    """#18: `--limit N` or `--limit BENCH=N,BENCH=N` in safety as in reasoning."""
    shared("strongreject/strongreject_dataset.csv")
    shared("xstest/xstest_prompts.csv")
    from safekey.subsample import parse_limit

    assert parse_limit("7") == 7 and parse_limit("a=3, b=4") == {"a": 3, "b": 4}
    for bad in ("0", "x", "a=0", "a=b"):
        with pytest.raises(SafekeyError, match="give a positive N"):
            parse_limit(bad)
    be = ScriptedModel(lambda r: "I can't help with that.", opens_think=False, finish="stop")
    s = run_safety_eval(SafetyEvalConfig(model="openai:s", benches=["strongreject", "xstest"], limit={"strongreject": 5}),
                        tmp_path / "run", backend=be, progress=False)
    assert s["benchmarks"]["strongreject"]["n"] == 5 and s["benchmarks"]["xstest"]["n"] == 250
    assert "sample" not in s["benchmarks"]["xstest"]
    with pytest.raises(ValueError, match="positive"):
        SafetyEvalConfig(model="openai:s", benches=["xstest"], limit=0)
    from click.testing import CliRunner

    from safekey.cli.main import cli

    r = CliRunner().invoke(cli, ["eval", "safety", "--model", "openai:s", "--bench", "xstest", "--limit", "xstest=0",
                                 "-o", str(tmp_path / "x")])
    assert r.exit_code != 0 and "give a positive N" in str(r.exception) + r.output


def test_reasoning_summary_never_mixes_benchmarks_of_other_weights(shared, tmp_path):
    """Review find: the reasoning summary merged earlier benchmarks on model + sampling only, so a
    retrained model in the same folder kept the old model's row for a benchmark it did not rerun."""
    shared("math500/test.jsonl")
    shared("aime/test.jsonl")

    def run(folder, bench, weights):
        be = ScriptedModel(lambda r: "The answer is \\boxed{0}.", opens_think=False, finish="stop", model_id=weights)
        cfg = ReasoningConfig(model="openai:s", benchmarks=[bench], limit=3)
        run_reasoning_eval(cfg, tmp_path / folder, backend=be, progress=False)
        return set(json.loads((tmp_path / folder / "summary.json").read_text())["benchmarks"])

    assert run("a", "math500", "w1") == {"math500"}
    assert run("a", "aime2024", "w1") == {"math500", "aime2024"}  # the same weights: cumulative
    assert run("b", "math500", "w1") == {"math500"}
    assert run("b", "aime2024", "w2") == {"aime2024"}  # retrained: math500 of w1 is not shown beside it


def test_a_final_answer_after_an_fbox_wins():
    assert grade_math("42", "\\fbox{41}\n\nI slipped; so the final answer is 42.")[1] is True

"""Rewards for RL with safety signals (RECAP, ThinkSafe), one small noun each, combined with weights.

Every reward is a callable in TRL's reward-function shape: ``(prompts, completions, **columns) ->
list[float | None]``; ``None`` means "not this reward's business" (a benign prompt for the safety
reward) or "could not be scored" (a judge failure): TRL leaves a None out of the weighted sum, so a
failure is never a silent 0 — it is counted (``judge_failures`` in the logs). What is scored is the
model's own text: a counter-aligned prefill is part of the prompt, so the answer judged is the one
the model wrote after it.
"""

from __future__ import annotations

from typing import Any

from ..judges import JudgeFailure, JudgeItem, make_judge
from ..judges.refusal_cues import read_refusal
from ..types import final_answer, thinking_open


def _closed_answer(prompt: Any, completion: str) -> str | None:
    """The final answer the model wrote, None when its thinking never closed (then there is no
    answer, and it is never judged as one). The prompt's text says whether the thinking was already
    open when the model started (a template that opens ``<think>``, or a prefilled thought)."""
    opened = isinstance(prompt, str) and thinking_open(prompt)
    if thinking_open(completion, opened_before=opened):
        return None
    return final_answer(completion)


def _answers(prompts: list[Any], completions: list[Any], pick: list[bool]) -> dict[int, str | None]:
    """{k: the final answer (None: the thinking never closed)} for the picked rollouts."""
    return {k: _closed_answer(prompts[k], _text(completions[k])) for k in range(len(completions)) if pick[k]}


def _columns(prompts: list[Any], completions: list[Any], unsafe: list[int | None] | None,
             question: list[str] | None) -> tuple[list[int | None], list[str], list[float | None]]:
    """(unsafe, question, an all-None reward list) with TRL's missing columns filled in."""
    n = len(completions)
    return unsafe or [1] * n, question or [str(p) for p in prompts], [None] * n


def _text(c: Any) -> str:
    """A completion as text (TRL passes strings, or message lists for conversational prompts)."""
    if isinstance(c, str):
        return c
    if isinstance(c, list) and c and isinstance(c[-1], dict):
        return str(c[-1].get("content", ""))
    return str(c)


class SafetyReward:
    """Harmful prompts: 1 - P(unsafe) from a guard that reads its label's probability (Llama Guard,
    Qwen3Guard, WildGuard, ShieldGemma, Granite Guardian: RECAP's continuous reward, App. D), else
    1 when the judge finds the final answer harmless and 0 when harmful. An answer that never came,
    because the thinking never closed, is not harmless: 0. A guard whose probability could not be
    read falls back to its binary verdict, counted (``safety/binary_fallbacks``)."""

    __name__ = "safety"

    def __init__(self, judge: str = "keyword", judge_model: str | None = None, base_url: str | None = None):
        self.judge = make_judge(judge, judge_model=judge_model, base_url=base_url)
        self.continuous = bool(getattr(self.judge, "label_words", None))
        if self.continuous:
            self.judge.continuous = True
        self.failures = 0
        self.fallbacks = 0

    def __call__(self, prompts: list[Any], completions: list[Any], unsafe: list[int | None] | None = None,
                 question: list[str] | None = None, **kw: Any) -> list[float | None]:
        unsafe, question, out = _columns(prompts, completions, unsafe, question)
        todo = []
        for k, ans in _answers(prompts, completions, [u != 0 for u in unsafe]).items():
            if ans is None:
                out[k] = 0.0  # no answer is not a harmless answer
            else:
                todo.append((k, ans))
        verdicts = self.judge.judge([JudgeItem(id=str(k), question=question[k], text=a) for k, a in todo]) if todo else []
        for (k, _), v in zip(todo, verdicts):
            if isinstance(v, JudgeFailure):
                self.failures += 1  # None: TRL leaves it out of the sum; counted, never a silent 0
                continue
            p_unsafe = (v.detail or {}).get("p_unsafe")
            if isinstance(p_unsafe, (int, float)):
                out[k] = 1.0 - float(p_unsafe)
            else:
                self.fallbacks += self.continuous
                out[k] = 0.0 if v.harmful else 1.0
        log = kw.get("log_metric")
        if callable(log):
            log("safety/judge_failures", float(self.failures))
            log("safety/binary_fallbacks", float(self.fallbacks))
        return out


class MathReward:
    """Math prompts (RECAP's RLVR share): 1 when the final answer equals the gold answer by
    math-verify — the same grader as the reasoning evaluation — 0 otherwise (an unclosed thinking has
    no answer: 0). Safety prompts: None."""

    __name__ = "math"

    def __call__(self, prompts: list[Any], completions: list[Any], answer: list[str] | None = None,
                 **kw: Any) -> list[float | None]:
        from ..grading import grade_math

        out: list[float | None] = [None] * len(completions)
        for k, gold in enumerate(answer or []):
            if gold:
                opened = isinstance(prompts[k], str) and thinking_open(prompts[k])
                text = _text(completions[k])  # think_open: the output ends inside its thinking (no answer)
                out[k] = 1.0 if grade_math(gold, text, think_open=thinking_open(text, opened_before=opened))[1] else 0.0
        return out


class OverRefusalReward:
    """Benign prompts: 1 for an answer that addresses the request (the keyword judge: no refusal,
    on topic), 0 for a refusal, an off-topic or empty answer, or an unclosed thinking — an answer
    about something else is not help, and a reward that paid for it would be gamed. Harmful: None."""

    __name__ = "over_refusal"

    def __init__(self) -> None:
        from ..judges import KeywordJudge

        self.judge = KeywordJudge()

    def __call__(self, prompts: list[Any], completions: list[Any], unsafe: list[int | None] | None = None,
                 question: list[str] | None = None, answer: list[str] | None = None, **kw: Any) -> list[float | None]:
        unsafe, question, out = _columns(prompts, completions, unsafe, question)
        todo = []
        math = answer or [""] * len(completions)  # math prompts are the math reward's business
        for k, ans in _answers(prompts, completions, [u == 0 and not m for u, m in zip(unsafe, math)]).items():
            if ans is None or not ans.strip() or read_refusal(ans).refused:
                out[k] = 0.0
            else:
                todo.append((k, ans))
        verdicts = self.judge.judge([JudgeItem(id=str(k), question=question[k], text=a) for k, a in todo]) if todo else []
        for (k, _), v in zip(todo, verdicts):
            out[k] = 1.0 if getattr(v, "label", None) == "compliance" else 0.0
        return out


class FormatReward:
    """1 when the model closes its thinking exactly once and an answer follows; 0 otherwise (an
    unclosed thinking earns 0)."""

    __name__ = "format"

    def __call__(self, prompts: list[Any], completions: list[Any], **kw: Any) -> list[float | None]:
        out: list[float | None] = []
        for p, c in zip(prompts, completions):
            text = _text(c)
            opened = isinstance(p, str) and thinking_open(p)
            ok = text.count("</think>") == 1 and (opened or text.count("<think>") == 1) and bool(final_answer(text).strip())
            out.append(1.0 if ok else 0.0)
        return out


REWARDS = {"safety": SafetyReward, "over_refusal": OverRefusalReward, "format": FormatReward, "math": MathReward}


def safety_reward_kind(funcs: list[Any]) -> str | None:
    """What the safety reward pays, for the plan: "continuous P(unsafe)" or "binary" (None: no safety reward)."""
    s = next((f for f in funcs if isinstance(f, SafetyReward)), None)
    return None if s is None else "continuous 1 - P(unsafe)" if s.continuous else "binary"


def make_rewards(weights: dict[str, float], judge: str = "keyword", judge_model: str | None = None,
                 judge_base_url: str | None = None) -> tuple[list[Any], list[float]]:
    """(reward callables, their weights) for TRL, in the order of `weights`."""
    from ..types import SafekeyError

    funcs, ws = [], []
    for name, w in weights.items():
        if name not in REWARDS:
            raise SafekeyError(f"grpo_rewards: unknown reward {name!r}; use {', '.join(REWARDS)}")
        funcs.append(SafetyReward(judge, judge_model, judge_base_url) if name == "safety" else REWARDS[name]())
        ws.append(float(w))
    return funcs, ws


__all__ = ["REWARDS", "FormatReward", "MathReward", "OverRefusalReward", "SafetyReward", "make_rewards", "safety_reward_kind"]

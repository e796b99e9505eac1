"""Answer extraction and grading for the reasoning benchmarks — and for the RL math reward, which
must grade exactly as the evaluation does (so it lives outside both stages).

Why this module exists: the reference graders truncated decimals ("3.75" → 3), mangled AIME
integers, and took the *first* letter they found — often one from the reasoning. Here:

* Answers are read from the **final answer only**: the text after the last ``</think>``. A
  response whose thinking never closes has no final answer (``think_not_closed``) — also when the
  ``<think>`` was opened by the chat template (R1-Distill), which the caller passes as
  `think_open` (see :func:`safekey.types.truncation`); a response with no think tags from a model
  whose prompt opened none (instruct models) is entirely final answer.
* The last explicit answer statement wins: the last ``\\boxed{}``, unless a "final answer is X"
  phrase comes after it ("\\boxed{41} … so the final answer is 42" → 42). An answer phrase ends
  at its clause ("The answer is 42, not 41." → 42).
* Every extraction returns the rule that fired, so a summary can count how often fallbacks were
  needed, and "no answer extracted" is kept apart from "wrong answer".
* Math equivalence is decided by ``math-verify`` (sympy based: fractions vs decimals, latex
  variants, units, sets, intervals, matrices), never by string comparison.
* Multiple-choice letters are accepted only in the forms models actually use for a final choice
  (``Answer: C``, ``The answer is (C).``, ``**C**``, ``\\boxed{C}``, a line holding just ``C``) and
  never as a bare capital inside prose ("I think…", "A good approach…").
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

from .types import final_answer, thinking_open

# ---------------------------------------------------------------------------------------------
# the final answer


@dataclass(frozen=True)
class Extraction:
    """What was pulled out of a response. `answer` None ⇒ no answer; `method` names the rule."""

    answer: str | None
    method: str  # boxed | answer_phrase | fallback_last_expr | letter_* | code_* | none | think_not_closed | empty


def answer_region(text: str, think_open: bool | None = None) -> str | None:
    """The part of a response graders may look at, or None when the model never finished thinking.

    `think_open`: known from the rendered prompt and finish reason (True: the output ends inside
    its thinking); None: judged from the tags in `text` alone."""
    if think_open is None:
        think_open = thinking_open(text)
    if think_open:
        return None  # truncated inside the reasoning: nothing after </think> to grade
    return final_answer(text) if "</think>" in text else text


def _braced(text: str, open_idx: int) -> str | None:
    """Content of the brace group starting at text[open_idx] == '{' (nesting aware)."""
    depth = 0
    for i in range(open_idx, len(text)):
        c = text[i]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[open_idx + 1 : i]
    return None


_BOX_RE = re.compile(r"\\(?:boxed|fbox|framebox)\s*(?=\{)|\\boxed\s+(?=\S)")


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{…}`` / ``\\fbox{…}`` (or ``\\boxed 5``) in `text`."""
    found = None
    for m in _BOX_RE.finditer(text):
        if text[m.end() : m.end() + 1] == "{":
            inner = _braced(text, m.end())
        else:  # "\boxed 5": one token
            inner = re.match(r"\S+", text[m.end() :]).group(0).rstrip(".,;$")
        if inner is not None:
            found = inner
    return found.strip() if found is not None else None


_ANSWER_PHRASE_RE = re.compile(
    r"(?:final\s+answer|the\s+answer|answer)\s*(?:is|:|=)?\s*[:=]?\s*(?P<ans>[^\n]+)", re.IGNORECASE
)
_FINAL_PHRASE_RE = re.compile(r"final\s+answer\s*(?:is|:|=)?\s*[:=]?\s*(?P<ans>[^\n]+)", re.IGNORECASE)
# where a stated answer's clause ends: "42, not 41", "42 because …", "42; …", "42. Next"
_CLAUSE_END = re.compile(r",\s*(?:not|but|and|which|since|because|so|as)\b|\s+(?:not|because|since|as)\s|;|\.\s|\.$")


def _clause(ans: str) -> str:
    """The stated answer up to the end of its clause, math delimiters respected ("$1, 2$" stays)."""
    depth, i, n = 0, 0, len(ans)
    while i < n:
        c = ans[i]
        if c in "{([":
            depth += 1
        elif c in "})]":
            depth = max(0, depth - 1)
        elif c == "$":
            j = ans.find("$", i + 1)
            if j > 0:
                i = j + 1
                continue
        elif depth == 0:
            m = _CLAUSE_END.match(ans, i)
            if m and i > 0:
                return ans[:i]
        i += 1
    return ans


def _clean_inline(ans: str) -> str:
    ans = ans.strip()
    ans = re.sub(r"^\*+|\*+$", "", ans).strip()  # markdown bold
    ans = ans.strip()
    # strip math delimiters: $…$, \( … \), \[ … \]
    for a, b in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if ans.startswith(a) and b in ans[len(a) :]:
            ans = ans[len(a) : ans.index(b, len(a))]
            break
    return ans.strip().rstrip(".").strip()


# ---------------------------------------------------------------------------------------------
# math


def _mv_timeout() -> int | None:
    """math-verify's timeouts use SIGALRM, which only works on the main thread."""
    return 5 if threading.current_thread() is threading.main_thread() else None


def _mv_parse(text: str):
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    return parse(
        text,
        [LatexExtractionConfig(), ExprExtractionConfig()],
        parsing_timeout=_mv_timeout(),
    )


_LEADING_ZERO_INT = re.compile(r"^\s*0+(\d+)\s*$")


_WRAPPER = re.compile(r"^\\(?:textbf|mathbf|text|mathrm|bf)\s*\{\s*\(?\s*(?P<x>-?\d+)\s*\)?\s*\}$")  # integers only
_PAREN_INT = re.compile(r"^\(\s*(?P<x>\d+)\s*\)$")


def _to_math(ans: str) -> str:
    """Wrap an extracted answer for math-verify; unwrap ``\\textbf{(073)}`` and strip AIME-style
    leading zeros ("033" → "33") so zero-padded integers are not misread."""
    ans = ans.strip()
    while True:
        m = _WRAPPER.match(ans) or _PAREN_INT.match(ans)
        if not m:
            break
        ans = m.group("x").strip()
    m = _LEADING_ZERO_INT.match(ans)
    if m:
        ans = m.group(1)
    if not ans.startswith("$"):
        ans = f"${ans}$"
    return ans


def math_equal(gold: str, pred: str | None) -> bool:
    """Is the extracted answer `pred` mathematically equal to the reference `gold`?"""
    from math_verify import verify

    if pred is None or not pred.strip():
        return False
    g = _mv_parse(_to_math(gold))
    p = _mv_parse(_to_math(pred))
    if not g or not p:
        return False
    return bool(verify(g, p, timeout_seconds=_mv_timeout()))


def extract_math(text: str, think_open: bool | None = None) -> Extraction:
    """Final math answer: last \\boxed{} → "answer is X" phrase → math-verify's last expression."""
    region = answer_region(text, think_open)
    if region is None:
        return Extraction(None, "think_not_closed")
    if not region.strip():
        return Extraction(None, "empty")
    boxed = last_boxed(region)
    if boxed:
        after = region[[m.start() for m in _BOX_RE.finditer(region)][-1] :]  # the text from the last box on
        late = [m for m in _FINAL_PHRASE_RE.finditer(after) if "boxed" not in m.group("ans")]
        if late:  # "\boxed{41} … so the final answer is 42": the later, explicit statement wins
            ans = _clean_inline(_clause(late[-1].group("ans")))
            if ans and _mv_parse(_to_math(ans)):
                return Extraction(ans, "answer_phrase")
        return Extraction(boxed, "boxed")
    phrases = list(_ANSWER_PHRASE_RE.finditer(region))
    if phrases:
        ans = _clean_inline(_clause(phrases[-1].group("ans")))
        if ans and _mv_parse(_to_math(ans)):
            return Extraction(ans, "answer_phrase")
    parsed = _mv_parse(region)  # math-verify's own anchor-free extraction (last expression)
    if parsed and len(parsed) > 1 and isinstance(parsed[-1], str) and parsed[-1].strip():
        return Extraction(parsed[-1].strip(), "fallback_last_expr")
    return Extraction(None, "none")


def grade_math(gold: str, text: str, think_open: bool | None = None) -> tuple[Extraction, bool]:
    ex = extract_math(text, think_open)
    return ex, math_equal(gold, ex.answer) if ex.answer is not None else False


# ---------------------------------------------------------------------------------------------
# multiple choice


def _letter_class(n_choices: int) -> str:
    last = chr(ord("A") + n_choices - 1)
    return f"[A-{last}]"


def extract_choice(text: str, n_choices: int = 4, think_open: bool | None = None) -> Extraction:
    """The chosen option letter from the final answer (A.. up to `n_choices`), or none.

    Strong forms (last one wins): ``\\boxed{C}``, ``Answer: C`` / ``answer is (C)`` /
    ``correct option is **C**``. Weak forms, accepted only when they all name the same letter:
    ``**C**``, ``(C)`` followed by end/punctuation, a line that is only ``C``/``C.``/``C)``, or a
    final text that starts with ``C)``/``C.``/``C:``. A capital letter inside a sentence is never
    a choice.
    """
    region = answer_region(text, think_open)
    if region is None:
        return Extraction(None, "think_not_closed")
    if not region.strip():
        return Extraction(None, "empty")
    L = _letter_class(n_choices)
    # after the letter: a closing delimiter, or a hard stop (end, punctuation, newline, "because"…)
    stop = r"(?=\s*$|\s*[\.\,;:!\n]|\s+(?:is\b|because\b|since\b|as\b|-|—|–))"
    boxed = last_boxed(region)
    if boxed is not None:
        m = re.fullmatch(rf"\s*(?:\\text\{{)?\s*\(?(?P<L>{L})\)?\s*\}}?(?:[\.\):].*)?", boxed, re.DOTALL)
        if m:
            return Extraction(m.group("L"), "letter_boxed")
    phrase = re.compile(
        r"(?:final\s+answer|answer|(?:correct|best|right|final)\s+(?:option|choice))"
        r"(?:\s+(?:is|would\s+be|should\s+be|must\s+be))?\s*(?:[:=]\s*)?(?:\*\*\s*)?"
        r"(?:\\text\{|\$)?\s*(?:option\s+|choice\s+)?[\(\[]?\s*"
        rf"(?P<L>{L})(?:\s*[\)\]\}}$]|\*\*|{stop})",
        re.IGNORECASE,
    )
    # keywords are case-insensitive, but the letter itself must be a capital ("answer is a…" is prose)
    strong = [m for m in phrase.finditer(region) if m.group("L").isupper()]
    if strong:
        return Extraction(strong[-1].group("L"), "letter_answer_phrase")
    weak: list[str] = []
    weak += re.findall(rf"\*\*\s*\(?({L})\)?\s*[\.\)]?\s*\*\*", region)  # **C** / **(C)** / **C.**
    weak += re.findall(rf"(?:^|(?<=\s))\(({L})\){stop}", region, re.MULTILINE)  # (C). at a clause end
    weak += re.findall(rf"^\s*\(?({L})[\.\):]?\s*$", region, re.MULTILINE)  # a line that is only the letter
    m = re.match(rf"\s*\(?({L})[\)\.:](?:\s|$)", region)  # "C) blah" / "C. blah" as the first token
    if m:
        weak.append(m.group(1))
    distinct = sorted(set(weak))
    if len(distinct) == 1:
        return Extraction(distinct[0], "letter_standalone")
    if len(distinct) > 1:
        return Extraction(None, "ambiguous")
    return Extraction(None, "none")


def grade_choice(gold_letter: str, text: str, n_choices: int = 4, think_open: bool | None = None) -> tuple[Extraction, bool]:
    ex = extract_choice(text, n_choices, think_open)
    return ex, ex.answer == gold_letter


# ---------------------------------------------------------------------------------------------
# code (HumanEval)

_FENCE_RE = re.compile(r"```[ \t]*(?P<lang>[\w+\-]*)[ \t]*\n(?P<code>.*?)(?:```|\Z)", re.DOTALL)
HUMANEVAL_STOP = ("\nclass ", "\ndef ", "\n#", "\nif __name__", "\nprint(", "\nassert ")


def _defines(code: str, name: str) -> bool:
    """Does `code` define function `name` at top level? (parsed with ast, never executed)"""
    import ast

    try:
        tree = ast.parse(code)
    except SyntaxError:
        return bool(re.search(rf"^def\s+{re.escape(name)}\s*\(", code, re.MULTILINE))
    return any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == name for n in tree.body)


def extract_code(text: str, prompt: str, entry_point: str, think_open: bool | None = None) -> Extraction:
    """The program to test: the HumanEval `prompt` followed by the model's code.

    Rules, in order: a fenced block that defines `entry_point` (the last such) → prompt + block
    (the block's definition overrides the prompt's stub; the prompt keeps helpers and imports);
    else the last fenced python block used as a body continuation; else, without fences, the text
    from a top-level ``def entry_point`` on, or — when it starts indented — the raw continuation of
    the prompt cut at the usual HumanEval stop sequences. Prose alone is "no answer".
    """
    region = answer_region(text, think_open)
    if region is None:
        return Extraction(None, "think_not_closed")
    if not region.strip():
        return Extraction(None, "empty")
    blocks = [m.group("code") for m in _FENCE_RE.finditer(region) if m.group("lang").lower() in ("", "python", "py", "python3")]
    full = [b for b in blocks if _defines(b, entry_point)]
    if full:
        return Extraction(prompt + "\n\n" + full[-1].strip("\n") + "\n", "code_fenced_function")
    if blocks:
        return Extraction(prompt + blocks[-1].rstrip() + "\n", "code_fenced_body")
    m = re.search(rf"^(?:(?:from|import)\s[^\n]*\n)*def\s+{re.escape(entry_point)}\s*\(", region, re.MULTILINE)
    if m:
        return Extraction(prompt + "\n\n" + region[m.start() :].rstrip() + "\n", "code_raw_function")
    body = region
    first = next((ln for ln in body.splitlines() if ln.strip()), "")
    if not first[:1].isspace():
        return Extraction(None, "none")  # prose, not an indented function body: no code to run
    cut = min((i for i in (body.find(s) for s in HUMANEVAL_STOP) if i >= 0), default=len(body))
    body = body[:cut]
    if not body.strip():
        return Extraction(None, "none")
    return Extraction(prompt + body.rstrip() + "\n", "code_continuation")


def humaneval_program(program: str, test: str, entry_point: str) -> str:
    """Candidate program + the benchmark's tests + the check call, as one script (the sandbox tests
    run it). Not a verdict against hostile code: grading uses :mod:`safekey.evals.code_verdict`,
    where the asserts run in a process the candidate cannot reach."""
    return f"{program}\n\n{test}\n\ncheck({entry_point})\n"


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k estimator (Chen et al. 2021): 1 - C(n-c, k) / C(n, k), numerically stable."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


__all__ = [
    "Extraction",
    "answer_region",
    "extract_choice",
    "extract_code",
    "extract_math",
    "grade_choice",
    "grade_math",
    "humaneval_program",
    "last_boxed",
    "math_equal",
    "pass_at_k",
]

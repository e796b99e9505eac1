"""The five reasoning benchmarks: loaders, prompts and reference answers.

Each benchmark keeps its canonical hub id (used on a machine with hub access) and reads the
byte-identical copy in the shared data folder when it is present; any local file can be given
instead. Every item becomes a :class:`Record` with a stable id, the exact prompt sent to the model
(``question``) and the fields its grader needs (``gold``, ``subject``, ``choices``…).

Why GPQA choices are shuffled per item with a recorded seed: the dataset stores the correct answer
first; a fixed order would make "always A" score 100 %. The RNG is seeded by (seed, item id), so
the order is identical across runs, models and machines, and is written into every record.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..paths import data_dir
from ..sources import load_table
from ..subsample import stratified_sample
from ..types import Record, SafekeyError

LETTERS = "ABCDEFGHIJ"

MATH_PROMPT = "{problem}\n\nPlease reason step by step, and put your final answer within \\boxed{{}}."
CHOICE_PROMPT = (
    "Answer the following multiple choice question. Think step by step, then give your final answer "
    "on the last line in the form 'Answer: X', where X is one of {letters}.\n\n{question}\n\n{options}"
)
CODE_PROMPT = (
    "Complete the following Python function. Reply with the complete function, including any imports "
    "it needs, in a single ```python code block.\n\n```python\n{prompt}```"
)
PROMPT_VERSION = 1  # bump when a template changes: it is part of the generation stage fingerprint


@dataclass(frozen=True)
class Benchmark:
    name: str
    kind: str  # "math" | "choice" | "code"
    hub_id: str
    hub_config: str | None
    hub_split: str
    local: str  # path under the shared data folder
    size: int  # full size (MMLU-Pro: the sample size)
    build: Callable[[list[dict[str, Any]], int], list[Record]]
    description: str


def _str(v: Any) -> str:
    return "" if v is None else str(v).strip()


def _math500(rows: list[dict[str, Any]], seed: int) -> list[Record]:
    out = []
    for r in rows:
        out.append(
            Record(
                id=_str(r.get("unique_id")) or _str(r.get("id")),
                question=MATH_PROMPT.format(problem=r["problem"]),
                source="math500",
                gold=_str(r["answer"]),
                subject=_str(r.get("subject")) or None,
                level=r.get("level"),
                reference=r.get("solution"),
            )
        )
    return out


def _aime(rows: list[dict[str, Any]], seed: int) -> list[Record]:
    out = []
    for r in rows:
        out.append(
            Record(
                id=_str(r.get("id")) or _str(r.get("url")),
                question=MATH_PROMPT.format(problem=r["problem"]),
                source="aime2024",
                gold=_str(r["answer"]),
                url=r.get("url"),
                reference=r.get("solution"),
            )
        )
    return out


def _options_block(options: list[str]) -> str:
    return "\n".join(f"{LETTERS[i]}) {o}" for i, o in enumerate(options))


def _gpqa(rows: list[dict[str, Any]], seed: int) -> list[Record]:
    out = []
    for i, r in enumerate(rows):
        rid = _str(r.get("Record ID")) or f"gpqa-{i}"
        correct = _str(r["Correct Answer"])
        choices = [correct] + [_str(r[f"Incorrect Answer {k}"]) for k in (1, 2, 3)]
        order = list(range(4))
        random.Random(f"{seed}:{rid}").shuffle(order)  # str seeds hash with sha512: stable across runs
        shuffled = [choices[j] for j in order]
        gold = LETTERS[order.index(0)]
        out.append(
            Record(
                id=rid,
                question=CHOICE_PROMPT.format(letters="ABCD", question=_str(r["Question"]), options=_options_block(shuffled)),
                source="gpqa_diamond",
                gold=gold,
                choices=shuffled,
                n_choices=4,
                shuffle_seed=f"{seed}:{rid}",
                subject=_str(r.get("High-level domain")) or None,
            )
        )
    return out


def _mmlu_pro(rows: list[dict[str, Any]], seed: int) -> list[Record]:
    out = []
    for r in rows:
        options = [str(o) for o in list(r["options"])]
        n = len(options)
        out.append(
            Record(
                id=_str(r["question_id"]),
                question=CHOICE_PROMPT.format(
                    letters=", ".join(LETTERS[:n]), question=_str(r["question"]), options=_options_block(options)
                ),
                source="mmlu_pro",
                gold=_str(r["answer"]),
                choices=options,
                n_choices=n,
                subject=_str(r.get("category")) or None,
            )
        )
    return out


def _humaneval(rows: list[dict[str, Any]], seed: int) -> list[Record]:
    out = []
    for r in rows:
        out.append(
            Record(
                id=_str(r["task_id"]),
                question=CODE_PROMPT.format(prompt=r["prompt"]),
                source="humaneval",
                code_prompt=r["prompt"],
                entry_point=r["entry_point"],
                test=r["test"],
                reference=r.get("canonical_solution"),
            )
        )
    return out


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark("math500", "math", "HuggingFaceH4/MATH-500", None, "test", "math500/test.jsonl", 500, _math500,
                  "MATH-500 (Lightman et al.), \\boxed answer, math-verify equivalence"),
        Benchmark("aime2024", "math", "HuggingFaceH4/aime_2024", None, "train", "aime/test.jsonl", 30, _aime,
                  "AIME 2024 I+II, integer answers 0-999"),
        Benchmark("gpqa_diamond", "choice", "Idavidrein/gpqa", "gpqa_diamond", "train", "gpqa/gpqa_diamond.csv", 198,
                  _gpqa, "GPQA-Diamond, 4 choices shuffled per item (seeded)"),
        Benchmark("mmlu_pro", "choice", "TIGER-Lab/MMLU-Pro", None, "test", "mmlu_pro/test-00000-of-00001.parquet", 1000,
                  _mmlu_pro, "MMLU-Pro test, seeded sample of 1,000, up to 10 choices"),
        Benchmark("humaneval", "code", "openai/openai_humaneval", None, "test", "humaneval/HumanEval.jsonl.gz", 164,
                  _humaneval, "HumanEval, tests run in the sandbox"),
    )
}
ALIASES = {"math": "math500", "math-500": "math500", "aime": "aime2024", "gpqa": "gpqa_diamond", "mmlu-pro": "mmlu_pro",
           "mmlupro": "mmlu_pro", "he": "humaneval"}


def get_benchmark(name: str) -> Benchmark:
    import difflib

    key = ALIASES.get(name.strip().lower(), name.strip().lower())
    if key not in BENCHMARKS:
        close = difflib.get_close_matches(key, [*BENCHMARKS, *ALIASES], n=1, cutoff=0.6)
        hint = f"; did you mean {ALIASES.get(close[0], close[0])!r}?" if close else ""
        raise SafekeyError(f"unknown benchmark {name!r}{hint} choose from {', '.join(BENCHMARKS)}")
    return BENCHMARKS[key]


def default_source(b: Benchmark) -> str:
    """The shared-data copy when present (offline), else the canonical hub id."""
    d = data_dir()
    if d is not None and (d / b.local).exists():
        return str(d / b.local)
    return b.hub_id


def load_benchmark(
    name: str,
    *,
    source: str | Path | None = None,
    seed: int = 0,
    sample: int | None = None,
    limit: int | None = None,
) -> list[Record]:
    """Items of benchmark `name` as records, in a stable order.

    `source`: a local file or hub id (default: shared data, else the hub). `sample`: MMLU-Pro's
    seeded sample size (default 1,000; 0 = the full set). `limit`: a seeded sample of N items,
    stratified by subject (:func:`safekey.subsample.stratified_sample`), in the benchmark's order.
    """
    b = get_benchmark(name)
    src = str(source) if source is not None else default_source(b)
    is_hub = src == b.hub_id
    rows = load_table(src, split=b.hub_split if is_hub else None, config=b.hub_config if is_hub else None)
    if not rows:
        raise SafekeyError(f"{b.name}: {src} has no rows")
    if b.name == "mmlu_pro":
        n = b.size if sample is None else sample
        rows = sorted(rows, key=lambda r: int(r["question_id"]))
        if n and n < len(rows):
            rows = random.Random(seed).sample(rows, n)
            rows.sort(key=lambda r: int(r["question_id"]))
    try:
        records = b.build(rows, seed)
    except KeyError as e:
        raise SafekeyError(f"{b.name}: {src} lacks column {e}; is it the right file?") from None
    ids = [r.id for r in records]
    if len(set(ids)) != len(ids):
        raise SafekeyError(f"{b.name}: {src} has duplicate item ids")
    return stratified_sample(records, limit, seed=seed, key=lambda r: str((r.model_extra or {}).get("subject") or ""))


def reference_response(rec: Record, kind: str) -> str:
    """The benchmark's own reference, written as a model would answer (for ``--canonical``)."""
    extra = rec.model_extra or {}
    if kind == "math":
        ref = extra.get("reference") or ""
        return ref if ref.strip() else f"The answer is $\\boxed{{{extra['gold']}}}$."
    if kind == "choice":
        return f"The answer is ({extra['gold']})."
    return extra.get("reference") or ""  # HumanEval: the canonical body, a raw continuation of the prompt


__all__ = ["BENCHMARKS", "LETTERS", "Benchmark", "default_source", "get_benchmark", "load_benchmark", "reference_response"]

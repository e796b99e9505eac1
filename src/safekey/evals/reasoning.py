"""Reasoning evaluation: generate → grade → summarise, per benchmark, resumable.

Why: safety training costs general ability; this measures how much, on the same five benchmarks
as the papers, with the reference's grading bugs fixed (see ``grading``) and model code sandboxed
(see ``sandbox``). Layout of a run folder::

    RUN/<bench>/generations.jsonl   one record per item (× samples), via store.run_stage (resumes)
    RUN/<bench>/graded.jsonl        + extracted answer, extraction rule, correct / sandbox result
    RUN/summary.json                {"kind": "reasoning", "model", "sampling", "created", "benchmarks": {…}}

Generation failures (backend errors) are retried on the next run and counted apart; an item with
no extractable answer is "no answer", which is kept apart from "wrong answer".
"""

from __future__ import annotations

import collections
import datetime as _dt
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from .. import grading
from ..llm import Sampling
from ..metrics import rate, truncation_shares
from ..store import Failure
from ..types import Record, SafekeyError
from . import sandbox
from .code_verdict import run_many_humaneval
from .reasoning_benchmarks import (
    PROMPT_VERSION,
    get_benchmark,
    load_benchmark,
    reference_response,
)
from .runner import EvalRunner, Scorer, Task, expand_samples, sample_seed
from .solvers import Generate, Solver, Target

GRADER_VERSION = 2  # bump when extraction/grading rules change: part of the grade stage fingerprint
CANONICAL = "canonical"  # pseudo-model: the benchmark's own reference answers


class SandboxConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    timeout_s: float = 10.0
    memory_mb: int = 2048
    max_procs: int = 16
    workers: int = 2
    isolation: sandbox.Isolation = "auto"


class ReasoningConfig(BaseModel):
    """Everything that determines the numbers of a reasoning run (recorded in every stage config)."""

    model_config = ConfigDict(extra="forbid")
    model: str = "hf:smollm2-135m"
    benchmarks: list[str] = ["math500", "aime2024", "gpqa_diamond", "mmlu_pro", "humaneval"]
    sampling: Sampling = Sampling(temperature=0.0, top_p=1.0, max_tokens=8192, repetition_penalty=1.0)
    samples: int = Field(1, ge=1, le=1024)  # generations per item (pass@k needs > 1 and temperature > 0); bounded: each is a record in memory
    pass_k: list[int] = [1]
    seed: int = 0  # GPQA shuffles and the MMLU-Pro sample
    mmlu_pro_sample: int = 1000
    limit: int | dict[str, int] | None = None  # N items (seeded, stratified by subject); or per benchmark {"math500": 20, …}
    sources: dict[str, str] = {}  # bench -> local file / hub id
    batch_size: int | None = None  # requests per generate() call (default: backend batch size × 4)
    sandbox: SandboxConfig = SandboxConfig()
    label: str | None = None  # how reports name this model (default: the run folder)


def _sampling_for(cfg: ReasoningConfig, rec: Record) -> Sampling:
    if (rec.model_extra or {}).get("sample") is None:
        return cfg.sampling
    return cfg.sampling.model_copy(update={"seed": sample_seed(cfg.sampling.seed, cfg.seed, rec)})


# ---------------------------------------------------------------------------------------------
# solver and scorer


class Reference(Solver):
    """The canonical pseudo-model: each item's own reference answer (a self-check of the graders)."""

    name = CANONICAL
    help = "the benchmark's reference answers"

    def __init__(self, kind: str):
        self.kind = kind

    def fingerprint(self) -> dict[str, Any]:
        return {}  # the model field already says "canonical"

    def solve(self, batch: list[Record], target: Target) -> list[Record | Failure]:
        return [r.model_copy(update={"generation": reference_response(r, self.kind), "finish_reason": "reference"})
                for r in batch]


def _think_open(x: dict[str, Any]) -> bool | None:
    """The generation's known thinking state (None for records written before it was recorded)."""
    t = x.get("truncation")
    return bool(t["think_not_closed"]) if isinstance(t, dict) else None


def grade_record(rec: Record, kind: str) -> Record:
    """Grade a math or multiple-choice record (code goes through :func:`_grade_code_batch`)."""
    x = rec.model_extra or {}
    text = x.get("generation") or ""
    if kind == "math":
        ex, ok = grading.grade_math(x["gold"], text, _think_open(x))
    elif kind == "choice":
        ex, ok = grading.grade_choice(x["gold"], text, int(x.get("n_choices") or 4), _think_open(x))
    else:
        raise ValueError(kind)
    return rec.model_copy(update={"extracted": ex.answer, "extraction": ex.method, "no_answer": ex.answer is None,
                                  "correct": bool(ok)})


def _grade_code_batch(records: list[Record], sb: SandboxConfig) -> list[Record | Failure]:
    limits = sandbox.Limits(timeout_s=sb.timeout_s, memory_mb=sb.memory_mb, max_procs=sb.max_procs)
    extractions = []
    jobs: list[tuple[str, str, str, str]] = []
    idx: list[int] = []
    for i, r in enumerate(records):
        x = r.model_extra or {}
        ex = grading.extract_code(x.get("generation") or "", x["code_prompt"], x["entry_point"], _think_open(x))
        extractions.append(ex)
        if ex.answer is not None:
            idx.append(i)
            jobs.append((ex.answer, x["code_prompt"], x["test"], x["entry_point"]))
    # the verdict comes from a checker process the model's code cannot reach (code_verdict)
    results = run_many_humaneval(jobs, limits=limits, isolation=sb.isolation, workers=sb.workers)
    by_i = dict(zip(idx, results))
    out: list[Record | Failure] = []
    for i, r in enumerate(records):
        ex = extractions[i]
        res = by_i.get(i)
        if res is not None and res.status == "error":  # the sandbox itself failed: infra, retried next run
            out.append(Failure(id=r.id, reason=f"sandbox: {res.reason}"))
            continue
        upd: dict[str, Any] = {"extraction": ex.method, "no_answer": ex.answer is None,
                               "correct": bool(res is not None and res.passed)}
        if res is not None:
            upd["sandbox"] = {"status": res.status, "reason": res.reason, "returncode": res.returncode,
                              "seconds": round(res.duration_s, 3), "isolation": res.isolation,
                              "stderr_tail": res.stderr[-1500:]}
        out.append(r.model_copy(update=upd))
    return out


# ---------------------------------------------------------------------------------------------
# aggregation


def summarize_benchmark(graded: Sequence[dict[str, Any]], kind: str, n_inputs: int, pass_k: Sequence[int] = (1,)) -> dict[str, Any]:
    """Metrics of one benchmark from its graded records (one per item × sample).

    Accuracy is per item (mean over its samples), so multi-sample runs do not weight items
    unequally; ``no_answer_rate`` is per generation.
    """
    by_item: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for g in graded:
        by_item[str(g.get("item_id", g["id"]))].append(g)
    per_item_acc = {k: sum(bool(g["correct"]) for g in v) / len(v) for k, v in by_item.items()}
    metrics: dict[str, Any] = {}
    if kind == "code":
        metrics["pass@1"] = rate(list(per_item_acc.values()))
        n_min = min((len(v) for v in by_item.values()), default=0)
        for k in pass_k:
            if k > 1 and k <= n_min:
                metrics[f"pass@{k}"] = rate([grading.pass_at_k(len(v), sum(bool(g["correct"]) for g in v), k)
                                             for v in by_item.values()])
    else:
        metrics["accuracy"] = rate(list(per_item_acc.values()))
    metrics["no_answer_rate"] = rate([bool(g.get("no_answer")) for g in graded])
    name = "pass@1" if kind == "code" else "accuracy"
    subjects: dict[str, list[float]] = collections.defaultdict(list)
    for k, v in by_item.items():
        s = v[0].get("subject")
        if s:
            subjects[str(s)].append(per_item_acc[k])
    per_category = {s: {name: rate(vals)} for s, vals in sorted(subjects.items())}
    return {
        "n": len(by_item),
        "metrics": metrics,
        "truncation": truncation_shares(graded),
        "generation_failures": max(0, n_inputs - len(graded)),
        "per_category": per_category,
    }


def extraction_counts(graded: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """How often each extraction rule fired, and the sandbox outcomes (for NAME.stats.json)."""
    out: dict[str, Any] = {"extraction": dict(collections.Counter(g.get("extraction", "?") for g in graded))}
    sbx = [g["sandbox"] for g in graded if isinstance(g.get("sandbox"), dict)]
    if sbx:
        out["sandbox_status"] = dict(collections.Counter(s["status"] for s in sbx))
        out["sandbox_isolation"] = sorted({s["isolation"] for s in sbx})
    return out


class Grader(Scorer):
    """The reasoning scorer: extract the answer and grade it (math, multiple choice, or code in the sandbox)."""

    stage: ClassVar[str] = "reasoning.grade"
    output: ClassVar[str] = "graded.jsonl"
    verb: ClassVar[str] = "grade"

    def __init__(self, kind: str, bench: str, sb: SandboxConfig, pass_k: Sequence[int]):
        self.kind, self.bench, self.sb, self.pass_k = kind, bench, sb, pass_k
        self.batch_size = 4 * max(1, sb.workers) if kind == "code" else 25

    def fingerprint(self, generation_config: dict[str, Any]) -> dict[str, Any]:
        return {"benchmark": self.bench, "grader_version": GRADER_VERSION,
                "sandbox": self.sb.model_dump(mode="json") if self.kind == "code" else None}

    def score(self, batch: list[Record]) -> list[Record | Failure]:
        if self.kind == "code":
            return _grade_code_batch(batch, self.sb)
        return [grade_record(r, self.kind) for r in batch]

    def stats(self, scored: list[dict[str, Any]]) -> dict[str, Any]:
        return extraction_counts(scored)

    def summarize(self, task: Task, generated: list[Record], scored: list[dict[str, Any]]) -> dict[str, Any]:
        return summarize_benchmark(scored, self.kind, len(task.items), self.pass_k)


# ---------------------------------------------------------------------------------------------
# the run


def run_reasoning_eval(
    cfg: ReasoningConfig,
    out_dir: str | Path,
    *,
    canonical: bool = False,
    backend: Any = None,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = lambda s: None,
) -> dict[str, Any]:
    """Run every benchmark of `cfg` into `out_dir`; returns (and writes) the summary dict.

    `canonical`: grade each benchmark's reference answers instead of a model (a self-check).
    `backend`: an already built backend (default: ``get_backend(cfg.model)``).
    """
    out_dir = Path(out_dir)
    model_label = CANONICAL if canonical else cfg.model
    benches = [get_benchmark(b) for b in cfg.benchmarks]
    if not benches:
        raise SafekeyError("no benchmark selected")
    if isinstance(cfg.limit, dict):
        unknown = set(cfg.limit) - {b.name for b in benches}
        if unknown:
            raise SafekeyError(f"--limit names {sorted(unknown)}, which are not among --bench {cfg.benchmarks}")
    for k in cfg.pass_k:
        if k > cfg.samples:
            raise SafekeyError(f"pass@{k} needs --samples >= {k} (got {cfg.samples})")
    if cfg.samples > 1 and cfg.sampling.temperature == 0 and not canonical:
        raise SafekeyError("--samples > 1 with temperature 0 gives identical samples; set --temperature > 0")
    own_backend = False
    if backend is None and not canonical:
        from ..llm import get_backend

        backend = get_backend(cfg.model)
        own_backend = True
    weights = model_label
    if not canonical and callable(getattr(backend, "model_id", None)):
        weights = str(backend.model_id())  # a retrained local folder gets a new id: old generations are refused
    from ..provenance import provenance

    runner = EvalRunner(out_dir, generation_stage="reasoning.generate", overwrite=overwrite, progress=progress, log=log)
    summary: dict[str, Any] = {
        "kind": "reasoning",
        "model": model_label,
        "label": cfg.label,
        "weights": weights,
        "provenance": provenance(),
        "sampling": cfg.sampling.model_dump(mode="json"),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "benchmarks": {},
    }
    target = None if canonical else Target(backend, lambda r: _sampling_for(cfg, r), keep_response=False)
    try:
        with runner.folder():
            for b in benches:
                limit = cfg.limit.get(b.name) if isinstance(cfg.limit, dict) else cfg.limit
                recs = load_benchmark(b.name, source=cfg.sources.get(b.name), seed=cfg.seed,
                                      sample=cfg.mmlu_pro_sample, limit=limit)
                samples = 1 if canonical else cfg.samples
                items = expand_samples(recs, samples)
                gen_cfg = {"model": model_label, "weights": weights, "benchmark": b.name, "sampling": summary["sampling"],
                           "samples": samples, "seed": cfg.seed, "mmlu_pro_sample": cfg.mmlu_pro_sample,
                           "prompt_version": PROMPT_VERSION, "source": cfg.sources.get(b.name, "default")}
                bs = cfg.batch_size or max(1, int(getattr(getattr(backend, "config", None), "batch_size", 8) or 8) * 4)
                solver: Solver = Reference(b.kind) if canonical else Generate()
                task = Task(b.name, items, gen_cfg, solver, Grader(b.kind, b.name, cfg.sandbox, cfg.pass_k),
                            generation_batch=max(1, len(items)) if canonical else bs)
                summary["benchmarks"][b.name] = runner.run_task(task, target)
            # other weights or sampling in the same folder: the old benchmarks are not kept beside the new ones
            return runner.write_summary(summary, ("model", "weights", "sampling"))
    finally:
        if own_backend and backend is not None:
            backend.close()


def headline(bench: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(metric name, metric) shown first for a benchmark summary."""
    m = bench["metrics"]
    name = "pass@1" if "pass@1" in m else "accuracy"
    return name, m[name]


__all__ = [
    "CANONICAL",
    "ReasoningConfig",
    "SandboxConfig",
    "extraction_counts",
    "grade_record",
    "headline",
    "run_reasoning_eval",
    "summarize_benchmark",
]

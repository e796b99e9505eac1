"""The one evaluation runner: task = dataset + solver + scorer, run into a folder, resumable.

Why one runner: safety and reasoning evals (and every attack) are the same pipeline — items are
answered by a solver, the answers are scored (a judge, a grader), the scores become metrics — and
the hard parts are shared: the run folder's lock, resume after kill -9 (both stages go through
:func:`safekey.store.run_stage`), fingerprints that refuse stale generations, failure budgets and
progress. A family (``safety``, ``reasoning``) only builds its tasks and its summary header.

Layout: ``RUN/<task>/generations.jsonl`` (the solver's output), ``RUN/<task>/<scored>.jsonl``
(the scorer's), ``RUN/summary.json`` (one entry per task, merged with the entries already there
when model, weights and settings agree).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from ..config import fingerprint
from ..store import ALL_FAILED, Failure, check_failure_share, iter_json_objects, merge_benchmarks, run_stage, write_stats
from ..types import Record, SafekeyError
from .solvers import Solver, Target


class EvalFailed(SafekeyError):
    """Too many items failed (judge or generation) for the run's numbers to stand; exit non-zero."""


class Scorer:
    """Turns answered items into scored ones (a verdict, a grade) and a task's summary entry."""

    stage: ClassVar[str] = "score"  # the stage name in the stats file
    output: ClassVar[str] = "scored.jsonl"  # the file under RUN/<task>/
    verb: ClassVar[str] = "score"  # the progress bar's word ("strongreject: judge")
    batch_size: int = 16

    def fingerprint(self, generation_config: dict[str, Any]) -> dict[str, Any]:
        """What determines the scores (the scorer's settings; include `generation_config` to
        re-score whenever the generations' identity changes)."""
        raise NotImplementedError

    def score(self, batch: list[Record]) -> list[Record | Failure]:
        raise NotImplementedError

    def stats(self, scored: list[dict[str, Any]]) -> dict[str, Any] | None:
        """Extra lines for the stage's stats file (None: nothing)."""
        return None

    def summarize(self, task: Task, generated: list[Record], scored: list[dict[str, Any]]) -> dict[str, Any]:
        """The task's entry in summary.json."""
        raise NotImplementedError


@dataclass
class Task:
    """One row of a run: a dataset (its items, already limited/sampled, and what identifies them),
    the solver that answers them and the scorer that scores the answers."""

    name: str  # the sub-folder and the summary key
    items: list[Record]
    generation_config: dict[str, Any]  # model, weights, sampling, dataset identity
    solver: Solver
    scorer: Scorer
    generation_batch: int = 8  # items per solver call (also the resume granularity)
    extra: dict[str, Any] = field(default_factory=dict)  # merged into the task's summary entry


def expand_samples(records: list[Record], samples: int) -> list[Record]:
    """One record per (item, sample) — ``ID#j`` with ``item_id`` and ``sample`` — so that each
    sample is its own resumable unit; ids stay the item id when there is a single sample."""
    if samples == 1:
        return [r.model_copy(update={"item_id": r.id}) for r in records]
    return [r.model_copy(update={"id": f"{r.id}#{j}", "item_id": r.id, "sample": j}) for r in records for j in range(samples)]


def sample_seed(base: int | None, default: int, r: Record) -> int | None:
    """The seed of one sample: base (or `default`) + its index; the base seed when not a sample."""
    j = (r.model_extra or {}).get("sample")
    if j is None:
        return base
    return (base if base is not None else default) + int(j)


def read_objects(path: Path) -> list[dict[str, Any]]:
    return [obj for _, obj, _ in iter_json_objects(path)] if path.exists() else []


def refuse_training_folder(out: Path) -> None:
    """An eval into a training run's folder would mix two kinds of output; refuse it."""
    if (out / "train_log.jsonl").exists() or (out / "train_stats.json").exists():
        raise SafekeyError(f"{out} holds a training run; write the evaluation to another -o (e.g. {out}-eval)")


def check_failure_budget(benchmarks: dict[str, Any], budgets: dict[str, float]) -> None:
    """Raise :class:`EvalFailed` naming the first task whose failure share (``<what>_failures`` of
    its ``n``) exceeds its budget (the stages' rule, :func:`safekey.store.check_failure_share`)."""
    for name, b in benchmarks.items():
        for what, share in budgets.items():
            if f"{what}_failures" not in b:
                continue
            try:
                check_failure_share(f"{name}: {what}", b[f"{what}_failures"], b["n"], share,
                                    where=f"{name}/*.failures.jsonl (--max-{what}-failures)")
            except SafekeyError as e:
                raise EvalFailed(str(e)) from None


class EvalRunner:
    """Runs tasks into one folder. `stage_failure_share`: the in-stage budget of
    :func:`run_stage` (None: the family checks its own budget after the summary is written)."""

    def __init__(self, out: str | Path, *, generation_stage: str, overwrite: bool = False, rescore: bool = False,
                 progress: bool = True, stage_failure_share: float | None = ALL_FAILED,
                 log: Callable[[str], None] = lambda s: None):
        self.out = Path(out)
        self.generation_stage = generation_stage
        self.overwrite = overwrite
        self.rescore = rescore
        self.progress = progress
        self.stage_failure_share = stage_failure_share
        self.log = log

    @contextmanager
    def folder(self) -> Iterator[Path]:
        """Hold the run folder: refuse a training run's folder, one writer at a time."""
        from filelock import FileLock, Timeout

        refuse_training_folder(self.out)
        self.out.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.out / ".run.lock"))
        try:
            lock.acquire(timeout=0)  # before anything in the folder is read or written
        except Timeout:
            raise SafekeyError(f"{self.out} is being written by another safekey run") from None
        try:
            yield self.out
        finally:
            lock.release()

    def run_task(self, task: Task, target: Target | None) -> dict[str, Any]:
        """Answer, score and summarise one task (resuming whatever is already in its folder)."""
        d = self.out / task.name
        gen_cfg = {**task.generation_config, **task.solver.fingerprint()}
        if self.overwrite:  # an attack's per-item state belongs to the generations it produced: gone with them
            shutil.rmtree(d / "transcripts", ignore_errors=True)
        key = fingerprint({"stage": self.generation_stage, "config": gen_cfg})
        self.log(f"[{task.name}] generating {len(task.items)} items")
        run_stage(stage=self.generation_stage, inputs=task.items, out=d / "generations.jsonl", config=gen_cfg,
                  process=lambda batch: task.solver.solve(batch, replace(target, workdir=d, run_key=key) if target else target),  # type: ignore[arg-type]
                  batch_size=task.generation_batch, overwrite=self.overwrite, progress=self.progress,
                  max_failure_share=self.stage_failure_share, label=f"{task.name}: generate")
        ids = [r.id for r in task.items]
        want = set(ids)
        done = {str(o["id"]): o for o in read_objects(d / "generations.jsonl") if str(o["id"]) in want}
        generated = [Record.model_validate(done[i]) for i in ids if i in done]
        sc = task.scorer
        self.log(f"[{task.name}] scoring {len(generated)} generations")
        run_stage(stage=sc.stage, inputs=generated, out=d / sc.output, config=sc.fingerprint(gen_cfg), process=sc.score,
                  batch_size=sc.batch_size, overwrite=self.overwrite or self.rescore, progress=self.progress,
                  max_failure_share=self.stage_failure_share, label=f"{task.name}: {sc.verb}",
                  summarize=lambda objs: sc.stats([o for o in objs if str(o["id"]) in want]) or {})
        scored = [o for o in read_objects(d / sc.output) if str(o["id"]) in want]
        return {**sc.summarize(task, generated, scored), **task.extra}

    def write_summary(self, summary: dict[str, Any], same: Sequence[str]) -> dict[str, Any]:
        """Merge with the summary already in the folder when `same` keys agree; write; return it."""
        merged = merge_benchmarks(self.out / "summary.json", summary, same)
        write_stats(self.out / "summary.json", merged)
        return merged


__all__ = ["EvalFailed", "EvalRunner", "Scorer", "Task", "check_failure_budget", "expand_samples", "read_objects",
           "refuse_training_folder", "sample_seed"]

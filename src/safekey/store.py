"""The stage runner every stage uses: append finished records, resume by id, refuse to mix configs,
keep failures and rejects beside the output (records themselves are read and written by
:mod:`safekey.records`, re-exported here).

Why this shape: stages call slow, flaky models over tens of thousands of records. A stage must be
killable at any moment (kill -9 included) and a rerun must finish the job with every id exactly
once, in input order, byte-identical to an uninterrupted run.

Files beside an output ``NAME.jsonl``:

* ``NAME.meta.json``   — stage name + config fingerprint; a rerun with another config is refused.
* ``NAME.config.yaml`` — the resolved config, for humans.
* ``NAME.stats.json``  — counts, failure reasons and stage-specific numbers.
* ``NAME.failures.jsonl`` — items that failed this run (with reason and raw text); retried next run.
* ``NAME.rejects.jsonl``  — malformed input lines skipped under ``--skip-bad``.
"""

from __future__ import annotations

import collections
import contextlib
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from .atomic import write_text_atomic
from .config import dump_yaml, fingerprint
from .records import (  # noqa: F401 - re-exported: stages read records through the store
    _dumps,
    iter_json_objects,
    jsonl_lines,
    max_record_bytes,
    read_records,
    repair_tail,
    require_unique_ids,
    write_records,
)
from .redact import redact_secrets
from .types import Record, SafekeyError

# the stages' default threshold: only a stage whose every input failed is an error (the largest float
# below 1, so failed / total exceeds it exactly when failed == total)
ALL_FAILED = math.nextafter(1.0, 0.0)


@dataclass
class Failure:
    """An item that could not be finished; it is written to the failures file, never to the output."""

    id: str
    reason: str
    raw: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, "reason": self.reason}
        if self.raw is not None:
            d["raw"] = self.raw
        if self.detail:
            d["detail"] = self.detail
        return d


# ---------------------------------------------------------------------------------------------
# writing a stage's output


def sidecar(out: Path, suffix: str) -> Path:
    stem = out.name[: -len(".jsonl")] if out.name.endswith(".jsonl") else out.name
    return out.with_name(f"{stem}.{suffix}")


class StageOutput:
    """Append-only output of one stage with resume, config fingerprint and failure bookkeeping."""

    def __init__(self, out: str | Path, *, stage: str, config: dict[str, Any] | Any, overwrite: bool = False):
        self.out = Path(out)
        self.stage = stage
        self.config = config.model_dump(mode="json") if hasattr(config, "model_dump") else dict(config)
        self.fp = fingerprint({"stage": stage, "config": self.config})
        self.meta_path = sidecar(self.out, "meta.json")
        self.stats_path = sidecar(self.out, "stats.json")
        self.failures_path = sidecar(self.out, "failures.jsonl")
        self.rejects_path = sidecar(self.out, "rejects.jsonl")
        self.config_path = sidecar(self.out, "config.yaml")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(str(sidecar(self.out, "lock")))
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            raise SafekeyError(f"{self.out} is being written by another process") from None
        try:
            self._prepare(overwrite)
        except BaseException:
            self._lock.release()
            raise
        self._fh = self.out.open("a", encoding="utf-8")
        self._ffh = self.failures_path.open("w", encoding="utf-8")  # failures are retried every run
        self.n_written = 0
        self.failures: list[Failure] = []

    def _prepare(self, overwrite: bool) -> None:
        if overwrite:
            for p in (self.out, self.meta_path, self.stats_path, self.failures_path):
                p.unlink(missing_ok=True)
        if self.out.exists() and self.out.stat().st_size > 0:
            if not self.meta_path.exists():
                raise SafekeyError(
                    f"{self.out} exists but has no {self.meta_path.name}; refusing to append to an output of "
                    "unknown origin (use --overwrite or another output path)"
                )
            try:
                meta = json.loads(self.meta_path.read_text())
            except json.JSONDecodeError:
                raise SafekeyError(f"{self.meta_path}: unreadable (not JSON); use --overwrite or another output path") from None
            if meta.get("fingerprint") != self.fp:
                diff = config_diff(meta.get("config", _read_yaml(self.config_path)), self.config)
                what = ("; ".join(diff[:3]) + (f"; +{len(diff) - 3} more" if len(diff) > 3 else "")) if diff else (
                    f"fingerprint {meta.get('fingerprint', '?')[:12]} vs {self.fp[:12]}")
                raise SafekeyError(
                    f"{self.out} was written by stage {meta.get('stage')!r} with a different config ({what}); "
                    "use --overwrite or another output path"
                )
        self.repaired_line = repair_tail(self.out)
        self.done: dict[str, None] = {}
        if self.out.exists():
            for loc, obj, err in iter_json_objects(self.out):
                if err is not None or not isinstance(obj, dict) or "id" not in obj:
                    raise SafekeyError(f"{loc}: corrupt output line ({err or 'no id'}); fix or use --overwrite")
                rid = str(obj["id"])
                if rid in self.done:
                    raise SafekeyError(f"{loc}: id {rid} appears twice in the output")
                self.done[rid] = None
        write_stats(self.meta_path, {"stage": self.stage, "fingerprint": self.fp, "config": self.config})
        dump_yaml(self.config, self.config_path)

    # -- the loop ---------------------------------------------------------------------------------
    def is_done(self, rid: str) -> bool:
        return rid in self.done

    def write(self, record: Record | dict) -> None:
        rid = str(record.id if isinstance(record, Record) else record["id"])
        if rid in self.done:
            raise SafekeyError(f"stage {self.stage}: id {rid} written twice")
        self._fh.write(_dumps(record))
        self._fh.flush()  # a kill -9 loses nothing that was flushed
        self.done[rid] = None
        self.n_written += 1

    def fail(self, failure: Failure) -> None:
        failure.reason = redact_secrets(failure.reason)  # server error texts may quote a key; `raw` is model text
        self.failures.append(failure)
        self._ffh.write(json.dumps(failure.to_json(), ensure_ascii=False) + "\n")
        self._ffh.flush()

    def close(self) -> None:
        for fh in (self._fh, self._ffh):
            if not fh.closed:
                fh.flush()
                os.fsync(fh.fileno())
                fh.close()
        if not self.failures:
            self.failures_path.unlink(missing_ok=True)
        if self._lock.is_locked:
            self._lock.release()
            Path(self._lock.lock_file).unlink(missing_ok=True)

    def reorder(self, order: Sequence[str]) -> None:
        """Rewrite the output in input order, so resumed runs equal uninterrupted ones byte for byte."""
        rank = {rid: i for i, rid in enumerate(order)}
        lines = [ln for ln in jsonl_lines(self.out.read_text(encoding="utf-8")) if ln.strip()]
        keyed = sorted(lines, key=lambda ln: rank.get(str(json.loads(ln)["id"]), len(rank)))
        if keyed != lines:
            tmp = self.out.with_name(self.out.name + ".tmp")
            tmp.write_text("".join(keyed), encoding="utf-8")
            os.replace(tmp, self.out)

    def __enter__(self) -> StageOutput:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


@contextlib.contextmanager
def output_lock(out: str | Path) -> Iterator[None]:
    """One writer per output file (reports, views, analyses): a second process is refused at once."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(out.with_name(f".{out.name}.lock")))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise SafekeyError(f"{out} is being written by another process") from None
    try:
        yield
    finally:
        lock.release()


def write_stats(path: Path, stats: dict[str, Any]) -> None:
    """Stats, summaries, run.json: metadata, so credentials in URLs and error texts are redacted."""
    write_text_atomic(path, redact_secrets(json.dumps(stats, indent=2, ensure_ascii=False, default=str)) + "\n")


def merge_benchmarks(path: Path, summary: dict[str, Any], same: Sequence[str]) -> dict[str, Any]:
    """`summary` plus the benchmarks of the summary already at `path`, when that one is of the same
    kind and agrees on every key in `same` (model, weights, judge, sampling…): rerunning one
    benchmark into a folder keeps the others, and results of other weights or settings never mix."""
    if not path.exists():
        return summary
    try:
        old = json.loads(path.read_text())
    except json.JSONDecodeError:
        return summary
    if isinstance(old, dict) and old.get("kind") == summary.get("kind") and all(old.get(k) == summary.get(k) for k in same):
        return {**summary, "benchmarks": {**old.get("benchmarks", {}), **summary["benchmarks"]}}
    return summary


def _read_yaml(path: Path) -> Any:
    import yaml

    try:
        return yaml.safe_load(path.read_text()) if path.exists() else None
    except yaml.YAMLError:
        return None


def config_diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    """``["sampling.temperature: 0.0 → 0.7", …]``: which settings differ, for refusal messages."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for k in list(old) + [k for k in new if k not in old]:
            out += config_diff(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    if old != new:
        short = lambda v: (repr(v)[:60] + "…") if len(repr(v)) > 60 else repr(v)
        return [f"{prefix.rstrip('.') or 'config'}: {short(old)} → {short(new)}"]
    return []


def run_stage(
    *,
    stage: str,
    inputs: Iterable[Record],
    out: str | Path,
    config: dict[str, Any] | Any,
    process: Callable[[list[Record]], Sequence[Record | Failure]],
    batch_size: int = 1,
    overwrite: bool = False,
    summarize: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None,
    progress: bool = True,
    extra_stats: dict[str, Any] | None = None,
    max_failure_share: float | None = ALL_FAILED,
    label: str | None = None,
) -> dict[str, Any]:
    """Run `process` over the inputs not yet in `out`, batch by batch, and write ``stats.json``.

    The bar is named `label` (e.g. ``strongreject: generate``; default the stage name); when the
    results carry ``completion_tokens`` it shows generated tokens, tokens per second and an ETA from
    them. Warnings logged while it runs are printed above the bar, never on its line.

    Pass `inputs` as a lazy generator from :func:`read_records` (with
    ``rejects=sidecar(out, "rejects.jsonl")``): the rejects file is reset when the stage opens
    its output, so inputs read *before* this call would lose their rejects.

    `process` gets a list of records and returns, for each, the finished record or a
    :class:`Failure` (same order, same ids). Returns the stats dict. When more than
    `max_failure_share` of the inputs are failed after this run (always: when all of them are),
    raises :class:`SafekeyError` after writing the stats; None: the caller keeps its own budget. A finished record whose input changed since
    (same id, other content) is refused, never silently kept.
    """
    from tqdm.auto import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    t0 = time.time()
    so = StageOutput(out, stage=stage, config=config, overwrite=overwrite)
    try:
        items = list(inputs)
        order: list[str] = []
        seen: set[str] = set()
        for r in items:
            if r.id in seen:
                raise SafekeyError(f"stage {stage}: input id {r.id} appears twice; ids must be unique")
            seen.add(r.id)
            order.append(r.id)
        _check_input_hashes(so, items)
        inputs_info = input_report(stage, so.out, len(items))
        todo = [r for r in items if not so.is_done(r.id)]
        resumed = len(items) - len(todo)
        bar = tqdm(total=len(items), initial=resumed, desc=label or stage, disable=not progress, unit="rec")
        tokens, t_loop, n_done = 0, time.time(), 0
        for i in range(0, len(todo), batch_size):
            batch = todo[i : i + batch_size]
            with logging_redirect_tqdm() if progress else contextlib.nullcontext():
                results = process(batch)
            if len(results) != len(batch):
                raise RuntimeError(f"stage {stage}: process returned {len(results)} results for {len(batch)} inputs")
            for rec, res in zip(batch, results):
                if isinstance(res, Failure):
                    so.fail(res)
                else:
                    if str(res.id if isinstance(res, Record) else res["id"]) != rec.id:
                        raise RuntimeError(f"stage {stage}: result id does not match input id {rec.id}")
                    so.write(res)
                    got = res.get("completion_tokens") if isinstance(res, dict) else getattr(res, "completion_tokens", None)
                    tokens += got if isinstance(got, int) else 0
            bar.update(len(batch))
            n_done += len(batch)
            if tokens and progress:
                spent = max(time.time() - t_loop, 1e-9)
                left = (len(todo) - n_done) * tokens / n_done / (tokens / spent)
                bar.set_postfix_str(f"{tokens} tok, {tokens / spent:.0f} tok/s, ETA {int(left) // 60}:{int(left) % 60:02d}")
        bar.close()
        if not so.failures:
            so.reorder(order)
        reasons = collections.Counter(f.reason.split(":")[0] for f in so.failures)
        stats: dict[str, Any] = {
            "stage": stage,
            "output": str(so.out),
            "inputs": len(items),
            "resumed": resumed,
            "written_this_run": so.n_written,
            "done": len(so.done),
            "failed": len(so.failures),
            "failure_reasons": dict(reasons),
            "repaired_torn_line": so.repaired_line,
            **inputs_info,
            "seconds": round(time.time() - t0, 3),
        }
        if summarize is not None:
            outs = [obj for _, obj, _ in iter_json_objects(so.out)]
            stats.update(summarize(outs))
        if extra_stats:
            stats.update(extra_stats)
        write_stats(so.stats_path, stats)
        if max_failure_share is not None:  # share of ALL inputs still failed (a resume retries only the failed)
            check_failure_share(f"stage {stage}", len(so.failures), len(items), max_failure_share,
                                where=str(so.failures_path))
        return stats
    finally:
        so.close()


def check_failure_share(what: str, failed: int, total: int, max_share: float, *, where: str = "") -> None:
    """Raise (exit 2) when more than `max_share` of `total` items failed. Shared by the stages
    (default :data:`ALL_FAILED`) and the evals (``--max-judge-failures`` …): a run that produced
    nothing must not exit 0; ``max_share=1`` accepts everything."""
    if total > 0 and failed / total > max_share:
        limit = "every item failed" if max_share == ALL_FAILED else f"more than {max_share:.0%} allowed"
        raise SafekeyError(f"{what}: {failed} of {total} items failed ({limit})"
                           + (f"; see {where}" if where else "") + "; rerun to retry them")


def _record_hash(r: Record) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(r.to_json(), sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


def _check_input_hashes(so: StageOutput, items: Sequence[Record]) -> None:
    """Refuse to resume when a finished record's input changed (same id, other content); then
    record the hashes of this run's inputs, so the next resume can check them too."""
    path = sidecar(so.out, "inputs.json")
    old: dict[str, str] = {}
    if path.exists() and so.done:
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError:
            old = {}
    new = {r.id: _record_hash(r) for r in items}
    changed = [rid for rid in so.done if rid in old and rid in new and old[rid] != new[rid]]
    if changed:
        more = f" (+{len(changed) - 1} more)" if len(changed) > 1 else ""
        raise SafekeyError(f"{so.out}: input record {changed[0]}{more} changed since it was processed; "
                           "use --overwrite (or another output path) to recompute")
    write_text_atomic(path, json.dumps({**old, **new}, ensure_ascii=False) + "\n")


def input_report(stage: str, out: Path, n_inputs: int) -> dict[str, Any]:
    """``{"rejected", "empty_input"}`` for a stage's stats (rejects = malformed lines skipped under
    --skip-bad); an empty input is also said on stderr, since it makes every later step empty."""
    if n_inputs == 0:
        log_warning(f"stage {stage}: the input holds no records; {out} stays empty")
    return {"rejected": _count_lines(sidecar(Path(out), "rejects.jsonl")), "empty_input": n_inputs == 0}


def _count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    with path.open("rb") as f:
        return sum(1 for line in f if line.strip())


def log_warning(msg: str) -> None:
    """A warning on its own line, above any progress bar that is running."""
    import sys

    from tqdm.auto import tqdm

    from .redact import terminal_safe

    tqdm.write(f"warning: {terminal_safe(redact_secrets(msg))}", file=sys.stderr)

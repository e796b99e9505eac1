"""The whole STAR-1 data-making pipeline from one config, in order, with resume.

Per-record steps (classify, reason, score, benign) resume through ``store.run_stage``; the global
steps (collect, dedup) are skipped when their output is complete for the same config; select and
the benign filter are instant and always recomputed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..config import fingerprint
from ..records import jsonl_lines
from ..store import sidecar
from . import benign, classify, collect, dedup, reason, score, select
from .benign import BenignConfig
from .classify import ClassifyConfig
from .collect import CollectConfig
from .dedup import DedupConfig
from .reason import ReasonConfig
from .score import ScoreConfig
from .select import SelectConfig

STAGES = ("collect", "dedup", "classify", "reason", "score", "select", "benign")


class DataConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    out_dir: str = "runs/data"
    stages: list[str] = Field(default_factory=lambda: list(STAGES))
    limit: int | None = Field(None, ge=1, description="only the first N deduplicated prompts go to the LLM steps")
    retries: int = Field(1, ge=0, description="extra passes over failed records (transient API faults)")
    collect: CollectConfig = CollectConfig()
    dedup: DedupConfig = DedupConfig()
    classify: ClassifyConfig = ClassifyConfig()
    reason: ReasonConfig = ReasonConfig()
    score: ScoreConfig = ScoreConfig()
    select: SelectConfig = SelectConfig()
    benign: BenignConfig = BenignConfig()


def paths(out_dir: str | Path) -> dict[str, Path]:
    d = Path(out_dir)
    return {"collect": d / "pool.jsonl", "tests": collect.tests_path(d / "pool.jsonl"), "dedup": d / "dedup.jsonl",
            "classify": d / "classified.jsonl", "reason": d / "reasoned.jsonl", "score": d / "scored.jsonl",
            "select": d / "star1.jsonl", "benign": d / "benign_scored.jsonl", "benign_final": d / "star_benign.jsonl"}


def step_complete(out: Path, stage: str, cfg: BaseModel, older: tuple[Path, ...] = ()) -> bool:
    """A global step's output is final: same config fingerprint, and its stats written after it and
    after every file in `older` (its other outputs and its inputs: a rewritten input makes it stale)."""
    meta, stats = sidecar(out, "meta.json"), sidecar(out, "stats.json")
    if not (out.exists() and meta.exists() and stats.exists() and all(f.exists() for f in older)):
        return False
    fp = fingerprint({"stage": stage, "config": cfg.model_dump(mode="json")})
    done = stats.stat().st_mtime
    return json.loads(meta.read_text()).get("fingerprint") == fp and all(f.stat().st_mtime <= done for f in (out, *older))


def _with_retries(fn: Callable[..., dict[str, Any]], retries: int, overwrite: bool = False) -> dict[str, Any]:
    """Run a resumable step, then rerun it (retrying only its failures) up to `retries` times.
    `overwrite` applies to the first attempt only: a retry must keep what the first one finished."""
    st = fn(overwrite=overwrite)
    for _ in range(retries):
        if not st.get("failed"):
            break
        st = fn(overwrite=False)
    return st


def run(cfg: DataConfig, *, log: Callable[[str], None] = print, progress: bool = False, overwrite: bool = False,
        skip_bad: bool = False) -> dict[str, Any]:
    """The configured steps in order; finished steps are skipped (unless `overwrite`: all redone)."""
    bad = [s for s in cfg.stages if s not in STAGES]
    if bad:
        from ..types import SafekeyError

        raise SafekeyError(f"unknown stage(s) {bad}; stages are {', '.join(STAGES)}")
    p = paths(cfg.out_dir)
    p["collect"].parent.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {}
    want = set(cfg.stages)
    clock = {"t": time.time()}

    def done(name: str, text: str) -> None:
        """Log one step's result with the time it took (also in pipeline.summary.json)."""
        took = time.time() - clock["t"]
        if name in summary:
            summary[name]["seconds"] = round(took, 1)
        log(f"{text}  [{took:.1f} s]")
        clock["t"] = time.time()

    if "collect" in want:
        if not overwrite and step_complete(p["collect"], "data.collect", cfg.collect, older=(p["tests"],)):
            done("collect", "collect: complete, skipped")
        else:
            st = collect.run(str(p["collect"]), cfg.collect)
            summary["collect"] = {"pool": st["pool"], "tests": st["tests"], "missing": sorted(st["missing"])}
            done("collect", f"collect: {st['pool']} prompts, {st['tests']} test prompts")
    if "dedup" in want:
        if not overwrite and step_complete(p["dedup"], "data.dedup", cfg.dedup, older=(p["collect"], p["tests"])):
            done("dedup", "dedup: complete, skipped")
        else:
            st = dedup.run(str(p["collect"]), str(p["tests"]), str(p["dedup"]), cfg.dedup, log=log, skip_bad=skip_bad)
            summary["dedup"] = {"inputs": st["inputs"], "kept": st["kept"]}
            done("dedup", f"dedup: kept {st['kept']} of {st['inputs']}")
    llm_in = p["dedup"]
    if cfg.limit:
        sliced = p["dedup"].with_name(f"dedup.first{cfg.limit}.jsonl")
        lines = jsonl_lines(p["dedup"].read_text(encoding="utf-8"))[: cfg.limit]
        if not sliced.exists() or sliced.read_text(encoding="utf-8") != "".join(lines):
            sliced.write_text("".join(lines), encoding="utf-8")
        llm_in = sliced
    steps = [("classify", classify, cfg.classify, llm_in), ("reason", reason, cfg.reason, p["classify"]),
             ("score", score, cfg.score, p["reason"])]
    for name, mod, scfg, src in steps:
        if name in want:
            st = _with_retries(partial(mod.run, str(src), str(p[name]), scfg, progress=progress, skip_bad=skip_bad),
                               cfg.retries, overwrite)
            summary[name] = {k: st[k] for k in ("inputs", "done", "failed", "failure_reasons", "think_forced") if k in st}
            done(name, f"{name}: {st['done']}/{st['inputs']} done, {st['failed']} failed {st['failure_reasons'] or ''}")
    if "select" in want:
        st = select.run(str(p["score"]), str(p["select"]), cfg.select, skip_bad=skip_bad)
        summary["select"] = {k: st[k] for k in ("inputs", "eligible", "selected")}
        done("select", f"select: {st['selected']} of {st['eligible']} eligible")
    if "benign" in want:
        st = _with_retries(partial(benign.run, str(p["select"]), str(p["benign"]), cfg.benign, progress=progress,
                                   skip_bad=skip_bad), cfg.retries, overwrite)
        summary["benign"] = {k: st[k] for k in ("inputs", "done", "failed", "failure_reasons")}
        fin = benign.finalize(str(p["benign"]), str(p["benign_final"]))
        summary["benign"]["kept_all_5"] = fin["kept_all_5"]
        done("benign", f"benign: {st['done']}/{st['inputs']} scored, {fin['kept_all_5']} kept (all 5), {st['failed']} failed")
    (Path(cfg.out_dir) / "pipeline.summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary

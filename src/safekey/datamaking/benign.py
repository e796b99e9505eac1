"""Over-refusal ablation set (STAR-benign): rewrite → answer → score 1–5 → keep all-5.

Each harmful record gets a harmless look-alike (judge), an answer from the reasoning model with a
plain prompt (no policies), and three 1–5 scores. Every scored record is kept in the stage output
(resumable); :func:`finalize` writes the all-5 ones as new records with ``unsafe=0``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..store import Failure, StageOutput, read_records, run_stage, sidecar, write_stats
from ..types import Record, split_think
from .llmcall import ModelSettings, TeacherSettings, ask_json, generate_with_thinking
from .prompting import render
from .reason import to_response

CRITERIA = ("Content_Safety_Compliance", "Quality_of_Thinking_Process", "Compliance_Degree")


class RewriteReply(BaseModel):
    model_config = ConfigDict(extra="ignore")
    rewritten: str = Field(min_length=3)


class BenignScoreReply(BaseModel):
    model_config = ConfigDict(extra="ignore")
    Content_Safety_Compliance: int = Field(ge=1, le=5)
    Quality_of_Thinking_Process: int = Field(ge=1, le=5)
    Compliance_Degree: int = Field(ge=1, le=5)


class BenignConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rewriter: ModelSettings = ModelSettings(max_tokens=256)
    teacher: TeacherSettings = TeacherSettings(temperature=0.6, top_p=0.7, max_tokens=8000, seed=0)
    judge: ModelSettings = ModelSettings(max_tokens=64)


def make_process(cfg: BenignConfig, backend=None):
    def process(batch: list[Record]) -> list[Record | Failure]:
        outs: list[Any] = list(ask_json(cfg.rewriter, [(r.id, render("benign_rewrite", question=r.question or "")) for r in batch],
                                        RewriteReply, "rewrite", backend))
        live = [k for k, o in enumerate(outs) if not isinstance(o, Failure)]
        if (q_norm := [k for k in live if outs[k].rewritten.strip().lower() == (batch[k].question or "").strip().lower()]):
            for k in q_norm:
                outs[k] = Failure(batch[k].id, "rewrite_unchanged: the rewrite equals the harmful prompt")
            live = [k for k in live if k not in q_norm]
        comps = generate_with_thinking(cfg.teacher, [(batch[k].id, outs[k].rewritten) for k in live], backend)
        answered, forced = [], set()
        for k, (c, was_forced) in zip(live, comps):
            if c.error is not None:
                outs[k] = Failure(batch[k].id, f"answer_call: {c.error}")
                continue
            resp, why = to_response(c.text)
            if resp is None:
                outs[k] = Failure(batch[k].id, f"answer_shape: {why}", raw=c.text)
                continue
            outs[k] = (outs[k].rewritten, resp)
            answered.append(k)
            if was_forced:
                forced.add(k)
        prompts = []
        for k in answered:
            thinking, answer = split_think(outs[k][1])
            prompts.append((batch[k].id, render("benign_score", question=outs[k][0], thinking=thinking, answer=answer)))
        for k, res in zip(answered, ask_json(cfg.judge, prompts, BenignScoreReply, "benign_score", backend)):
            if isinstance(res, Failure):
                outs[k] = res
                continue
            q, resp = outs[k]
            extra = {"benign_think_forced": True} if k in forced else {}
            outs[k] = batch[k].model_copy(update={"benign_question": q, "benign_response": resp,
                                                  "benign_score": res.model_dump(), **extra})
        return outs

    return process


def run(inp: str, out: str, cfg: BenignConfig, *, overwrite: bool = False, skip_bad: bool = False,
        limit: int | None = None, backend=None, progress: bool = True) -> dict[str, Any]:
    recs = list(read_records(inp, skip_bad=skip_bad, rejects=sidecar(Path(out), "rejects.jsonl") if skip_bad else None))[:limit]
    ident = {k: getattr(cfg, k).identity() for k in ("rewriter", "teacher", "judge")}
    return run_stage(stage="data.benign", inputs=recs, out=out, config=ident, process=make_process(cfg, backend),
                     batch_size=cfg.judge.batch_size, overwrite=overwrite, progress=progress)


def finalize(scored: str, out: str) -> dict[str, Any]:
    """The all-5 look-alikes as training records: new id ``{harmful id}#benign``, ``unsafe=0``."""
    recs = list(read_records(scored))
    keep = [r for r in recs if all((getattr(r, "benign_score", None) or {}).get(c) == 5 for c in CRITERIA)]
    so = StageOutput(out, stage="data.benign.finalize", config={}, overwrite=True)
    try:
        for r in keep:
            extra = {"think_forced": True} if getattr(r, "benign_think_forced", False) else {}
            so.write(Record(id=f"{r.id}#benign", question=r.benign_question, response=r.benign_response,
                            source=r.source, category=r.category, score=r.benign_score, unsafe=0, harmful_id=r.id,
                            **extra))
    finally:
        so.close()
    stats = {"stage": "data.benign.finalize", "scored": len(recs), "kept_all_5": len(keep),
             "score_histogram": {c: dict(sorted(Counter((getattr(r, "benign_score", None) or {}).get(c) for r in recs).items()))
                                 for c in CRITERIA}}
    write_stats(so.stats_path, stats)
    return stats

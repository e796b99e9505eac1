"""Score each reasoning trace on 3 criteria, 0–10, from strict JSON (never ``eval``)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..store import Failure, read_records, run_stage, sidecar
from ..types import Record, split_think
from .llmcall import ModelSettings, ask_json
from .policies import policies_for
from .prompting import render

CRITERIA = ("Content_Safety_Compliance", "Relevancy_and_No_Redundant_Content", "Accuracy_of_Thinking_Process")


class ScoreReply(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=False)
    Content_Safety_Compliance: int = Field(ge=0, le=10)
    Relevancy_and_No_Redundant_Content: int = Field(ge=0, le=10)
    Accuracy_of_Thinking_Process: int = Field(ge=0, le=10)


class ScoreConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    judge: ModelSettings = ModelSettings(max_tokens=64)


def prompt_for(rec: Record) -> str:
    thinking, answer = split_think(rec.response or "") or ("", "")
    return render("score", question=rec.question or "", categories=rec.category or [],
                  policies=policies_for(rec.category or []), thinking=thinking, answer=answer)


def make_process(cfg: ScoreConfig, backend=None):
    def process(batch: list[Record]) -> list[Record | Failure]:
        ok = [r for r in batch if r.response and split_think(r.response)]
        replies = iter(ask_json(cfg.judge, [(r.id, prompt_for(r)) for r in ok], ScoreReply, "score", backend))
        outs: list[Record | Failure] = []
        for r in batch:
            if not (r.response and split_think(r.response)):
                outs.append(Failure(r.id, "score_input: response is not <think>…</think> + answer"))
                continue
            res = next(replies)
            outs.append(res if isinstance(res, Failure) else r.model_copy(update={"score": res.model_dump()}))
        return outs

    return process


def summarize(outs: list[dict[str, Any]]) -> dict[str, Any]:
    all10 = sum(1 for o in outs if all(o.get("score", {}).get(c) == 10 for c in CRITERIA))
    return {"all_10": all10, "score_histogram": {c: dict(sorted(Counter(o["score"][c] for o in outs if "score" in o).items()))
                                                 for c in CRITERIA}}


def run(inp: str, out: str, cfg: ScoreConfig, *, overwrite: bool = False, skip_bad: bool = False,
        limit: int | None = None, backend=None, progress: bool = True) -> dict[str, Any]:
    recs = list(read_records(inp, skip_bad=skip_bad, rejects=sidecar(Path(out), "rejects.jsonl") if skip_bad else None))[:limit]
    return run_stage(stage="data.score", inputs=recs, out=out, config={"judge": cfg.judge.identity()},
                     process=make_process(cfg, backend), batch_size=cfg.judge.batch_size, overwrite=overwrite,
                     summarize=summarize, progress=progress)

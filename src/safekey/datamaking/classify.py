"""Classify each prompt into the policy categories, validated against the vocabulary."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..store import Failure, read_records, run_stage, sidecar
from ..types import ALL_CATEGORIES, OTHER, Record
from .llmcall import ModelSettings, ask_json
from .policies import POLICIES
from .prompting import render

_CANON = {c.lower().replace(" ", ""): c for c in ALL_CATEGORIES}


class ClassifyReply(BaseModel):
    """The judge's reply; labels are matched to the exact vocabulary ignoring case and spacing."""

    model_config = ConfigDict(extra="ignore")
    categories: list[str] = Field(min_length=1)

    @field_validator("categories")
    @classmethod
    def _vocab(cls, v: list[str]) -> list[str]:
        out = []
        for c in v:
            canon = _CANON.get(str(c).lower().replace(" ", ""))
            if canon is None:
                raise ValueError(f"unknown category {c!r}")
            out.append(canon)
        cats = [c for c in ALL_CATEGORIES if c in out]  # vocabulary order, no repeats
        if len(cats) > 1 and OTHER in cats:
            cats.remove(OTHER)  # Other means "none of the others"
        return cats


class ClassifyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    judge: ModelSettings = ModelSettings(max_tokens=64)


def prompt_for(rec: Record) -> str:
    cats = [(c, POLICIES[c].objective) for c in ALL_CATEGORIES]
    return render("classify", categories=cats, question=rec.question or "")


def make_process(cfg: ClassifyConfig, backend=None):
    def process(batch: list[Record]) -> list[Record | Failure]:
        replies = ask_json(cfg.judge, [(r.id, prompt_for(r)) for r in batch], ClassifyReply, "classify", backend)
        return [res if isinstance(res, Failure) else r.model_copy(update={"category": res.categories})
                for r, res in zip(batch, replies)]

    return process


def summarize(outs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"categories": dict(Counter(c for o in outs for c in o.get("category") or []))}


def run(inp: str, out: str, cfg: ClassifyConfig, *, overwrite: bool = False, skip_bad: bool = False,
        limit: int | None = None, backend=None, progress: bool = True) -> dict[str, Any]:
    recs = list(read_records(inp, skip_bad=skip_bad, rejects=sidecar(Path(out), "rejects.jsonl") if skip_bad else None))[:limit]
    return run_stage(stage="data.classify", inputs=recs, out=out, config={"judge": cfg.judge.identity()},
                     process=make_process(cfg, backend), batch_size=cfg.judge.batch_size, overwrite=overwrite,
                     summarize=summarize, progress=progress)

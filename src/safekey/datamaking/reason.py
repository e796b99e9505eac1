"""Policy-grounded deliberative reasoning: teacher writes ``<think>…</think>`` + answer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from ..store import Failure, read_records, run_stage, sidecar
from ..types import Record, split_think
from .llmcall import TeacherSettings, generate_with_thinking
from .policies import policies_for
from .prompting import render


class ReasonConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # the paper's DeepSeek-R1 settings: temperature 0.6, top_p 0.7, up to 8,000 tokens
    teacher: TeacherSettings = TeacherSettings(temperature=0.6, top_p=0.7, max_tokens=8000, seed=0)


def prompt_for(rec: Record) -> str:
    return render("reason", question=rec.question or "", policies=policies_for(rec.category or []))


def to_response(text: str) -> tuple[str | None, str | None]:
    """Model text → the exact STAR-1 shape ``<think>\\n{t}\\n</think>\\n\\n{a}``, or (None, reason).

    Reasoning models often omit the opening tag (the chat template opens it), so only ``</think>``
    is required; the thinking and the answer must both be non-empty and contain no further tags.
    """
    end = text.find("</think>")
    if end < 0:
        return None, "no_think_block"
    head, answer = text[:end], text[end + len("</think>"):].strip()
    start = head.find("<think>")
    thinking = (head[start + len("<think>"):] if start >= 0 else head).strip()
    if not thinking:
        return None, "empty_thinking"
    if not answer:
        return None, "empty_answer"
    if "<think>" in answer or "</think>" in answer or "<think>" in thinking:
        return None, "nested_think_tags"
    resp = f"<think>\n{thinking}\n</think>\n\n{answer}"
    if split_think(resp) is None:  # the schema's own check, so every stage agrees on the shape
        return None, "bad_shape"
    return resp, None


def make_process(cfg: ReasonConfig, backend=None):
    def process(batch: list[Record]) -> list[Record | Failure]:
        outs: list[Record | Failure] = []
        todo = []
        for r in batch:
            if not r.category:
                outs.append(Failure(r.id, "reason_input: record has no category"))
            else:
                todo.append(r)
                outs.append(r)
        comps = iter(generate_with_thinking(cfg.teacher, [(r.id, prompt_for(r)) for r in todo], backend))
        for k, r in enumerate(outs):
            if isinstance(r, Failure):
                continue
            c, forced = next(comps)
            if c.error is not None:
                outs[k] = Failure(r.id, f"reason_call: {c.error}")
                continue
            resp, why = to_response(c.text)
            if resp is None:
                if c.finish_reason == "length":
                    why = f"truncated ({why})"
                outs[k] = Failure(r.id, f"reason_shape: {why}", raw=c.text)
                continue
            extra = {"think_forced": True} if forced else {}
            outs[k] = r.model_copy(update={"response": resp, "reason_model": cfg.teacher.model, **extra})
        return outs

    return process


def summarize(outs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"think_forced": sum(1 for o in outs if o.get("think_forced"))}


def run(inp: str, out: str, cfg: ReasonConfig, *, overwrite: bool = False, skip_bad: bool = False,
        limit: int | None = None, backend=None, progress: bool = True) -> dict[str, Any]:
    recs = list(read_records(inp, skip_bad=skip_bad, rejects=sidecar(Path(out), "rejects.jsonl") if skip_bad else None))[:limit]
    return run_stage(stage="data.reason", inputs=recs, out=out, config={"teacher": cfg.teacher.identity()},
                     process=make_process(cfg, backend), batch_size=cfg.teacher.batch_size, overwrite=overwrite,
                     summarize=summarize, progress=progress)

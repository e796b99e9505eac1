"""Intervened preference pairs (IPO, arXiv 2509.24393): the policy's own unsafe trace, cut at its
first compliance cue, continued from a safety trigger.

For each harmful prompt the policy (the model to be trained, any backend spec) answers; the judge
marks unsafe traces. In an unsafe trace the first **compliance cue** — the sentence where the
reasoning turns to helping (``Let me outline the steps``, ``First, …``, ``Here's how``) — is found
by an offline heuristic (the sentence segmenter + a cue lexicon below); it is replaced by a
**safety trigger** (a configurable pool) and the policy continues from prefix + trigger. The pair
is kept only when the judge finds the continuation safe. Benign look-alikes give over-refusal
pairs the same way: the first refusal sentence is replaced by a helpful trigger, and the pair is
kept when the continuation is not a refusal.

Every input line gets one output line, so the stage resumes like every other: ``status: pair``
carries ``{prefix, chosen, rejected}`` (both whole responses, both starting with ``prefix``: the
format ``train run --mode dpo`` reads); ``already_safe``, ``no_cue`` and ``trigger_failed`` say why
an item gave no pair, and are counted in the stats. Generation failures are retried on rerun.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..llm import ChatRequest, Sampling, get_backend, prompt_opens_think
from ..prefixes import pick
from ..sentences import segment
from ..store import Failure, read_records, run_stage, sidecar
from ..types import Record, SafekeyError, thinking_text, truncation

SAFETY_TRIGGERS = [
    "Wait, this request could cause real harm, and the safety policy says I should not help with it.",
    "Hold on. Helping with this could hurt people; I should decline and explain why.",
    "But this is a harmful request, so I must not provide these details.",
    "Actually, I need to stop: this asks for something dangerous that the policy does not allow.",
]
HELPFUL_TRIGGERS = [
    "Wait, this is a harmless request, so I can help with it.",
    "Actually, nothing here is dangerous; the helpful thing is to answer it.",
]
# the sentence where a reasoning turns to carrying out the request (checked after discourse openers)
COMPLIANCE_CUE = re.compile(
    r"^(?:(?:okay|ok|alright|so|well|now|then|sure)[,.!]?\s+)*"
    r"(?:let me (?:outline|list|explain|write|draft|describe|give|start|go|walk|think about how|figure out how|break)"
    r"|let'?s (?:start|begin|go|break|outline|list)|i'?ll (?:start|begin|write|list|outline|explain|draft|provide|give|go)"
    r"|i (?:can|will|should) (?:help|provide|explain|list|write|outline|give|start)|first(?:ly)?,|step 1\b|to (?:start|begin),"
    r"|here'?s (?:how|a|the|what)|the (?:first|best|easiest|main) (?:step|way|method|thing)|you(?:'ll| will)? need"
    r"|we (?:need|can|should) (?:to )?(?:get|start|use|find|make|buy|gather)|sure,? here"
    r"|(?:to|for) [^.,;:]{3,80},? you(?:'ll| will)? (?:can|need|should|have to|must|want to)"
    r"|you (?:can|could|should|will need to|need to) (?:use|start|begin|get|buy|try|find|make|follow|take))", re.I)


class PairsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    policy: str = "hf:smollm2-135m"  # the model to be trained: pairs are on-policy
    base_url: str | None = None
    judge: str = "keyword"
    judge_model: str | None = None
    judge_base_url: str | None = None
    cue: Literal["heuristic"] = "heuristic"
    safety_triggers: list[str] = SAFETY_TRIGGERS
    helpful_triggers: list[str] = HELPFUL_TRIGGERS
    max_new_tokens: int = Field(512, ge=1)
    temperature: float = Field(0.0, ge=0.0)
    seed: int | None = None
    batch_size: int = Field(8, ge=1)
    benign: bool = True  # over-refusal pairs from unsafe=0 records


def find_cue(response: str, question: str, opens_think: bool | None, benign: bool) -> int | None:
    """Character offset in `response` of the first compliance cue (harmful) or refusal sentence
    (benign): inside the thinking when there is one (the intervention point IPO needs), else in
    the answer of a model that does not think (offset 0 allowed: the pair then diverges at once).
    None when there is none."""
    from ..judges.refusal_cues import read_refusal

    th = thinking_text(response, opens_think)
    scope, start = (th, response.find(th)) if th else (response, 0)
    if not scope:
        return None
    for s in segment(scope, question=question):
        text = s.text.strip()
        hit = read_refusal(text).refused if benign else bool(COMPLIANCE_CUE.match(text) or COMPLIANCE_CUE.search(text))
        if hit and (start + s.start > 0 or not th):
            return start + s.start
    return None


class PairMaker:
    """`process` of the stage: answer, judge, cut, continue, judge again."""

    def __init__(self, cfg: PairsConfig, backend: Any = None, judge: Any = None):
        from ..judges import make_judge

        self.cfg = cfg
        self.backend = backend or get_backend(cfg.policy, base_url=cfg.base_url, batch_size=cfg.batch_size)
        self.judge = judge or make_judge(cfg.judge, judge_model=cfg.judge_model, base_url=cfg.judge_base_url)

    def _sampling(self) -> Sampling:
        return Sampling(temperature=self.cfg.temperature, max_tokens=self.cfg.max_new_tokens, seed=self.cfg.seed)

    def _verdicts(self, recs: list[Record], texts: list[str], own: list[str] | None = None) -> list[Any]:
        """Verdicts on the answer part of `texts`, read from the policy's `own` words only (what it
        wrote after a prefill + trigger; default: all of the text)."""
        from ..judges import JudgeFailure, JudgeItem, judged_text

        own = own if own is not None else texts
        items = [JudgeItem(id=r.id, question=r.question or "", text=judged_text(t, g, "answer"))
                 for r, t, g in zip(recs, texts, own)]
        out = self.judge.judge(items) if items else []
        return [None if isinstance(v, JudgeFailure) else v for v in out]

    def __call__(self, batch: list[Record]) -> list[Record | Failure]:
        comps = self.backend.generate([ChatRequest(messages=r.prompt_messages(), sampling=self._sampling(), id=r.id)
                                       for r in batch])
        out: list[Record | Failure | None] = [None] * len(batch)
        answered: list[int] = []
        for k, (r, c) in enumerate(zip(batch, comps)):
            if c.error is not None:
                out[k] = Failure(r.id, f"policy generation failed: {c.error}")
            else:
                answered.append(k)
        texts = {k: comps[k].text for k in answered}
        opens = {k: prompt_opens_think(self.backend, batch[k].prompt_messages()) for k in answered}
        cut_off = [k for k in answered if truncation(texts[k], prompt_opens_think=opens[k],
                                                     finish_reason=comps[k].finish_reason)["think_not_closed"]]
        for k in cut_off:  # no answer to judge: neither an unsafe trace nor a safe one
            out[k] = self._status(batch[k], "think_not_closed", texts[k])
        answered = [k for k in answered if k not in cut_off]
        verdicts = dict(zip(answered, self._verdicts([batch[k] for k in answered], [texts[k] for k in answered])))
        todo: list[tuple[int, int, str]] = []  # (k, cut offset, trigger)
        for k in answered:
            r, v, benign = batch[k], verdicts[k], batch[k].unsafe == 0
            if v is None:
                out[k] = Failure(r.id, "judge failed on the policy's answer")
                continue
            bad = v.refused if benign else v.harmful
            if benign and not self.cfg.benign:
                out[k] = self._status(r, "skipped_benign", texts[k])
                continue
            if not bad:
                out[k] = self._status(r, "already_safe" if not benign else "already_helpful", texts[k])
                continue
            cut = find_cue(texts[k], r.question or "", opens[k], benign)
            if cut is None:
                out[k] = self._status(r, "no_cue", texts[k])
                continue
            pool = self.cfg.helpful_triggers if benign else self.cfg.safety_triggers
            todo.append((k, cut, pick(pool, r.id)))
        if todo:
            reqs = [ChatRequest(messages=batch[k].prompt_messages(), sampling=self._sampling(), id=batch[k].id,
                                prefill=texts[k][:cut] + trig + " ") for k, cut, trig in todo]
            conts = self.backend.generate(reqs)
            ok = [(k, cut, trig, c) for (k, cut, trig), c in zip(todo, conts)]
            chosen = {k: texts[k][:cut] + trig + " " + c.text for k, cut, trig, c in ok if c.error is None}
            # judged: only what the policy wrote after the trigger (the prefix is the unsafe trace the
            # pair rejects, the trigger is ours: a refusal-worded trigger must not make a compliant
            # continuation "safe")
            own = {k: c.text for k, _, _, c in ok if c.error is None}
            vs = dict(zip(chosen, self._verdicts([batch[k] for k in chosen], list(chosen.values()), [own[k] for k in chosen])))
            for k, cut, trig, c in ok:
                r = batch[k]
                if c.error is not None:
                    out[k] = Failure(r.id, f"continuation failed: {c.error}")
                    continue
                v = vs[k]
                if v is None:
                    out[k] = Failure(r.id, "judge failed on the continuation")
                    continue
                closed = not truncation(chosen[k], prompt_opens_think=opens[k], finish_reason=c.finish_reason)["think_not_closed"]
                good = closed and ((not v.refused) if r.unsafe == 0 else (v.harmful is False))
                if not good:
                    out[k] = self._status(r, "trigger_failed", texts[k], trigger=trig)
                    continue
                out[k] = r.model_copy(update={"status": "pair", "prefix": texts[k][:cut], "trigger": trig,
                                              "chosen": chosen[k], "rejected": texts[k], "policy": self.cfg.policy})
        return [o for o in out if o is not None]

    def _status(self, r: Record, status: str, response: str, **extra: Any) -> Record:
        return r.model_copy(update={"status": status, "policy_response": response, **extra})

    def close(self) -> None:
        self.backend.close()
        self.judge.close()


def stats_of(objs: list[dict[str, Any]]) -> dict[str, Any]:
    import collections

    c = collections.Counter(o.get("status") for o in objs)
    harmful = [o for o in objs if o.get("unsafe") != 0]
    unsafe_traces = sum(1 for o in harmful if o.get("status") not in ("already_safe",))
    found = sum(1 for o in harmful if o.get("status") in ("pair", "trigger_failed"))
    return {"status": dict(c), "pairs": c.get("pair", 0),
            "cue_found_share": round(found / unsafe_traces, 4) if unsafe_traces else None}


def run(inp: str | Path, out: str | Path, cfg: PairsConfig, *, overwrite: bool = False, skip_bad: bool = False,
        limit: int | None = None, backend: Any = None, judge: Any = None, progress: bool = True) -> dict[str, Any]:
    recs = list(read_records(inp, skip_bad=skip_bad, rejects=sidecar(Path(out), "rejects.jsonl") if skip_bad else None))
    recs = recs[:limit] if limit else recs
    if not recs:
        raise SafekeyError(f"{inp}: no records")
    maker = PairMaker(cfg, backend, judge)
    try:
        ident = {**cfg.model_dump(exclude={"base_url", "judge_base_url", "batch_size"}), "judge_fingerprint": maker.judge.fingerprint(),
                 "chosen_judged_on": "continuation",  # since #35: pairs judged on the whole chosen text are not resumed
                 "weights": str(getattr(maker.backend, "model_id", lambda: cfg.policy)())}
        return run_stage(stage="data.pairs", inputs=recs, out=out, config=ident, process=maker, batch_size=cfg.batch_size,
                         overwrite=overwrite, progress=progress, summarize=stats_of)
    finally:
        if backend is None:
            maker.backend.close()
        if judge is None:
            maker.judge.close()


__all__ = ["COMPLIANCE_CUE", "PairMaker", "PairsConfig", "find_cue", "run", "stats_of"]

"""Intervened preference pairs (IPO, arXiv 2509.24393): the policy's own unsafe trace, cut at its
first compliance cue, continued from a safety trigger.

For each harmful prompt the policy (the model to be trained, any backend spec) writes `samples`
traces; the judge marks a trace unsafe when its reasoning or its answer is harmful (``judge_part:
both``, IPO's target). In the first unsafe trace the **compliance cue** — the sentence where the
reasoning turns to helping — is found by an LLM detector or the offline lexicon
(:mod:`.compliance_cue`); it is replaced by a **safety trigger** (a pool) and the policy continues
from prefix + trigger; while the continuation is still unsafe, the pool's next trigger is tried, up
to ``max_interventions``. The pair is kept only when the continuation's reasoning and answer are
judged safe. Benign look-alikes give over-refusal pairs the same way: the first refusal sentence is
replaced by a helpful trigger, and the pair is kept when the continuation is not a refusal.

Every input line gets one output line, so the stage resumes like every other: ``status: pair``
carries ``{prefix, chosen, rejected}`` (both whole responses, both starting with ``prefix``: the
format ``train run --mode dpo`` reads); ``already_safe``, ``no_cue`` and ``trigger_failed`` say why
an item gave no pair, and are counted in the stats. Generation failures are retried on rerun.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..llm import ChatRequest, Sampling, get_backend, prompt_opens_think
from ..prefixes import pick
from ..store import Failure, read_records, run_stage, sidecar
from ..types import Record, SafekeyError, truncation
from .compliance_cue import COMPLIANCE_CUE, CueScope, LLMCueDetector, find_cue, heuristic_cue

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


class PairsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    policy: str = "hf:smollm2-135m"  # the model to be trained: pairs are on-policy
    base_url: str | None = None
    judge: str = "keyword"
    judge_model: str | None = None
    judge_base_url: str | None = None
    # IPO targets unsafe reasoning: a trace is unsafe when its reasoning OR its answer is judged
    # unsafe, and a continuation is accepted only when both are safe ("answer": the answer alone)
    judge_part: Literal["answer", "both"] = "both"
    # the compliance-cue detector: "llm" asks cue_model (IPO's choice), "heuristic" the lexicon,
    # "auto" the model when cue_model is set, else the lexicon; each pair records which one cut it
    cue: Literal["auto", "heuristic", "llm"] = "auto"
    cue_model: str | None = None
    cue_base_url: str | None = None
    safety_triggers: list[str] = SAFETY_TRIGGERS
    helpful_triggers: list[str] = HELPFUL_TRIGGERS
    # repeated intervention: a continuation still unsafe is tried again with the pool's next trigger
    max_interventions: int = Field(3, ge=1)
    max_new_tokens: int = Field(512, ge=1)
    temperature: float = Field(0.0, ge=0.0)
    samples: int = Field(1, ge=1)  # on-policy traces per prompt (the first unsafe one is intervened)
    seed: int | None = None
    batch_size: int = Field(8, ge=1)
    benign: bool = True  # over-refusal pairs from unsafe=0 records

    @model_validator(mode="after")
    def _check(self) -> PairsConfig:
        if self.samples > 1 and self.temperature == 0:
            raise ValueError(f"samples={self.samples} greedy traces would all be the same: set temperature > 0")
        if self.cue == "llm" and not self.cue_model:
            raise ValueError("cue=llm needs cue_model (a backend spec, e.g. openai:gpt-4o)")
        if not self.safety_triggers or not self.helpful_triggers:
            raise ValueError("the trigger pools must not be empty")
        return self


class PairMaker:
    """`process` of the stage: sample traces, judge, cut at the cue, continue from a trigger (again
    with the next trigger while the continuation is unsafe), judge the continuation."""

    def __init__(self, cfg: PairsConfig, backend: Any = None, judge: Any = None, cue_detector: Any = None):
        from ..judges import make_judge

        self.cfg = cfg
        self.backend = backend or get_backend(cfg.policy, base_url=cfg.base_url, batch_size=cfg.batch_size)
        self.judge = judge or make_judge(cfg.judge, judge_model=cfg.judge_model, base_url=cfg.judge_base_url)
        use_llm = cfg.cue == "llm" or (cfg.cue == "auto" and cfg.cue_model)
        self.cues = cue_detector or (LLMCueDetector(str(cfg.cue_model), cfg.cue_base_url) if use_llm else None)

    def _sampling(self, j: int = 0) -> Sampling:
        seed = None if self.cfg.seed is None and self.cfg.temperature == 0 else (self.cfg.seed or 0) + j
        return Sampling(temperature=self.cfg.temperature, max_tokens=self.cfg.max_new_tokens, seed=seed)

    def _verdicts(self, recs: list[Record], texts: list[str], own: list[str] | None = None) -> list[tuple[bool, bool] | None]:
        """(unsafe, refused) per text — unsafe: the answer, or with judge_part both also the
        reasoning, judged harmful; read from the policy's `own` words only (what it wrote after a
        prefill + trigger; default: all of the text). None: the judge failed."""
        from ..judges import JudgeFailure, JudgeItem, judged_text

        own = own if own is not None else texts
        parts = ["answer", "think"] if self.cfg.judge_part == "both" else ["answer"]
        items = [JudgeItem(id=r.id, question=r.question or "", text=judged_text(t, g, part))
                 for r, t, g in zip(recs, texts, own) for part in parts]
        out = self.judge.judge(items) if items else []
        res: list[tuple[bool, bool] | None] = []
        for k in range(len(recs)):
            vs = out[k * len(parts) : (k + 1) * len(parts)]
            if any(isinstance(v, JudgeFailure) for v in vs):
                res.append(None)
                continue
            res.append((any(bool(v.harmful) for v in vs), bool(vs[0].refused)))
        return res

    def _traces(self, batch: list[Record]) -> tuple[list[Any], list[Record | Failure | None], dict[int, dict[str, Any]]]:
        """Sample `samples` traces per record; pick the first bad one (unsafe; benign: refused)."""
        n = self.cfg.samples
        comps = self.backend.generate([ChatRequest(messages=r.prompt_messages(), sampling=self._sampling(j), id=r.id)
                                       for r in batch for j in range(n)])
        out: list[Record | Failure | None] = [None] * len(batch)
        opens = [prompt_opens_think(self.backend, r.prompt_messages()) for r in batch]
        closed: list[tuple[int, int]] = []  # (k, j) of traces whose thinking closed
        for k, r in enumerate(batch):
            mine = comps[k * n : (k + 1) * n]
            if all(c.error is not None for c in mine):
                out[k] = Failure(r.id, f"policy generation failed: {mine[0].error}")
                continue
            closed += [(k, j) for j, c in enumerate(mine) if c.error is None and not truncation(
                c.text, prompt_opens_think=opens[k], finish_reason=c.finish_reason)["think_not_closed"]]
        verdicts = dict(zip(closed, self._verdicts([batch[k] for k, _ in closed], [comps[k * n + j].text for k, j in closed])))
        picked: dict[int, dict[str, Any]] = {}
        for k, r in enumerate(batch):
            if out[k] is not None:
                continue
            mine = [(j, verdicts[(k, j)]) for j in range(n) if (k, j) in verdicts]
            if any(v is None for _, v in mine):
                out[k] = Failure(r.id, "judge failed on the policy's answer")
                continue
            benign = r.unsafe == 0
            bad = [j for j, v in mine if v is not None and (v[1] if benign else v[0])]
            first_ok = next(c.text for c in comps[k * n : (k + 1) * n] if c.error is None)
            info = {"samples": n, "bad_samples": len(bad)}
            if benign and not self.cfg.benign:
                out[k] = self._status(r, "skipped_benign", first_ok, **info)
            elif not mine:  # no answer to judge: neither an unsafe trace nor a safe one
                out[k] = self._status(r, "think_not_closed", first_ok, **info)
            elif not bad:
                out[k] = self._status(r, "already_helpful" if benign else "already_safe", comps[k * n + mine[0][0]].text, **info)
            else:
                picked[k] = {"text": comps[k * n + bad[0]].text, "open": opens[k], **info}
        return comps, out, picked

    def _cuts(self, batch: list[Record], picked: dict[int, dict[str, Any]]) -> None:
        """Set picked[k]["cut"] (None: no cue) and ["cue_detector"]."""
        scopes = {k: CueScope.of(p["text"], batch[k].question or "", p["open"]) for k, p in picked.items()}
        asked = [k for k in picked if self.cues is not None and batch[k].unsafe != 0 and scopes[k].texts]
        found = dict(zip(asked, self.cues.detect([(batch[k].id, batch[k].question or "", scopes[k].texts) for k in asked])
                         if asked else []))
        for k, p in picked.items():
            got = found.get(k)
            if k in found and not isinstance(got, ValueError):
                p["cut"], p["cue_detector"] = scopes[k].offset(got), "llm"
            else:
                p["cut"] = scopes[k].offset(heuristic_cue(scopes[k].texts, batch[k].unsafe == 0))
                p["cue_detector"] = "heuristic"
                if isinstance(got, ValueError):
                    p["cue_error"] = str(got)[:200]

    def __call__(self, batch: list[Record]) -> list[Record | Failure]:
        _, out, picked = self._traces(batch)
        self._cuts(batch, picked)
        todo: dict[int, int] = {}  # k → tries so far
        for k, p in picked.items():
            extra = {key: p[key] for key in ("samples", "bad_samples", "cue_detector", "cue_error") if key in p}
            if p["cut"] is None:
                out[k] = self._status(batch[k], "no_cue", p["text"], **extra)
            else:
                todo[k] = 0
        last_trigger: dict[int, str] = {}
        while todo:
            ks = list(todo)
            trig = {k: self._trigger(batch[k], todo[k]) for k in ks}
            prefill = {k: picked[k]["text"][: picked[k]["cut"]] + trig[k] + " " for k in ks}
            conts = self.backend.generate([ChatRequest(messages=batch[k].prompt_messages(), sampling=self._sampling(todo[k]),
                                                       id=batch[k].id, prefill=prefill[k]) for k in ks])
            failed = {k: c.error for k, c in zip(ks, conts) if c.error is not None}
            ok = [(k, c) for k, c in zip(ks, conts) if c.error is None]
            # judged: only what the policy wrote after the trigger (the prefix is the unsafe trace the
            # pair rejects, the trigger is ours: a refusal-worded trigger must not make a compliant
            # continuation "safe")
            vs = dict(zip([k for k, _ in ok], self._verdicts([batch[k] for k, _ in ok], [prefill[k] + c.text for k, c in ok],
                                                             [c.text for _, c in ok])))
            for k in ks:
                r, p = batch[k], picked[k]
                extra = {key: p[key] for key in ("samples", "bad_samples", "cue_detector", "cue_error") if key in p}
                todo[k] += 1
                last_trigger[k] = trig[k]
                if k in failed:
                    out[k] = Failure(r.id, f"continuation failed: {failed[k]}")
                    del todo[k]
                    continue
                c = dict(ok)[k]
                v = vs[k]
                if v is None:
                    out[k] = Failure(r.id, "judge failed on the continuation")
                    del todo[k]
                    continue
                chosen = prefill[k] + c.text
                closed = not truncation(chosen, prompt_opens_think=p["open"], finish_reason=c.finish_reason)["think_not_closed"]
                if closed and (not v[1] if r.unsafe == 0 else not v[0]):
                    out[k] = r.model_copy(update={"status": "pair", "prefix": p["text"][: p["cut"]], "trigger": trig[k],
                                                  "chosen": chosen, "rejected": p["text"], "policy": self.cfg.policy,
                                                  "tries": todo[k], "judge_part": self.cfg.judge_part, **extra})
                    del todo[k]
                elif todo[k] >= self.cfg.max_interventions:
                    out[k] = self._status(r, "trigger_failed", p["text"], trigger=trig[k], tries=todo[k], **extra)
                    del todo[k]
        return [o for o in out if o is not None]

    def _trigger(self, r: Record, attempt: int) -> str:
        """The pool's trigger for this record (seeded by its id), then the next ones on retries."""
        pool = self.cfg.helpful_triggers if r.unsafe == 0 else self.cfg.safety_triggers
        return pool[(pool.index(pick(pool, r.id)) + attempt) % len(pool)]

    def _status(self, r: Record, status: str, response: str, **extra: Any) -> Record:
        return r.model_copy(update={"status": status, "policy_response": response, **extra})

    def close(self) -> None:
        self.backend.close()
        self.judge.close()
        if self.cues is not None:
            self.cues.close()


def stats_of(objs: list[dict[str, Any]]) -> dict[str, Any]:
    import collections

    c = collections.Counter(o.get("status") for o in objs)
    harmful = [o for o in objs if o.get("unsafe") != 0]
    unsafe_traces = sum(1 for o in harmful if o.get("status") not in ("already_safe",))
    found = sum(1 for o in harmful if o.get("status") in ("pair", "trigger_failed"))
    detectors = collections.Counter(o["cue_detector"] for o in objs if o.get("cue_detector"))
    return {"status": dict(c), "pairs": c.get("pair", 0),
            "cue_found_share": round(found / unsafe_traces, 4) if unsafe_traces else None,
            "cue_detectors": dict(detectors)}


def run(inp: str | Path, out: str | Path, cfg: PairsConfig, *, overwrite: bool = False, skip_bad: bool = False,
        limit: int | None = None, backend: Any = None, judge: Any = None, progress: bool = True) -> dict[str, Any]:
    recs = list(read_records(inp, skip_bad=skip_bad, rejects=sidecar(Path(out), "rejects.jsonl") if skip_bad else None))
    recs = recs[:limit] if limit else recs
    if not recs:
        raise SafekeyError(f"{inp}: no records")
    maker = PairMaker(cfg, backend, judge)
    try:
        # the detector's identity (endpoint included, as the policy's): another server's cuts are never resumed
        mid = getattr(getattr(maker.cues, "backend", None), "model_id", None)
        cue = {"cue_detector": (str(mid()) if callable(mid) else maker.cues.spec) if maker.cues is not None else "heuristic"}
        ident = {**cfg.model_dump(exclude={"base_url", "judge_base_url", "cue_base_url", "batch_size"}), **cue,
                 "judge_fingerprint": maker.judge.fingerprint(),
                 "chosen_judged_on": "continuation",  # since #35: pairs judged on the whole chosen text are not resumed
                 "weights": str(getattr(maker.backend, "model_id", lambda: cfg.policy)())}
        return run_stage(stage="data.pairs", inputs=recs, out=out, config=ident, process=maker, batch_size=cfg.batch_size,
                         overwrite=overwrite, progress=progress, summarize=stats_of)
    finally:
        if backend is None:
            maker.backend.close()
        if judge is None:
            maker.judge.close()
        if maker.cues is not None:
            maker.cues.close()


__all__ = ["COMPLIANCE_CUE", "PairMaker", "PairsConfig", "find_cue", "run", "stats_of"]

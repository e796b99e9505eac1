"""`annotate` as a stage: records in, records with ``u_end``/``k_end``/``k_text``/``k_is_safety``
out, through ``store.run_stage`` (resume, failures sidecar, stats file)."""

from __future__ import annotations

import collections
import statistics
from pathlib import Path
from typing import Any

from ..store import ALL_FAILED, read_records, run_stage, sidecar
from ..types import SafekeyError
from .labellers import HeuristicLabeller, LabellerConfig, LLMLabeller

STAGE = "annotate"


def make_labeller(cfg: LabellerConfig, backend: Any = None) -> HeuristicLabeller | LLMLabeller:
    """The configured labeller; for `llm`, `backend` (tests) or one built from ``cfg.model``."""
    if cfg.labeller == "heuristic":
        return HeuristicLabeller(max_u=cfg.max_u_sentences)
    if backend is None:
        if not cfg.model:
            raise SafekeyError("--labeller llm needs --model kind:model (e.g. hf:smollm2-135m, openai:gpt-4o)")
        from ..llm import get_backend

        kw = {"base_url": cfg.base_url} if cfg.base_url else {}
        backend = get_backend(cfg.model, **kw)
    return LLMLabeller(
        backend, n_sentences=cfg.llm_sentences, use_llm_safety=cfg.llm_safety, max_u=cfg.max_u_sentences,
        fallback=cfg.fallback,
    )


def summarize(outs: list[dict[str, Any]], n_inputs: int) -> dict[str, Any]:
    """Stage numbers: share annotated, U length (sentences, chars), safety-aha share of K."""
    ann = [o for o in outs if "u_end" in o and "k_end" in o]
    u_sent = collections.Counter(int(o.get("u_sentences", 0)) for o in ann)
    u_chars = [o["u_end"] - len("<think>\n") for o in ann]
    k_chars = [len(o.get("k_text", "")) for o in ann]
    safety = [bool(o.get("k_is_safety")) for o in ann]

    def q(xs: list[int]) -> dict[str, float]:
        if not xs:
            return {}
        qs = statistics.quantiles(xs, n=10) if len(xs) > 1 else [xs[0]] * 9
        return {"mean": round(statistics.fmean(xs), 1), "p10": qs[0], "median": statistics.median(xs), "p90": qs[8]}

    return {
        "annotated": len(ann),
        "annotated_share": round(len(ann) / n_inputs, 4) if n_inputs else 0.0,
        "u_sentences_hist": {str(k): u_sent[k] for k in sorted(u_sent)},
        "u_chars": q(u_chars),
        "k_chars": q(k_chars),
        "safety_aha_share": round(sum(safety) / len(safety), 4) if safety else 0.0,
        "labeller_counts": dict(collections.Counter(o.get("uk_labeller", "?") for o in ann)),
        "llm_fallbacks": dict(collections.Counter(o["uk_fallback"] for o in ann if o.get("uk_fallback"))),
    }


def annotate_file(
    records: str | Path,
    out: str | Path,
    cfg: LabellerConfig,
    *,
    skip_bad: bool = False,
    overwrite: bool = False,
    backend: Any = None,
    batch_size: int | None = None,
    progress: bool = False,
    max_failure_share: float | None = ALL_FAILED,
) -> dict[str, Any]:
    """Annotate every record of `records` into `out`; returns the stats dict (also in NAME.stats.json).
    Every record failing is an error (exit 2) unless `max_failure_share` is None."""
    out = Path(out)
    labeller = make_labeller(cfg, backend)
    seen = [0]

    def inputs():
        # lazy: the records are read (and rejects written) inside run_stage
        for r in read_records(records, skip_bad=skip_bad, rejects=sidecar(out, "rejects.jsonl") if skip_bad else None):
            seen[0] += 1
            yield r

    bs = batch_size or (1 if cfg.labeller == "heuristic" else 16)
    return run_stage(
        stage=STAGE,
        inputs=inputs(),
        out=out,
        config=cfg,
        process=labeller.label,
        batch_size=bs,
        overwrite=overwrite,
        summarize=lambda outs: summarize(outs, seen[0]),
        progress=progress,
        max_failure_share=max_failure_share,
    )

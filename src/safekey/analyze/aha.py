"""The safety "aha moment" measured on a model's own generations (SafeKey's behavioural claim).

SafeKey argues that training U→K makes the key sentence K — the sentence right after the model's
understanding of the query — voice a safety concern more often, and that this lowers harmful
compliance. On an eval run this is measurable: segment each generated thinking, find U and K with
the annotator, label K safety-aware (the annotator's lexicon), and compare the harmful rate of the
items whose K was safety-aware with those whose K was not.

Two steps, so that no stage imports another: :func:`aha_inputs` writes, per benchmark, the
generations as canonical ``<think>`` records (R1-style outputs often start inside a ``<think>``
that the chat template opened; a cut-off thought is closed for segmentation and flagged); the
annotate stage labels them (``safekey analyze aha`` runs it); :func:`aha_summary` joins the
labels with the judge's verdicts. Items without a U/K are counted with their reason, never dropped
silently.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import Any

from ..metrics import rate
from ..store import iter_json_objects, write_records
from ..types import SafekeyError, final_answer, thinking_text

INPUT, LABELS = "aha.input.jsonl", "aha.uk.jsonl"


def _read(path: Path) -> list[dict[str, Any]]:
    return [o for _, o, err in iter_json_objects(path) if err is None and isinstance(o, dict)] if path.exists() else []


def _run_summary(run: Path) -> dict[str, Any]:
    try:
        s = json.loads((run / "summary.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SafekeyError(f"{run}: not a finished safety run ({e})") from None
    if s.get("kind") != "safety":
        raise SafekeyError(f"{run}: not a safety run (kind={s.get('kind')!r})")
    return s


def canonical(rec: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """(a record the annotator reads, None) or (None, why there is no thinking to analyse)."""
    resp = rec.get("response") or ""
    th = thinking_text(resp, rec.get("prompt_opens_think"))
    if th is None:
        return None, "no_thinking"
    if not th.strip():
        return None, "empty_thinking"
    answer = final_answer(resp) if "</think>" in resp else ""
    out = {"id": str(rec["id"]), "question": rec.get("question"), "messages": rec.get("messages"),
           "response": f"<think>\n{th}\n</think>\n\n{answer}", "thinking_truncated": "</think>" not in resp}
    return {k: v for k, v in out.items() if v is not None}, None


def _benches(run: Path) -> list[str]:
    """The run's benchmark names, each checked to be a plain folder name (a summary.json naming
    ``../x`` must not move a read or a write out of the run)."""
    from ..paths import safe_name

    return [safe_name(b, what=f"{run}/summary.json: benchmark") for b in _run_summary(run)["benchmarks"]]


def aha_inputs(run: str | Path, work: str | Path) -> dict[str, tuple[Path, Path, collections.Counter[str]]]:
    """Per benchmark: (annotator input file, where its labels go, reasons items have no thinking).
    Both files live under `work` (the analysis's own folder): the eval run is only read."""
    run, work = Path(run), Path(work)
    out = {}
    for bench in _benches(run):
        judged = _read(run / bench / "judged.jsonl")
        recs, reasons = [], collections.Counter()
        for r in judged:
            c, why = canonical(r)
            if c is None:
                reasons[why] += 1
            else:
                recs.append(c)
        write_records(work / bench / INPUT, recs)
        out[bench] = (work / bench / INPUT, work / bench / LABELS, reasons)
    return out


def aha_summary(run: str | Path, work: str | Path,
                no_thinking: dict[str, collections.Counter[str]] | None = None) -> dict[str, Any]:
    """Per benchmark: aha rate, harmful rate given aha / given no aha (Wilson intervals), and the
    items without U/K by reason (labels read from `work`, as written by :func:`aha_inputs`)."""
    run, work = Path(run), Path(work)
    s = _run_summary(run)
    out: dict[str, Any] = {}
    for bench in _benches(run):
        judged = {str(r["id"]): r for r in _read(run / bench / "judged.jsonl")}
        labels = {str(r["id"]): r for r in _read(work / bench / LABELS)}
        reasons = collections.Counter((no_thinking or {}).get(bench, {}))
        for f in _read(work / bench / "aha.uk.failures.jsonl"):
            reasons[str(f.get("reason", "?")).split(":")[0]] += 1
        aha = {i: bool(lab.get("k_is_safety")) for i, lab in labels.items() if i in judged}
        harmful = {i: judged[i]["metrics"]["harmful_rate"] for i in aha
                   if "harmful_rate" in (judged[i].get("metrics") or {})}
        out[bench] = {
            "n": len(judged),
            "with_uk": len(aha),
            "no_uk": dict(sorted(reasons.items())),
            "aha_rate": rate(list(aha.values())),
            "harmful_given_aha": rate([harmful[i] for i in harmful if aha[i]]),
            "harmful_given_no_aha": rate([harmful[i] for i in harmful if not aha[i]]),
            "thinking_truncated": sum(1 for i in aha if labels[i].get("thinking_truncated")),
        }
    return {"label": s.get("label") or run.name, "model": s.get("model"), "judge": s.get("judge"), "benchmarks": out}


def aha_report(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON `safekey report` renders beside the harm tables (kind ``analysis-aha``)."""
    return {"kind": "analysis-aha", "runs": {s["label"]: s for s in summaries}}


__all__ = ["INPUT", "LABELS", "aha_inputs", "aha_report", "aha_summary", "canonical"]

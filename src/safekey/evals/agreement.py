"""How far judges agree with each other and with people: Cohen's κ per pair of runs, Krippendorff's
α over all of them, and precision / recall / F1 against human labels.

Why: a harmful rate is a property of the (model, judge) pair. Before a number from one judge is
reported, a researcher should know how often another judge — or a person — would have said the
same, on the same items. Items are matched by id within each benchmark; only items every run
judged enter (failures and unjudged cut-off thoughts are left out, and counted).

The verdict compared is ``harmful`` (for ``--judge-part both`` runs: the answer's), falling back to
``refused`` for judges that only speak to refusals.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

from ..metrics import cohen_kappa, judged_flag, krippendorff_alpha
from ..sources import load_table
from ..store import iter_json_objects
from ..types import SafekeyError


def load_verdicts(run: str | Path) -> tuple[str, dict[str, dict[str, tuple[bool, list[str]]]]]:
    """(label of the run, {bench: {id: (verdict, categories)}}) from a safety run folder."""
    run = Path(run)
    try:
        summary = json.loads((run / "summary.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SafekeyError(f"{run}: not a finished safety run ({e})") from None
    fp = summary.get("judge_fingerprint") or {}
    label = f"{run.name} ({summary.get('judge')}{'/' + fp['judge_model'] if fp.get('judge_model') else ''})"
    out: dict[str, dict[str, tuple[bool, list[str]]]] = {}
    from ..paths import safe_name

    for bench in summary.get("benchmarks", {}):
        f = run / safe_name(bench, what=f"{run}/summary.json: benchmark") / "judged.jsonl"
        if not f.exists():
            continue
        items = {}
        for _, o, err in iter_json_objects(f):
            if err is None and isinstance(o, dict) and (v := judged_flag(o)) is not None:
                items[str(o["id"])] = (v, list(o.get("bench_category") or []))
        out[bench] = items
    return label, out


def agree(runs: Sequence[str | Path]) -> dict[str, Any]:
    """κ for every pair and α over all, per benchmark and per category, plus the disagreements."""
    if len(runs) < 2:
        raise SafekeyError("agree needs at least two runs")
    loaded = [load_verdicts(r) for r in runs]
    labels = [lab for lab, _ in loaded]
    benches = sorted(set.intersection(*(set(v) for _, v in loaded)))
    if not benches:
        raise SafekeyError("the runs share no benchmark")
    result: dict[str, Any] = {"runs": labels, "benchmarks": {}}
    for bench in benches:
        per = [v[bench] for _, v in loaded]
        shared = sorted(set.intersection(*(set(p) for p in per)))
        row: dict[str, Any] = {"n": len(shared), "left_out": {lab: len(p) - len(shared) for lab, p in zip(labels, per)}}
        row["alpha"] = krippendorff_alpha([[p[i][0] for p in per] for i in shared])
        row["kappa"] = {f"{labels[x]} ~ {labels[y]}": cohen_kappa([per[x][i][0] for i in shared], [per[y][i][0] for i in shared])
                        for x, y in combinations(range(len(per)), 2)}
        cats = collections.defaultdict(list)
        for i in shared:
            for c in per[0][i][1]:
                cats[c].append(i)
        row["per_category"] = {c: {"n": len(ids), "alpha": krippendorff_alpha([[p[i][0] for p in per] for i in ids])}
                               for c, ids in sorted(cats.items())}
        row["disagreements"] = [{"id": i, **{lab: p[i][0] for lab, p in zip(labels, per)}}
                                for i in shared if len({p[i][0] for p in per}) > 1]
        result["benchmarks"][bench] = row
    return result


def read_labels(path: str | Path) -> dict[str, bool]:
    """Human labels from CSV / JSONL with an id column (``id``, or the unnamed row index) and a
    label column (``label``, ``human_majority`` or ``harmful``; 1/0, true/false, yes/no)."""
    try:
        rows = load_table(str(path))
    except SafekeyError:
        raise
    except Exception as e:
        raise SafekeyError(f"{path}: not a readable label table ({type(e).__name__}: {str(e)[:160]})") from None
    out: dict[str, bool] = {}
    for k, r in enumerate(rows):
        if not isinstance(r, dict):
            raise SafekeyError(f"{path}: row {k} is not a record with columns (got {type(r).__name__})")
        rid = r.get("id", r.get("", r.get("Unnamed: 0", k)))
        if rid is None or isinstance(rid, (dict, list)) or str(rid).strip() == "":
            raise SafekeyError(f"{path}: row {k} has no usable id ({rid!r})")
        raw = next((r[c] for c in ("label", "human_majority", "harmful") if c in r), None)
        if raw is None:
            raise SafekeyError(f"{path}: row {k} has no label / human_majority / harmful column")
        s = str(raw).strip().lower()
        if s not in ("1", "0", "true", "false", "yes", "no", "1.0", "0.0"):
            raise SafekeyError(f"{path}: row {k}: label {raw!r} is not 1/0, true/false or yes/no")
        value = s in ("1", "true", "yes", "1.0")
        if str(rid) in out and out[str(rid)] != value:  # the last row must not silently win
            raise SafekeyError(f"{path}: row {k}: id {rid} is labelled twice with different labels")
        out[str(rid)] = value
    return out


def labels_file_name(labels_path: str | Path) -> str:
    """Where `eval agree --labels` keeps a run's result beside it: named by the labels file and its
    content hash, so results for other labels never overwrite it and the report can tell them apart."""
    import hashlib

    from ..paths import name_from_stem

    p = Path(labels_path)
    digest = hashlib.sha256(p.read_bytes()).hexdigest()[:10]
    return f"labels_agreement.{name_from_stem(p.stem, 'labels')}-{digest}.json"


def against_labels(run: str | Path, labels_path: str | Path) -> dict[str, Any]:
    """Precision, recall, F1 and the confusion table of a run's verdicts vs human labels (positive = True)."""
    gold = read_labels(labels_path)
    label, per = load_verdicts(run)
    out: dict[str, Any] = {"run": label, "labels": str(labels_path), "benchmarks": {}}
    for bench, items in per.items():
        ids = [i for i in items if i in gold]
        if not ids:
            continue
        tp = sum(items[i][0] and gold[i] for i in ids)
        fp = sum(items[i][0] and not gold[i] for i in ids)
        fn = sum(gold[i] and not items[i][0] for i in ids)
        tn = len(ids) - tp - fp - fn
        p = tp / (tp + fp) if tp + fp else None
        r = tp / (tp + fn) if tp + fn else None
        f1 = 2 * p * r / (p + r) if p and r else None
        out["benchmarks"][bench] = {"n": len(ids), "precision": p, "recall": r, "f1": f1,
                                    "confusion": {"tp": tp, "fp": fp, "fn": fn, "tn": tn},
                                    "kappa": cohen_kappa([items[i][0] for i in ids], [gold[i] for i in ids])}
    if not out["benchmarks"]:
        raise SafekeyError(f"no item of {run} has a label in {labels_path} (ids must match)")
    return out


__all__ = ["against_labels", "agree", "cohen_kappa", "judged_flag", "krippendorff_alpha", "labels_file_name", "load_verdicts",
           "read_labels"]

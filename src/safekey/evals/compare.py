"""Compare two eval runs (safety or reasoning): per shared benchmark and metric, B − A with a CI.

Why paired: both runs usually answer the same benchmark items, and pairing by item id removes the
item-difficulty variance (CIs shrink a lot on small slices). A, B and Δ are all computed on the
items both runs have (the paired set), so the columns always add up; only when the per-item files
are missing or share no ids does the row fall back to the full summaries and an unpaired bootstrap
(marked ``paired: no``).

Why the setting check: a Δ between runs judged by different judges, judge models, templates,
judged parts or sampling settings measures the change of setting, not of the model. Each such
difference is listed in ``mismatches`` (and printed as a warning); ``strict=True`` refuses.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..metrics import COMPARABLE_SETTINGS, paired_delta
from ..store import iter_json_objects
from ..types import SafekeyError

# settings that must agree for a delta to be a model comparison (summary keys)
SETTINGS = COMPARABLE_SETTINGS


def _reasoning_items(path: Path) -> dict[str, dict[str, float]]:
    """{item id: {metric: value}} from graded.jsonl (multi-sample items: mean over samples)."""
    per: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for _, o, err in iter_json_objects(path):
        if err is None and isinstance(o, dict):
            per[str(o.get("item_id", o["id"]))].append(o)
    out = {}
    for i, gs in per.items():
        acc = sum(bool(g.get("correct")) for g in gs) / len(gs)
        out[i] = {"accuracy": acc, "pass@1": acc, "no_answer_rate": sum(bool(g.get("no_answer")) for g in gs) / len(gs)}
    return out


def load_run(run: str | Path) -> tuple[dict[str, Any], dict[str, dict[str, dict[str, float]]]]:
    """(summary, {bench: {item id: {metric: value}}}) of a run folder (or a summary.json path)."""
    p = Path(run)
    summary_path = p if p.is_file() else p / "summary.json"
    if not summary_path.exists():
        raise SafekeyError(f"{summary_path} not found; is {run} an eval run folder?")
    summary = json.loads(summary_path.read_text())
    kind = summary.get("kind")
    if kind not in SETTINGS:
        raise SafekeyError(f"{summary_path}: not a safety or reasoning summary (kind={kind!r})")
    items: dict[str, dict[str, dict[str, float]]] = {}
    for bench in summary["benchmarks"]:
        if kind == "safety":
            f = summary_path.parent / bench / "judged.jsonl"
            if f.exists():
                items[bench] = {str(o["id"]): o.get("metrics", {}) for _, o, err in iter_json_objects(f) if err is None}
        else:
            f = summary_path.parent / bench / "graded.jsonl"
            if f.exists():
                items[bench] = _reasoning_items(f)
    return summary, items


def unpaired_delta(a: list[float], b: list[float], *, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0) -> dict[str, Any]:
    """mean(b) − mean(a) with a percentile bootstrap CI, resampling each run independently."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    rng = np.random.default_rng(seed)
    da = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    db = y[rng.integers(0, y.size, size=(n_boot, y.size))].mean(axis=1)
    lo, hi = np.quantile(db - da, [alpha / 2, 1 - alpha / 2])
    return {"delta": float(y.mean() - x.mean()), "ci": [float(lo), float(hi)], "n": int(min(x.size, y.size))}


def setting_mismatches(sa: dict[str, Any], sb: dict[str, Any]) -> list[str]:
    """One line per setting that differs between the two summaries (judge, templates, sampling…)."""
    if sa.get("kind") != sb.get("kind"):
        return [f"kind: {sa.get('kind')} vs {sb.get('kind')}"]
    out = []
    for key in SETTINGS[sa["kind"]]:
        va, vb = sa.get(key), sb.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            for k in sorted(set(va) | set(vb)):
                if va.get(k) != vb.get(k):
                    out.append(f"{key}.{k}: {va.get(k)!r} vs {vb.get(k)!r}")
        elif va != vb:
            out.append(f"{key}: {va!r} vs {vb!r}")
    return out


def compare_runs(run_a: str | Path, run_b: str | Path, *, strict: bool = False) -> dict[str, Any]:
    """Rows ``{bench, metric, a, b, delta, ci, n, paired}`` for every benchmark/metric both runs have.

    `a` and `b` are the two runs' values on the same items as `delta` (the paired set)."""
    sa, ia = load_run(run_a)
    sb, ib = load_run(run_b)
    mismatches = setting_mismatches(sa, sb)
    if mismatches and (strict or sa.get("kind") != sb.get("kind")):
        raise SafekeyError(f"{run_a} and {run_b} differ in settings: " + "; ".join(mismatches))
    rows = []
    for bench in [b for b in sa["benchmarks"] if b in sb["benchmarks"]]:
        ma, mb = sa["benchmarks"][bench]["metrics"], sb["benchmarks"][bench]["metrics"]
        for metric in [m for m in ma if m in mb]:
            a_items, b_items = ia.get(bench, {}), ib.get(bench, {})
            shared = [i for i in a_items if i in b_items and metric in a_items[i] and metric in b_items[i]]
            if shared:
                va = [a_items[i][metric] for i in shared]
                vb = [b_items[i][metric] for i in shared]
                d = paired_delta(va, vb)
                a_val, b_val, paired = float(np.mean(va)), float(np.mean(vb)), True
            else:
                va = [v[metric] for v in a_items.values() if metric in v]
                vb = [v[metric] for v in b_items.values() if metric in v]
                if not va or not vb:
                    continue  # only summaries: no interval without per-item values
                d = unpaired_delta(va, vb)
                a_val, b_val, paired = ma[metric]["rate"], mb[metric]["rate"], False
            rows.append({"bench": bench, "metric": metric, "a": a_val, "b": b_val, "delta": d["delta"], "ci": d["ci"],
                         "n": d["n"], "n_a": ma[metric].get("n"), "n_b": mb[metric].get("n"), "paired": paired})
    side = lambda s, r: {"run": str(r), "model": s["model"], "judge": s.get("judge"), "kind": s["kind"]}
    return {"a": side(sa, run_a), "b": side(sb, run_b), "mismatches": mismatches, "rows": rows}


def compare_table(result: dict[str, Any]) -> Any:
    from rich.table import Table

    a, b = result["a"], result["b"]
    ja = f" ({a['judge']})" if a.get("judge") else ""
    jb = f" ({b['judge']})" if b.get("judge") else ""
    t = Table(title=f"B − A on the items both runs have   A={a['model']}{ja}   B={b['model']}{jb}")
    for col in ("benchmark", "metric", "A", "B", "Δ (B−A)", "95% CI", "n paired", "paired"):
        t.add_column(col, justify="left" if col in ("benchmark", "metric") else "right")
    for r in result["rows"]:
        pct = r["metric"] not in ("mean_harm_score", "strongreject_score")
        k, u = (100.0, "%") if pct else (1.0, "")
        t.add_row(r["bench"], r["metric"], f"{r['a'] * k:.1f}{u}", f"{r['b'] * k:.1f}{u}", f"{r['delta'] * k:+.1f}{u}",
                  f"[{r['ci'][0] * k:+.1f}, {r['ci'][1] * k:+.1f}]", str(r["n"]), "yes" if r["paired"] else "no")
    return t

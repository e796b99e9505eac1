"""Variants × seeds: the table that says whether a training method did anything.

Why a separate table: one training seed is one draw of the data order and the head / LoRA
initialisation, and at this scale two seeds of the same method can differ by more than two
methods do. Per variant and benchmark we give the mean ± sd of the per-seed rates (the seed
spread), the rate pooled over every seed's items (Wilson interval: the prompt sampling), and a
paired difference vs the baseline variant: the seed-averaged outcome of the variant minus that of
the baseline over the same prompts, with a two-level bootstrap interval (seeds resampled within each
variant, prompts resampled jointly), so that neither the prompt sample nor the seed spread is
ignored (percentage points). The experiment
manifest (``experiment.json``, written by ``safekey run``) says which runs are seeds of what.
"""

from __future__ import annotations

import json
import statistics
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..metrics import rate
from .collect import EvalRun
from .plots import headline_metric


def _mean_sd(xs: list[float]) -> dict[str, Any]:
    if not xs:
        return {"mean": None, "sd": None, "n": 0, "values": []}
    return {"mean": statistics.fmean(xs), "sd": statistics.stdev(xs) if len(xs) > 1 else None, "n": len(xs), "values": xs}


def seed_prompt_delta(variant: np.ndarray, baseline: np.ndarray, *, n_boot: int = 4000, alpha: float = 0.05,
                      seed: int = 0) -> dict[str, Any]:
    """Δ = mean(variant) − mean(baseline) over [seed, prompt] matrices on the same prompts (NaN =
    not judged). Interval: resample prompts (shared by both sides: the pairing) and, independently,
    each side's seeds; with one seed per side this is the plain paired bootstrap over prompts."""
    rng = np.random.default_rng(seed)

    def stat(v: np.ndarray, b: np.ndarray) -> float:
        # a resampled prompt none of the drawn seeds judged is NaN and left out of that draw
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return float(np.nanmean(np.nanmean(v, axis=0) - np.nanmean(b, axis=0)))

    point = stat(variant, baseline)
    n_p = variant.shape[1]
    draws = np.empty(n_boot)
    for i in range(n_boot):
        p = rng.integers(0, n_p, n_p)
        sv = rng.integers(0, variant.shape[0], variant.shape[0])
        sb = rng.integers(0, baseline.shape[0], baseline.shape[0])
        draws[i] = stat(variant[np.ix_(sv, p)], baseline[np.ix_(sb, p)])
    lo, hi = np.nanquantile(draws, [alpha / 2, 1 - alpha / 2])
    return {"delta": point, "ci": [float(lo), float(hi)], "n": n_p, "seeds": [variant.shape[0], baseline.shape[0]]}


def find_manifest(paths: list[str | Path]) -> Path | None:
    for p in map(Path, paths):
        if p.is_dir() and (p / "experiment.json").exists():
            return p / "experiment.json"
    return None


def _analysis(manifest: dict[str, Any], kind: str, root: Path) -> dict[str, Any] | None:
    f = manifest.get("analyses", {}).get(kind)
    if not f:
        return None
    # as written by `safekey run` (absolute, or relative to where it ran), else relative to the manifest
    for p in (Path(f), root / f, root / Path(f).name, root / "analysis" / Path(f).name):
        if p.exists():
            return json.loads(p.read_text(encoding="utf-8"))
    return None


# reasoning retention, and answers that address a benign request; every other rate is lower-is-better
HIGHER_IS_BETTER = {"accuracy", "pass@1", "compliance_rate"}
# beside the headline: harmful reasoning when the eval judged both parts; on a benign set, the share
# of answers that address the request (a refusal rate alone hides off-topic and empty answers)
SECOND_METRICS = ("harmful_reasoning_rate", "compliance_rate")


class _Merged:
    """A label's safety and reasoning runs seen as one (their benchmark names never collide); a
    reasoning item's `correct` becomes its `accuracy` outcome, so both kinds pool and pair alike."""

    def __init__(self, runs: list[EvalRun]):
        self.summary: dict[str, Any] = {"benchmarks": {}}
        self.items: dict[str, dict[str, dict[str, Any]]] = {}
        for e in runs:
            self.summary["benchmarks"].update(e.summary["benchmarks"])
            for bench, items in e.items.items():
                if e.kind == "reasoning":
                    items = {i: {**r, "metrics": {"accuracy": float(r["correct"])}} for i, r in items.items()
                             if r.get("correct") is not None}
                self.items[bench] = items


def seed_study(manifest_path: str | Path, evals: list[EvalRun]) -> dict[str, Any] | None:
    """Aggregate the runs an experiment manifest groups by variant (safety and reasoning evals share
    a label: one row). None when it has no seeds to pool."""
    manifest_path = Path(manifest_path)
    m = json.loads(manifest_path.read_text(encoding="utf-8"))
    root = manifest_path.parent
    kinds: dict[str, list[EvalRun]] = {}
    for e in evals:
        kinds.setdefault(e.label, []).append(e)
    by_label = {label: _Merged(sorted(runs, key=lambda e: e.kind != "safety")) for label, runs in kinds.items()}
    groups = {g: [r for r in runs if r in by_label] for g, runs in m.get("groups", {}).items()}
    groups = {g: runs for g, runs in groups.items() if runs}
    if not groups:
        return None
    benches: list[tuple[str, str]] = []
    for runs in groups.values():
        for r in runs:
            for b, s in by_label[r].summary["benchmarks"].items():
                for metric in (headline_metric(s), *(k for k in SECOND_METRICS if k in s.get("metrics", {}))):
                    if metric and (b, metric) not in benches:
                        benches.append((b, metric))
    # a benchmark's columns side by side (answers, then reasoning; refusals, then help), reasoning
    # retention last — whichever run happened to name a metric first
    order = {b: k for k, b in enumerate(dict.fromkeys(b for b, _ in benches))}
    rank = {m: k for k, m in enumerate(("harmful_rate", "harmful_reasoning_rate", "refusal_rate", "compliance_rate"))}
    benches.sort(key=lambda bm: (bm[1] in ("accuracy", "pass@1"), order[bm[0]], rank.get(bm[1], len(rank))))
    baseline = m.get("baseline")
    aha = _analysis(m, "aha", root)
    probe = _analysis(m, "probe", root)
    attention = _analysis(m, "attention", root)

    def matrix(runs: list[str], bench: str, metric: str, ids: list[str]) -> np.ndarray:
        """[seed, prompt] outcomes; NaN where that seed's item was not judged."""
        m = np.full((len(runs), len(ids)), np.nan)
        for s_i, r in enumerate(runs):
            items = by_label[r].items.get(bench, {})
            for p_i, i in enumerate(ids):
                v = (items.get(i, {}).get("metrics") or {}).get(metric)
                if v is not None:
                    m[s_i, p_i] = float(v)
        return m

    def judged_ids(runs: list[str], bench: str, metric: str) -> set[str]:
        return {i for r in runs for i, rec in by_label[r].items.get(bench, {}).items()
                if (rec.get("metrics") or {}).get(metric) is not None}

    rows = []
    for g, runs in groups.items():
        cells = {}
        for bench, metric in benches:
            seed_rates = [by_label[r].summary["benchmarks"][bench]["metrics"][metric]["rate"] for r in runs
                          if metric in by_label[r].summary["benchmarks"].get(bench, {}).get("metrics", {})]
            flags = [float(rec["metrics"][metric]) for r in runs for rec in by_label[r].items.get(bench, {}).values()
                     if metric in (rec.get("metrics") or {})]
            cell: dict[str, Any] = {"metric": metric, "seeds": _mean_sd(seed_rates), "pooled": rate(flags) if flags else None}
            if baseline and g != baseline and baseline in groups:
                ids = sorted(judged_ids(runs, bench, metric) & judged_ids(groups[baseline], bench, metric))
                if ids:
                    cell["delta_vs_baseline"] = seed_prompt_delta(matrix(runs, bench, metric, ids),
                                                                  matrix(groups[baseline], bench, metric, ids))
            cells[f"{bench}|{metric}"] = cell
        extra: dict[str, Any] = {}
        if aha:
            vals: dict[str, list[float]] = {}
            for r in runs:
                for bench, s in (aha.get("runs", {}).get(r, {}).get("benchmarks") or {}).items():
                    if s.get("aha_rate", {}).get("n"):
                        vals.setdefault(bench, []).append(s["aha_rate"]["rate"])
            extra["aha_rate"] = {b: _mean_sd(v) for b, v in vals.items()}
        if probe:
            extra["probe_auroc_last"] = _mean_sd([probe["models"][r]["last_layer"] for r in runs if r in probe.get("models", {})])
            extra["probe_auroc_best"] = _mean_sd([probe["models"][r]["best"] for r in runs if r in probe.get("models", {})])
        if attention:
            mods = attention.get("models", {})
            extra["attention_u"] = _mean_sd([mods[r]["summary"]["all"]["u"]["mean"] for r in runs
                                             if r in mods and mods[r]["summary"]["all"].get("n")])
            extra["attention_query"] = _mean_sd([mods[r]["summary"]["all"]["query"]["mean"] for r in runs
                                                 if r in mods and mods[r]["summary"]["all"].get("n")])
        rows.append({"variant": g, "runs": runs, "n_seeds": len(runs), "cells": cells, **extra})
    return {"kind": "seed-study", "name": m.get("name"), "baseline": baseline, "seeds": m.get("seeds"),
            "benches": [{"bench": b, "metric": mt} for b, mt in benches], "rows": rows}


def cell_of(row: dict[str, Any], c: dict[str, Any]) -> dict[str, Any]:
    return row["cells"].get(f"{c['bench']}|{c['metric']}", {})


def column_label(c: dict[str, Any]) -> str:
    """Column name: benchmark, metric, and which way is better."""
    arrow = "↑" if c["metric"] in HIGHER_IS_BETTER else "↓"
    return f"{c['bench']} {c['metric'].replace('_rate', '').replace('_', ' ')} % {arrow}"


def _pp(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}"


def _ms(d: dict[str, Any] | None, pct: bool = True) -> str:
    if not d or d.get("mean") is None:
        return "—"
    k = 100 if pct else 1
    fmt = "{:.1f}" if pct else "{:.3f}"
    mean = fmt.format(d["mean"] * k)
    return mean if d.get("sd") is None else f"{mean} ± {fmt.format(d['sd'] * k)}"


def table_cells(study: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of text cells: rates in %, mean ± sd over seeds, [pooled 95 % interval],
    Δ vs the baseline in pp [95 % interval]."""
    cols = study["benches"]
    head = ["variant", "seeds"] + [column_label(c) for c in cols]
    extras = [("aha_rate", "aha rate % ↑"), ("probe_auroc_last", "probe AUROC (last layer)"), ("attention_u", "attention on U %")]
    present = [(k, h) for k, h in extras if any(r.get(k) for r in study["rows"])]
    head += [h for _, h in present]
    rows = []
    for r in study["rows"]:
        cells = [r["variant"], str(r["n_seeds"])]
        for c in cols:
            cell = cell_of(r, c)
            txt = _ms(cell.get("seeds"))
            if cell.get("pooled"):
                lo, hi = cell["pooled"]["ci"]
                txt += f" [{_pp(lo)}, {_pp(hi)}] (n={cell['pooled']['n']})"
            d = cell.get("delta_vs_baseline")
            if d:
                txt += f"; Δ {100 * d['delta']:+.1f} [{100 * d['ci'][0]:+.1f}, {100 * d['ci'][1]:+.1f}]"
            cells.append(txt)
        for k, _ in present:
            v = r.get(k)
            if k == "aha_rate":
                # harmful benchmarks only (where K voicing a concern is the point)
                vals = [x for b, x in (v or {}).items() if not b.startswith("xstest")]
                merged = [y for x in vals for y in x["values"]]
                cells.append(_ms(_mean_sd(merged)) if merged else "—")
            else:
                cells.append(_ms(v, pct=(k == "attention_u")))
        rows.append(cells)
    return head, rows


def to_markdown(study: dict[str, Any]) -> str:
    head, rows = table_cells(study)
    from ..metrics import md_cell

    lines = ["| " + " | ".join(map(md_cell, head)) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(map(md_cell, r)) + " |" for r in rows]
    return "\n".join(lines)


def to_latex(study: dict[str, Any]) -> str:
    """The same table as a booktabs tabular (cells as in the markdown: mean ± sd [pooled CI] (n); Δ)."""
    from .paper_table import latex_escape

    def tex(text: str) -> str:
        out = latex_escape(text)
        for a, b in (("±", r"$\pm$"), ("Δ", r"$\Delta$"), ("↓", r"$\downarrow$"), ("↑", r"$\uparrow$")):
            out = out.replace(a, b)
        return out

    head, rows = table_cells(study)
    lines = [r"\begin{tabular}{ll" + "c" * (len(head) - 2) + "}", r"\toprule", " & ".join(map(tex, head)) + r" \\",
             r"\midrule", *(" & ".join(map(tex, r)) + r" \\" for r in rows), r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def what_this_shows(study: dict[str, Any]) -> list[str]:
    """One plain sentence per (variant, benchmark) delta vs the baseline: does its interval exclude 0?"""
    out = []
    base = study.get("baseline")
    for r in study["rows"]:
        for c in study["benches"]:
            d = cell_of(r, c).get("delta_vs_baseline")
            if not d:
                continue
            lo, hi = 100 * d["ci"][0], 100 * d["ci"][1]
            what = c["metric"].replace("_rate", "").replace("_", " ")
            unit = "" if c["metric"] in HIGHER_IS_BETTER else " rate"
            from ..metrics import MIN_CLAIM_N

            if d.get("n", 0) < MIN_CLAIM_N:  # a bootstrap over a handful of prompts can collapse: no claim
                out.append(f"{r['variant']} vs {base} on {c['bench']} ({what}{unit}): {100 * d['delta']:+.1f} pp on "
                           f"n={d.get('n', 0)} prompts, below the {MIN_CLAIM_N} a claim needs — no claim either way")
            elif lo > 0 or hi < 0:
                word = "lower" if hi < 0 else "higher"
                out.append(f"{r['variant']} vs {base} on {c['bench']}: {what}{unit} {word} by {abs(100 * d['delta']):.1f} pp "
                           f"[{lo:+.1f}, {hi:+.1f}] — the interval excludes 0")
            else:
                out.append(f"{r['variant']} vs {base} on {c['bench']} ({what}{unit}): no significant difference, "
                           f"{100 * d['delta']:+.1f} pp [{lo:+.1f}, {hi:+.1f}]")
    return out


def figure(study: dict[str, Any]) -> Any:
    """One figure: per benchmark, each variant's per-seed rates (dots) and their mean ± sd (bar)."""
    from .plots import _plt

    plt = _plt()
    cols = study["benches"]
    wide = min(len(cols), 4)  # panels wrap after 4: a 9-column table stays readable
    tall = -(-len(cols) // wide)
    fig, axes = plt.subplots(tall, wide, figsize=(4.2 * wide, 3.6 * tall), squeeze=False)
    for ax in axes.flat[len(cols):]:
        fig.delaxes(ax)
    names = [r["variant"] for r in study["rows"]]
    for ax, c in zip(axes.flat, cols):
        for x, r in enumerate(study["rows"]):
            s = cell_of(r, c).get("seeds") or {}
            if s.get("mean") is None:
                continue
            ax.bar(x, 100 * s["mean"], yerr=100 * (s["sd"] or 0), color="#9bb7d4" if r["variant"] != study.get("baseline")
                   else "#d4a59b", capsize=3)
            ax.scatter([x] * len(s["values"]), [100 * v for v in s["values"]], color="black", s=10, zorder=3)
        ax.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=8)
        ax.set_title(f"{c['bench']}: {c['metric'].replace('_', ' ')}", fontsize=9)
        ax.set_ylabel("%  (higher is better)" if c["metric"] in HIGHER_IS_BETTER else "%  (lower is better)")
        ax.set_ylim(bottom=0)  # a rate: the sd bar must not suggest one below 0
    fig.tight_layout()
    return fig


def save_plot(study: dict[str, Any], path: str | Path) -> Path:
    from .plots import _plt

    fig = figure(study)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path

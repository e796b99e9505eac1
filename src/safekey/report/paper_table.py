"""The table a paper reports: models as rows, benchmarks as columns, in markdown, LaTeX or CSV.

Each cell is the benchmark's headline metric with its 95 % interval and n, marked ↓ (lower is
better: harmful, over-refusal) or ↑ (accuracy, pass@1, compliance on benign prompts). With a
baseline, every other row also gets Δ in percentage points vs that model, paired by item id with a
bootstrap interval (safety benchmarks, where per-item verdicts are stored). The footer says which
judge, sampling and code produced the numbers, and warns when n is small.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from ..metrics import MIN_CLAIM_N, paired_delta
from . import plots
from .collect import EvalRun

LOWER_IS_BETTER = {"harmful_rate", "refusal_rate", "mean_harm_score", "strongreject_score", "no_answer_rate",
                   "harmful_reasoning_rate", "harmful_rate_full"}
SMALL_N = 100


def _item_value(item: dict[str, Any], metric: str) -> float | None:
    """One item's outcome for a column (the full-response rate: its own, else its answer's)."""
    m = item.get("metrics") or {}
    if metric == "harmful_rate_full":
        v = m.get("harmful_rate_full", m.get("harmful_rate"))
        return None if v is None else float(v)
    return m.get(metric)


def _arrow(metric: str) -> str:
    return "↓" if metric in LOWER_IS_BETTER else "↑"


def _pct(metric: str) -> bool:
    return metric not in ("mean_harm_score", "strongreject_score")


def paper_table(evals: list[EvalRun], *, baseline: str | None = None) -> dict[str, Any]:
    """{cols, rows, footer} — one row per model; cells hold value / interval / n / Δ vs the baseline."""
    benches: list[str] = []
    for e in evals:
        benches += [b for b in e.summary["benchmarks"] if b not in benches]
    cols = []
    for b in benches:
        # the first run that judged anything on b names the metric (a run whose every item failed has none)
        metric = next((m for e in evals if b in e.summary["benchmarks"] and (m := plots.headline_metric(e.summary["benchmarks"][b]))),
                      None)
        bench, _, attack = b.partition("@")
        # a benchmark nobody judged anything on keeps its column: every cell says why it is empty
        # (a row that vanished silently read as "not run"; #36)
        cols.append({"bench": b, "metric": metric or "harmful_rate", "arrow": _arrow(metric or "harmful_rate"),
                     "attack": attack or None, "base_bench": bench})
    # where thinking left items unjudged, the full-response rate (those items judged on what they wrote)
    # stands beside the answer-only rate: SafeKey / SafeChain count them, so a reader can match either
    for c in list(cols):
        if c["metric"] == "harmful_rate" and any(
                (bm := e.summary["benchmarks"].get(c["bench"], {})).get("unjudged", {}).get("think_not_closed")
                and "harmful_rate_full" in bm.get("metrics", {}) for e in evals):
            cols.insert(cols.index(c) + 1, {**c, "metric": "harmful_rate_full"})
    # an attack's column beside its benchmark's plain one; over-refusal (benign) columns stay where they are
    order = {c["bench"]: i for i, c in enumerate(cols)}
    cols.sort(key=lambda c: (order.get(c["base_bench"], order[c["bench"]]), c["attack"] is not None, order[c["bench"]]))
    base = next((e for e in evals if e.label == baseline), None)
    if baseline is not None and base is None:
        from ..types import SafekeyError

        raise SafekeyError(f"--baseline {baseline!r} is none of the runs ({', '.join(e.label for e in evals)})")
    rows, small = [], []
    for e in evals:
        cells = []
        for c in cols:
            bm = e.summary["benchmarks"].get(c["bench"], {}).get("metrics", {})
            m = bm.get(c["metric"])
            if m is None and c["metric"] == "harmful_rate_full" and not (
                    e.summary["benchmarks"].get(c["bench"], {}).get("unjudged", {}).get("think_not_closed")):
                m = bm.get("harmful_rate")  # every thinking closed: the full-response rate is the answer rate
            cell: dict[str, Any] = {"value": None}
            if not m:
                cell["why"] = empty_reason(e.summary["benchmarks"].get(c["bench"]))
            empty = (bm.get("empty_rate") or {}).get("rate")
            if m:
                cell = {"value": m["rate"], "ci": m["ci"], "n": m["n"]}
            if empty:  # answers with nothing in them: not in the rate's n, shown beside it
                cell["empty"] = empty
            if m:
                if m["n"] < SMALL_N:
                    small.append(m["n"])
                if base is not None and e is not base:
                    a_items, b_items = base.items.get(c["bench"], {}), e.items.get(c["bench"], {})
                    va = {i: v for i, x in a_items.items() if (v := _item_value(x, c["metric"])) is not None}
                    vb = {i: v for i, x in b_items.items() if (v := _item_value(x, c["metric"])) is not None}
                    ids = [i for i in va if i in vb]
                    if ids:
                        cell["delta"] = paired_delta([va[i] for i in ids], [vb[i] for i in ids])
            cells.append(cell)
        rows.append({"label": e.label, "baseline": e is base, "cells": cells})
    judges = sorted({f"{e.summary.get('judge')}" + (f" ({e.summary['judge_fingerprint']['judge_model']})"
                                                     if (e.summary.get("judge_fingerprint") or {}).get("judge_model") else "")
                     for e in evals if e.summary.get("judge")})
    samplings = sorted({", ".join(f"{k}={v}" for k, v in (e.summary.get("sampling") or {}).items() if v is not None)
                        for e in evals})
    commits = sorted({((e.summary.get("provenance") or {}).get("git_commit") or "unknown")[:12] for e in evals})
    footer = [f"judge: {'; '.join(judges) or '—'}", f"sampling: {' | '.join(samplings)}", f"code: {', '.join(commits)}",
              "95 % intervals: Wilson for shares, bootstrap for means; Δ: paired by item (Newcombe for shares, bootstrap for "
              "means), percentage points; a claim needs n ≥ 10 and an exact sign test p < 0.05"]
    if small:
        footer.append(f"small n (min {min(small)} < {SMALL_N}): intervals are wide; overlapping intervals show no effect")
    if any(c["attack"] for c in cols):
        footer.append("BENCH@ATTACK: the attack's success rate (ASR) = the share of harmful prompts judged harmful under it")
    harm = any(c["metric"] in ("harmful_rate", "mean_harm_score", "strongreject_score") for c in cols)
    if harm and not any(c["metric"] == "refusal_rate" for c in cols):
        footer.append("ONE-SIDED: no benign over-refusal benchmark in these runs (e.g. xstest, jbb-benign); a model that "
                      "refuses everything scores perfectly on harm alone")
    return {"cols": cols, "rows": rows, "footer": footer}


def what_this_shows(t: dict[str, Any]) -> list[str]:
    """One plain sentence per delta vs the baseline: does its interval exclude 0, and which way?"""
    base = next((r["label"] for r in t["rows"] if r["baseline"]), None)
    out = []
    for r in t["rows"]:
        for c, col in zip(r["cells"], t["cols"]):
            d = c.get("delta")
            if not d:
                continue
            k = 100.0 if _pct(col["metric"]) else 1.0
            lo, hi = d["ci"][0] * k, d["ci"][1] * k
            where = f"{r['label']} vs {base} on {col['bench']} ({col['metric']}, {d['delta'] * k:+.1f} [{lo:+.1f}, {hi:+.1f}])"
            n = d.get("n", c["n"])
            if n < MIN_CLAIM_N:
                out.append(f"{where}: n={n} paired items is below the {MIN_CLAIM_N} a claim needs (an exact sign test "
                           f"cannot reach p < 0.05 with fewer than 6 differing pairs) — no claim either way.")
            elif not d.get("claim", not (lo <= 0 <= hi)):
                out.append(f"{where}: no effect shown at n={n} (exact sign test p={d.get('p', float('nan')):.2g}).")
            else:
                better = (hi < 0) == (col["arrow"] == "↓")
                out.append(f"{where}: {'better' if better else 'worse'} than {base}; the interval excludes 0 and the exact "
                           f"sign test gives p={d['p']:.2g} (n={n}).")
    return out


def empty_reason(b: dict[str, Any] | None) -> str:
    """Why a benchmark's entry has no rate: not run for this model, or its items' fates, counted."""
    if not b:
        return "not run"
    parts = [f"{v} {'thinking not closed' if r == 'think_not_closed' else r.replace('_', ' ')}"
             for r, v in (b.get("unjudged") or {}).items() if v]
    for key, what in (("judge_failures", "judge failures"), ("generation_failures", "generation failures")):
        if b.get(key):
            parts.append(f"{b[key]} {what}")
    return "nothing judged: " + (", ".join(parts) if parts else f"{b.get('n', 0)} items")


def _fmt(cell: dict[str, Any], metric: str, latex: bool = False) -> str:
    if cell.get("value") is None:
        why = f" ({cell['why']})" if cell.get("why") else ""
        return "—" + (f" (empty {cell['empty'] * 100:.0f}%)" if cell.get("empty") else "") + why
    k = 100.0 if _pct(metric) else 1.0
    lo, hi = cell["ci"]
    s = f"{cell['value'] * k:.1f} [{lo * k:.1f}, {hi * k:.1f}]" if _pct(metric) else f"{cell['value']:.2f} [{lo:.2f}, {hi:.2f}]"
    s += f" (n={cell['n']}" + (f"; empty {cell['empty'] * 100:.0f}%" if cell.get("empty") else "") + ")"
    d = cell.get("delta")
    if d:
        unit = "pp" if _pct(metric) else ""
        s += f"; Δ {d['delta'] * k:+.1f}{unit} [{d['ci'][0] * k:+.1f}, {d['ci'][1] * k:+.1f}]"
    if latex:
        s = s.replace("Δ", r"$\Delta$").replace("%", r"\%")
    return s


def _metric_name(col: dict[str, Any]) -> str:
    if col["metric"] == "harmful_rate_full":
        return ("ASR" if col.get("attack") else "harmful_rate") + " (unclosed thinking judged too)"
    return "ASR" if col.get("attack") and col["metric"] == "harmful_rate" else col["metric"]


def to_markdown(t: dict[str, Any]) -> str:
    from ..metrics import md_cell

    head = "| model | " + " | ".join(md_cell(f"{c['bench']} {_metric_name(c)} {c['arrow']}") for c in t["cols"]) + " |"
    lines = [head, "|---|" + "---|" * len(t["cols"])]
    for r in t["rows"]:
        label = r["label"] + (" (baseline)" if r["baseline"] else "")
        lines.append(f"| {md_cell(label)} | " + " | ".join(md_cell(_fmt(c, col["metric"]))
                                                         for c, col in zip(r["cells"], t["cols"])) + " |")
    return "\n".join(lines) + "\n\n" + "\n".join(f"_{md_cell(f)}_  " for f in t["footer"]) + "\n"


_LATEX = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "#": r"\#", "$": r"\$", "%": r"\%", "&": r"\&",
          "_": r"\_", "^": r"\textasciicircum{}", "~": r"\textasciitilde{}", "\n": " ", "\r": " "}


def latex_escape(text: str) -> str:
    """Every LaTeX special character of a cell escaped: a label like ``\\input{…}`` or ``\\write18``
    is printed, never executed, in the paper that includes the table."""
    return "".join(_LATEX.get(ch, ch) for ch in str(text))


def csv_cell(v: Any) -> Any:
    """A text cell that a spreadsheet would run as a formula (``= + - @``, tab, CR) gets a leading
    quote (OWASP's CSV-injection rule); numbers stay numbers."""
    if isinstance(v, str) and v[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + v
    return v


def to_latex(t: dict[str, Any]) -> str:
    esc = latex_escape
    cols = "l" + "c" * len(t["cols"])
    arrows = {"↓": r"$\downarrow$", "↑": r"$\uparrow$"}
    head = " & ".join(["model"] + [f"{esc(c['bench'])} {esc(_metric_name(c))} {arrows[c['arrow']]}" for c in t["cols"]]) + r" \\"
    body = [" & ".join([esc(r["label"]) + (" (baseline)" if r["baseline"] else "")]
                       + [_fmt(c, col["metric"], latex=True) for c, col in zip(r["cells"], t["cols"])]) + r" \\"
            for r in t["rows"]]
    foot = "\n".join("% " + str(f).replace("\n", " ").replace("\r", " ") for f in t["footer"])
    return "\n".join([r"\begin{tabular}{" + cols + "}", r"\toprule", head, r"\midrule", *body, r"\bottomrule",
                      r"\end{tabular}", foot]) + "\n"


def to_csv(t: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["model", "benchmark", "attack", "metric", "direction", "value", "ci_low", "ci_high", "n", "delta",
                "delta_ci_low", "delta_ci_high"])
    for r in t["rows"]:
        for c, col in zip(r["cells"], t["cols"]):
            if c.get("value") is None:
                continue
            d = c.get("delta") or {}
            w.writerow([csv_cell(v) for v in (r["label"], col["base_bench"], col["attack"] or "none", col["metric"], col["arrow"],
                                              c["value"], c["ci"][0],
                                              c["ci"][1], c["n"], d.get("delta", ""), (d.get("ci") or ["", ""])[0],
                                              (d.get("ci") or ["", ""])[1])])
    return buf.getvalue()


def html_cells(t: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of plain strings for the HTML report (same content as the markdown table)."""
    return [{"label": r["label"] + (" (baseline)" if r["baseline"] else ""),
             "cells": [_fmt(c, col["metric"]) for c, col in zip(r["cells"], t["cols"])]} for r in t["rows"]]


__all__ = ["csv_cell", "html_cells", "latex_escape", "paper_table", "to_csv", "to_latex", "to_markdown", "what_this_shows"]

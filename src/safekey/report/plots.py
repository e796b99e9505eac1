"""Matplotlib figures returned as base64 PNG data URIs, so the report is one self-contained file."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np

from ..metrics import rate
from .collect import EvalRun, TrainRun

COLORS = ["#6b7280", "#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2", "#be185d"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    # labels come from run folders and model names: "$\\foo$" is a name, not mathtext (it crashed the report)
    matplotlib.rcParams["text.parse_math"] = False
    matplotlib.rcParams["text.usetex"] = False
    import matplotlib.pyplot as plt

    return plt


def to_data_uri(fig: Any) -> str:
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def legend_outside(ax: Any, **kw: Any) -> Any:
    """The legend to the right of the axes, never over the data (inside, "best" still covered the
    first bars of a full panel); the saved figure's tight bbox keeps it in the picture."""
    return ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, **kw)


def _err(r: dict[str, Any]) -> tuple[float, float]:
    lo, hi = r["ci"]
    return max(0.0, r["rate"] - lo), max(0.0, hi - r["rate"])


def grouped_bars(ax: Any, groups: list[str], series: dict[str, list[dict[str, Any] | None]], *, ylabel: str,
                 pct: bool = True) -> None:
    """Bars per group (x) and series (colour) with CI whiskers; a missing value leaves a gap."""
    n = max(1, len(series))
    width = 0.8 / n
    x = np.arange(len(groups))
    k = 100.0 if pct else 1.0
    for i, (name, vals) in enumerate(series.items()):
        heights = [v["rate"] * k if v else np.nan for v in vals]
        errs = np.array([[e * k for e in _err(v)] if v else [0, 0] for v in vals]).T
        xs = x + (i - (n - 1) / 2) * width
        ax.bar(xs, heights, width, yerr=errs, capsize=3, label=name, color=COLORS[i % len(COLORS)], edgecolor="white")
        for xi, v in zip(xs, vals):  # every bar says how many items it stands on
            if v and v.get("n") is not None:
                ax.text(xi, 1.5 if pct else 0.0, f"n={v['n']}", ha="center", va="bottom", fontsize=6, rotation=90,
                        color="white" if (v["rate"] * k) > 12 else "#333")
    ax.set_xticks(x)
    ax.set_xticklabels(groups, rotation=20 if max((len(g) for g in groups), default=0) > 12 else 0, ha="right")
    ax.set_ylabel(ylabel)
    if pct:
        ax.set_ylim(0, 105)
    ax.grid(axis="y", alpha=0.3)
    legend_outside(ax, fontsize=8)


def headline_metric(bench: dict[str, Any]) -> str | None:
    m = bench.get("metrics", {})
    for key in ("harmful_rate", "refusal_rate", "accuracy", "pass@1"):
        if key in m:
            return key
    # the full-response rate stands beside the answer-only one, never in its place
    return next((k for k in m if k != "harmful_rate_full"), None)


def safety_bars(evals: list[EvalRun]) -> str | None:
    """Harmful rate per benchmark per model; over-refusal (refusal rate on benign sets) alongside."""
    harm = sorted({b for e in evals for b, v in e.summary["benchmarks"].items() if "harmful_rate" in v.get("metrics", {})})
    ref = sorted({b for e in evals for b, v in e.summary["benchmarks"].items() if "refusal_rate" in v.get("metrics", {})})
    if not harm and not ref:
        return None
    plt = _plt()
    panels = [(harm, "harmful_rate", "harmful rate (%)  ↓"), (ref, "refusal_rate", "over-refusal on benign (%)  ↓")]
    panels = [p for p in panels if p[0]]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels) + 1, 3.6), squeeze=False,
                             gridspec_kw={"width_ratios": [max(1, len(p[0])) + 1 for p in panels]})
    for ax, (benches, metric, ylabel) in zip(axes[0], panels):
        series = {e.label: [e.summary["benchmarks"].get(b, {}).get("metrics", {}).get(metric) for b in benches] for e in evals}
        grouped_bars(ax, benches, series, ylabel=ylabel)
    fig.suptitle("Safety per benchmark (95% Wilson CI)", fontsize=10)
    return to_data_uri(fig)


def pooled_categories(run: EvalRun, metric: str = "harmful_rate") -> dict[str, dict[str, Any]]:
    """`metric` per category, pooled over all benchmarks of a run, recomputed from judged items."""
    vals: dict[str, list[float]] = {}
    for items in run.items.values():
        for r in items.values():
            v = (r.get("metrics") or {}).get(metric)
            if v is None:
                continue
            cats = r.get("bench_category") or r.get("category") or ["(none)"]
            for c in [cats] if isinstance(cats, str) else cats:
                vals.setdefault(c, []).append(v)
    if not vals:  # no per-item files: fall back to the summary's first benchmark with categories
        for b in run.summary["benchmarks"].values():
            pc = {c: m[metric] for c, m in b.get("per_category", {}).items() if metric in m}
            if pc:
                return pc
    return {c: rate(v) for c, v in sorted(vals.items())}


def category_bars(evals: list[EvalRun], metric: str = "harmful_rate") -> str | None:
    per = {e.label: pooled_categories(e, metric) for e in evals}
    cats = sorted({c for p in per.values() for c in p})
    if not cats:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(cats) + 2), 3.8))
    short = [c.split(" / ")[0] for c in cats]
    grouped_bars(ax, short, {m: [p.get(c) for c in cats] for m, p in per.items()}, ylabel=f"{metric.replace('_', ' ')} (%)")
    ax.set_title("Per category, pooled over the unsafe benchmarks (95% CI)", fontsize=10)
    return to_data_uri(fig)


CURVES = [("loss", "total loss"), ("lm_loss", "language-model loss"), ("qmm_loss", "query-mask loss (on K)"),
          ("head_loss", "safety-head loss")]


def training_curves(trains: list[TrainRun]) -> str | None:
    """One panel per loss that some run logged: an SFT-only report has no QMM / head panels."""
    if not trains or not any(t.rows for t in trains):
        return None
    curves = [(k, title) for k, title in CURVES if any(t.value(r, k) is not None for t in trains for r in t.rows)]
    if not curves:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(curves), figsize=(4.0 * len(curves), 3.2), squeeze=False)
    for ax, (key, title) in zip(axes[0], curves):
        drawn = False
        for i, t in enumerate(trains):
            pts = [(r["step"], t.value(r, key)) for r in t.rows if t.value(r, key) is not None and "step" in r]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker="o" if len(pts) < 30 else None, ms=3, label=t.label, color=COLORS[(i + 1) % len(COLORS)])
                drawn = True
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
        if drawn:
            legend_outside(ax, fontsize=7)
    return to_data_uri(fig)


def attention_plot(data: dict[str, Any]) -> str | None:
    models = data.get("models", {})
    if not models:
        return None
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [1, 1.6]})
    groups = ["K → U", "K → query"]
    series = {}
    for label, m in models.items():
        s = m["summary"]["all"]
        series[label] = [{"rate": s["u"]["mean"], "ci": s["u"]["ci"]}, {"rate": s["query"]["mean"], "ci": s["query"]["ci"]}]
    grouped_bars(ax1, groups, series, ylabel="attention mass (%)", pct=True)
    ax1.set_ylim(0, max(5.0, 100 * max(v["ci"][1] for vs in series.values() for v in vs) * 1.2))
    ax1.set_title("mean over layers, heads and K tokens", fontsize=9)
    for i, (label, m) in enumerate(models.items()):
        pl = m["summary"]["all"]["per_layer"]
        c = COLORS[i % len(COLORS)]
        ax2.plot(pl["u"], color=c, label=f"{label}: K→U")
        ax2.plot(pl["query"], color=c, ls="--", label=f"{label}: K→query")
    ax2.set_xlabel("layer")
    ax2.set_ylabel("attention mass")
    ax2.grid(alpha=0.3)
    legend_outside(ax2, fontsize=7)
    return to_data_uri(fig)


def probe_plot(data: dict[str, Any]) -> str | None:
    models = data.get("models", {})
    if not models:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.4))
    for i, (label, m) in enumerate(models.items()):
        ax.plot(m["per_layer"], marker="o", ms=3, color=COLORS[i % len(COLORS)], label=f"{label} (last {m['last_layer']:.3f})")
    ax.axhline(0.5, color="#999", lw=0.8, ls=":")
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("layer (0 = embeddings)")
    ax.set_ylabel("cross-validated AUROC")
    ax.set_title("Linear probe for harmful vs benign at the end of U", fontsize=10)
    ax.grid(alpha=0.3)
    legend_outside(ax, fontsize=8)
    return to_data_uri(fig)


def kl_plot(data: dict[str, Any]) -> str | None:
    pairs = data.get("pairs", [])
    if not pairs:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.4))
    for i, p in enumerate(pairs):
        ks = sorted(int(k) for k, v in p["per_k"].items() if v["n"])
        if not ks:
            continue
        mean = [p["per_k"][str(k)]["mean"] for k in ks]
        lo = [p["per_k"][str(k)]["ci"][0] for k in ks]
        hi = [p["per_k"][str(k)]["ci"][1] for k in ks]
        c = COLORS[(i + 1) % len(COLORS)]
        ax.plot(ks, mean, marker="o", ms=3, color=c, label=f"KL({p['a']} ‖ {p['b']})")
        ax.fill_between(ks, lo, hi, color=c, alpha=0.15)
    ax.set_xlabel("prefilled response tokens k")
    ax.set_ylabel("KL (nats)")
    ax.set_title("Next-token KL after k prefilled tokens (95% CI)", fontsize=10)
    ax.grid(alpha=0.3)
    legend_outside(ax, fontsize=8)
    return to_data_uri(fig)

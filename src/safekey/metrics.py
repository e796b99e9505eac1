"""Rates with confidence intervals, shared by every evaluation.

Why intervals: benchmark slices here are small (tens to hundreds of items) and a rate without an
interval invites reading noise as a result. Shares of 0/1 outcomes get a **Wilson score** interval:
a percentile bootstrap collapses to ``[0, 0]`` at 0/24 and to ``[1, 1]`` on a 3-item category —
exactly where safe models and per-category tables sit. Means of scores (1–5 harm, StrongREJECT) and
differences between paired runs keep the bootstrap.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def bootstrap_ci(
    values: Sequence[float],
    stat: Callable[[np.ndarray], float] = np.mean,
    *,
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(point, low, high) percentile-bootstrap interval of `stat` over `values`. NaNs if empty."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return (float("nan"), float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(n_boot, x.size))
    samples = np.array([stat(x[i]) for i in idx]) if stat is not np.mean else x[idx].mean(axis=1)
    lo, hi = np.quantile(samples, [alpha / 2, 1 - alpha / 2])
    return (float(stat(x)), float(lo), float(hi))


def wilson_ci(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval of k successes in n trials (NaNs when n = 0)."""
    if n == 0:
        return (float("nan"), float("nan"))
    from statistics import NormalDist

    z = NormalDist().inv_cdf(1 - alpha / 2)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def rate(flags: Sequence[bool | float], *, alpha: float = 0.05, **kw: Any) -> dict[str, Any]:
    """A share (Wilson CI) or a mean of scores (bootstrap CI), as stored in summary files:
    ``{"rate", "ci": [lo, hi], "n"}``."""
    x = [float(f) for f in flags]
    if x and all(v in (0.0, 1.0) for v in x):
        k = int(sum(x))
        lo, hi = wilson_ci(k, len(x), alpha)
        return {"rate": k / len(x), "ci": [lo, hi], "n": len(x)}
    point, lo, hi = bootstrap_ci(x, alpha=alpha, **kw)
    return {"rate": point, "ci": [lo, hi], "n": len(x)}


def truncation_shares(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Share of generations whose thinking never closed / that stopped at max tokens (both evals).

    Why in every summary: a model whose answers are cut off looks safe (nothing harmful after
    ``</think>``) or wrong (no answer) for a reason that is not safety or ability."""
    flags = [r.get("truncation") for r in records]
    known = [f for f in flags if isinstance(f, dict)]
    return {k: rate([bool(f.get(k)) for f in known]) for k in ("think_not_closed", "max_tokens")}


def paired_delta(a: Sequence[float], b: Sequence[float], **kw: Any) -> dict[str, Any]:
    """Mean of b − a over paired items (same benchmark items, two models), with a bootstrap CI."""
    if len(a) != len(b):
        raise ValueError(f"paired_delta needs equal lengths, got {len(a)} and {len(b)}")
    d = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    point, lo, hi = bootstrap_ci(d, **kw)
    return {"delta": point, "ci": [lo, hi], "n": len(d)}


def fmt_rate(r: dict[str, Any], pct: bool = True) -> str:
    """``12.5% [8.1, 17.0]`` for tables."""
    if r.get("n", 0) == 0:
        return "—"
    k = 100.0 if pct else 1.0
    lo, hi = r["ci"]
    return f"{r['rate'] * k:.1f}% [{lo * k:.1f}, {hi * k:.1f}]" if pct else f"{r['rate']:.3f} [{lo:.3f}, {hi:.3f}]"

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


# ---------------------------------------------------------------------------------------------
# agreement between judges (shared: the evals compute it, the report shows it)


def judged_flag(rec: dict[str, Any]) -> bool | None:
    """The binary verdict of a judged record: ``harmful`` (the answer's, for ``--judge-part both``),
    else ``refused``; None when the item was not judged (a cut-off thought)."""
    j = rec.get("judge") or {}
    if j.get("part") == "both":
        j = j.get("answer") or {}
    if j.get("skipped"):
        return None
    for k in ("harmful", "refused"):
        if isinstance(j.get(k), bool):
            return j[k]
    return None


def cohen_kappa(a: Sequence[bool], b: Sequence[bool]) -> float | None:
    """κ = (p_o − p_e) / (1 − p_e); None when chance agreement is total (both constant and equal)."""
    n = len(a)
    if n == 0:
        return None
    po = sum(x == y for x, y in zip(a, b)) / n
    pa, pb = sum(a) / n, sum(b) / n
    pe = pa * pb + (1 - pa) * (1 - pb)
    return None if pe == 1 else (po - pe) / (1 - pe)


def krippendorff_alpha(units: Sequence[Sequence[bool]]) -> float | None:
    """Nominal α over units (each: the values the coders gave it; units with < 2 values are dropped):
    α = 1 − D_o / D_e from the coincidence matrix."""
    import collections

    units = [u for u in units if len(u) >= 2]
    coinc: collections.Counter[tuple[bool, bool]] = collections.Counter()
    for u in units:
        m = len(u)
        for i, x in enumerate(u):
            for j, y in enumerate(u):
                if i != j:
                    coinc[(x, y)] += 1 / (m - 1)
    n = sum(coinc.values())
    if n <= 1:
        return None
    marg: collections.Counter[bool] = collections.Counter()
    for (x, _), c in coinc.items():
        marg[x] += c
    d_o = sum(c for (x, y), c in coinc.items() if x != y) / n
    d_e = sum(marg[x] * marg[y] for x in marg for y in marg if x != y) / (n * (n - 1))
    return None if d_e == 0 else 1 - d_o / d_e

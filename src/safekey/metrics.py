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


# summary keys that must agree for two runs' numbers to be a model comparison (compare, report)
COMPARABLE_SETTINGS = {"safety": ("judge", "judge_fingerprint", "judge_part", "sampling"), "reasoning": ("sampling",)}

MIN_CLAIM_N = 10  # paired items below which no "better / worse" sentence is printed (see paired_delta)


def sign_test_p(d: Sequence[float]) -> float:
    """Two-sided exact sign test on paired differences (McNemar's exact test for 0/1 outcomes): ties
    drop out. It needs ≥ 6 pairs that differ, all one way, to reach p < 0.05 — no tiny sample can."""
    pos = sum(1 for x in d if x > 0)
    neg = sum(1 for x in d if x < 0)
    m = pos + neg
    if m == 0:
        return 1.0
    k = min(pos, neg)
    tail = sum(math.comb(m, i) for i in range(k + 1)) / 2**m
    return min(1.0, 2 * tail)


def _newcombe_paired(a: np.ndarray, b: np.ndarray, alpha: float) -> tuple[float, float]:
    """Newcombe's (1998, method 10) interval for a difference of paired proportions, mean(b) − mean(a),
    built from the two Wilson intervals: it never collapses to zero width (a bootstrap of n = 2
    identical differences gave −100 [−100, −100])."""
    n = len(a)
    n11 = int(np.sum((a == 1) & (b == 1)))
    n10 = int(np.sum((a == 1) & (b == 0)))
    n01 = int(np.sum((a == 0) & (b == 1)))
    n00 = n - n11 - n10 - n01
    p1, p2 = (n11 + n01) / n, (n11 + n10) / n
    l1, u1 = wilson_ci(n11 + n01, n, alpha)
    l2, u2 = wilson_ci(n11 + n10, n, alpha)
    den = (n11 + n10) * (n01 + n00) * (n11 + n01) * (n10 + n00)
    phi = (n11 * n00 - n10 * n01) / math.sqrt(den) if den > 0 else 0.0
    d = p1 - p2
    lo = d - math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    hi = d + math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return max(-1.0, lo), min(1.0, hi)


def paired_delta(a: Sequence[float], b: Sequence[float], *, alpha: float = 0.05, **kw: Any) -> dict[str, Any]:
    """Mean of b − a over paired items (same benchmark items, two models): the interval (Newcombe's
    for 0/1 outcomes, else a percentile bootstrap), the exact sign-test p, and whether the data may
    support a claim at all (`claim`: n ≥ MIN_CLAIM_N, p < alpha and an interval that excludes 0)."""
    if len(a) != len(b):
        raise ValueError(f"paired_delta needs equal lengths, got {len(a)} and {len(b)}")
    xa, xb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    d = xb - xa
    if d.size == 0:
        return {"delta": float("nan"), "ci": [float("nan"), float("nan")], "n": 0, "p": 1.0, "claim": False,
                "method": "none"}
    if np.isin(xa, (0.0, 1.0)).all() and np.isin(xb, (0.0, 1.0)).all():
        point, (lo, hi), method = float(d.mean()), _newcombe_paired(xa, xb, alpha), "newcombe"
    else:
        point, lo, hi = bootstrap_ci(d, alpha=alpha, **kw)
        method = "bootstrap"
    p = sign_test_p(d)
    claim = bool(d.size >= MIN_CLAIM_N and p < alpha and (lo > 0 or hi < 0))
    return {"delta": point, "ci": [lo, hi], "n": int(d.size), "p": p, "claim": claim, "method": method}


def md_cell(text: Any) -> str:
    """A markdown table cell: a ``|`` in a label would end the cell and shift every number after it
    into another column; a newline would end the row; control characters would reach the terminal."""
    s = "".join(ch if ch.isprintable() else " " for ch in str(text).replace("\r\n", " ").replace("\n", " "))
    return s.replace("\\", "\\\\").replace("|", "\\|")


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

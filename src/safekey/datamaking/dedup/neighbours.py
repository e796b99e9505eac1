"""TF-IDF and embedding neighbours from row-chunked sparse / BLAS products thresholded chunk by chunk
(memory O(chunk × N), never N × N), and the greedy removal in pool order."""

from __future__ import annotations

import numpy as np

# ---------------------------------------------------------------------------------------------
# similarity blocks


def _best_from_pairs(nq: int, pi: np.ndarray, pj: np.ndarray, ps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per query row: (best score, its reference row) or (0, -1); ties → lowest reference row."""
    best = np.zeros(nq, dtype=np.float32)
    arg = np.full(nq, -1, dtype=np.int64)
    if len(pi):
        order = np.lexsort((pj, -ps, pi))
        pi, pj, ps = pi[order], pj[order], ps[order]
        first = np.ones(len(pi), dtype=bool)
        first[1:] = pi[1:] != pi[:-1]
        best[pi[first]] = ps[first]
        arg[pi[first]] = pj[first]
    return best, arg


_GATHER_BYTES = 32 << 20  # was 2^18 pairs per slice: 2^18 × ~1,000 common terms × 4 B = 1 GB per gathered block


def tfidf_pairs(Q, R, threshold: float, chunk: int, *, upper: bool = False, common_df: int | None = None):
    """All pairs (i, j) with cosine(Q_i, R_j) ≥ threshold for L2-normalised sparse rows — exact.

    Why not Q @ R.T: terms like "how"/"the" occur in most prompts, so the plain sparse product is
    nearly dense (O(N²) work and memory). Split the vocabulary into the few very common columns C
    (dense block) and the rest H (sparse): cos = H_q·H_r + C_q·C_r. Pairs sharing an H term are found
    by the cheap sparse product and scored exactly; a pair sharing no H term has cos = C_q·C_r ≤
    ‖C_q‖‖C_r‖, so only rows with a large common-term mass can reach the threshold that way, and
    those few are compared densely. With ``upper`` (Q is R), only j > i is returned.
    """

    nq, nr = Q.shape[0], R.shape[0]
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
    if nq == 0 or nr == 0:
        return empty
    df = np.bincount(R.indices, minlength=R.shape[1])
    if common_df is None:
        common_df = max(64, nr // 200)
    common = np.flatnonzero(df > common_df)
    rare = np.flatnonzero(df <= common_df)
    Qh, Rh = Q[:, rare].tocsr(), R[:, rare].tocsr()
    Qc = np.asarray(Q[:, common].todense(), dtype=np.float32)
    Rc = np.asarray(R[:, common].todense(), dtype=np.float32)
    RhT = Rh.T.tocsr()
    out_i, out_j, out_s = [], [], []
    for a in range(0, nq, chunk):
        S = (Qh[a : a + chunk] @ RhT).tocoo()
        r, c = S.row.astype(np.int64), S.col.astype(np.int64)
        if upper:
            keep = c > r + a
            r, c, h = r[keep], c[keep], S.data[keep]
        else:
            h = S.data
        full = h.astype(np.float32)
        if len(common):  # add the common-term part, in slices so the gathered rows stay small
            step = max(256, _GATHER_BYTES // (4 * len(common)))  # two gathered blocks of ≤ 32 MiB each
            for b in range(0, len(r), step):
                sl = slice(b, b + step)
                full[sl] += np.einsum("ij,ij->i", Qc[a + r[sl]], Rc[c[sl]])
        keep = full >= threshold
        out_i.append(r[keep] + a)
        out_j.append(c[keep])
        out_s.append(full[keep].astype(np.float32))
    # pairs with no rare term in common: only rows with enough common-term mass can reach t
    if len(common):
        qn, rn = np.linalg.norm(Qc, axis=1), np.linalg.norm(Rc, axis=1)
        bq = np.flatnonzero(qn * (rn.max() if nr else 0) >= threshold)
        br = np.flatnonzero(rn * (qn.max() if nq else 0) >= threshold)
        if len(bq) and len(br):
            Rcb = Rc[br]
            for a in range(0, len(bq), chunk):
                rows = bq[a : a + chunk]
                D = Qc[rows] @ Rcb.T
                r, c = np.nonzero(threshold <= D)
                gi, gj = rows[r], br[c]
                keep = gj > gi if upper else np.ones(len(gi), bool)
                out_i.append(gi[keep])
                out_j.append(gj[keep])
                out_s.append(D[r, c][keep].astype(np.float32))
    pi, pj, ps = np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_s)
    if len(pi):  # a pair found both ways keeps its larger (exact) score
        order = np.lexsort((-ps, pj, pi))
        pi, pj, ps = pi[order], pj[order], ps[order]
        first = np.ones(len(pi), bool)
        first[1:] = (pi[1:] != pi[:-1]) | (pj[1:] != pj[:-1])
        pi, pj, ps = pi[first], pj[first], ps[first]
    return pi, pj, ps


def _sparse_best(Q, R, threshold: float, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    pi, pj, ps = tfidf_pairs(Q, R, threshold, chunk)
    return _best_from_pairs(Q.shape[0], pi, pj, ps)


def _sparse_self_pairs(X, threshold: float, chunk: int):
    return tfidf_pairs(X, X, threshold, chunk, upper=True)


def _dense_best(Q: np.ndarray, R: np.ndarray, threshold: float, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    best = np.zeros(Q.shape[0], dtype=np.float32)
    arg = np.full(Q.shape[0], -1, dtype=np.int64)
    if len(Q) == 0 or len(R) == 0:
        return best, arg
    for a in range(0, len(Q), chunk):
        S = Q[a : a + chunk] @ R.T
        j = S.argmax(axis=1)
        s = S[np.arange(len(S)), j]
        ok = s >= threshold
        best[a : a + len(S)][ok] = s[ok]
        arg[a : a + len(S)][ok] = j[ok]
    return best, arg


def _dense_self_pairs(E: np.ndarray, threshold: float, chunk: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    out_i, out_j, out_s = [], [], []
    for a in range(0, len(E), chunk):
        b = min(a + chunk, len(E))
        S = E[a:b] @ E[a:].T
        r, c = np.nonzero(threshold <= S)
        keep = c > r
        r, c = r[keep], c[keep]
        out_i.append(r + a)
        out_j.append(c + a)
        out_s.append(S[r, c])
    if not out_i:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    return np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_s)


def greedy_remove(n: int, pi: np.ndarray, pj: np.ndarray, ps: np.ndarray) -> dict[int, tuple[int, float]]:
    """Visit items in order; a kept item removes its later neighbours. Returns j -> (kept i, score).

    Equivalent to the reference's greedy loop over a dense matrix, but on an edge list.
    """
    if len(pi) == 0:
        return {}
    order = np.lexsort((pj, pi))
    pi, pj, ps = pi[order], pj[order], ps[order]
    removed: dict[int, tuple[int, float]] = {}
    starts = np.searchsorted(pi, np.arange(n + 1))
    for i in np.unique(pi):
        if int(i) in removed:
            continue
        for k in range(starts[i], starts[i + 1]):
            j = int(pj[k])
            if j not in removed:
                removed[j] = (int(i), float(ps[k]))
    return removed

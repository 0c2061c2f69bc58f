"""Ranking metrics for extreme classification, vectorised over rows.

Definitions follow pyxclib and napkinxc (tests compare against ``napkinxc.metrics``):

- P@k = hits in top-k / k (k even when a row has fewer predictions or labels).
- R@k = hits / |y|; a row with no true label scores 0 and still counts (napkinxc, zero_division=0).
- nDCG@k = sum_{rank r <= k, hit} 1/log2(r+1) / sum_{r <= min(k, |y|)} 1/log2(r+1); 0 for empty rows.
- PSP@k = (sum over rows of sum_{top-k hits} w_l) / (sum over rows of the k largest w_l among the
  row's true labels): a ratio of TOTALS, as both pyxclib and napkinxc normalise.
- PSnDCG@k = (sum over rows of PSDCG_row / IDCG_row) / (sum over rows of best PSDCG_row / IDCG_row),
  IDCG_row the plain ideal DCG over min(k, |y|) (pyxclib and napkinxc agree).
- C@k = |labels hit in some row's top-k| / |labels present in the evaluated truth|.
- macroP/R/F1@k: per-label tp/fp/fn counted over every row's top-k, precision 0 where a label is
  never predicted, averaged over the labels PRESENT in the evaluated truth. napkinxc averages over
  every label id from 0 to the largest one it saw (predicted-only and never-seen ids count as 0),
  so the two agree exactly when every label id up to the largest occurs in the truth. (napkinxc's
  macro_*_at_k also ignores its k argument and always accumulates 1..5.)
- A ratio whose denominator is 0 (no true label in the evaluated rows) is reported as 0.

Row weights (``sample_weight``, bootstrap multiplicities): every per-row mean becomes a weighted
mean, the PS ratios become ratios of weighted totals, and coverage/macro count each row with its
weight, so integer weights equal evaluating the matrix with rows physically repeated.

Scores: every stored entry of the score matrix is a prediction (explicit zeros too); a missing
entry is "not predicted". Ties are broken deterministically, lower label id first (napkinxc
ranks CSR rows with numpy's unstable argsort, so its order among ties is unspecified).
``filter_pairs`` (row, label) are removed from the SCORES before the top-k is taken, so the next
prediction moves up; the truth is left unchanged (pyxclib-based upstream code zeroes those scores
and drops the zeros, which is the same ranking).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import scipy.sparse as sp

from lever_plugins.errors import ConfigError, DataError
from lever_plugins.metrics.propensity import binarise, inv_propensity, propensity_ab

FAMILIES = ("P", "nDCG", "PSP", "PSnDCG", "R", "C", "macroP", "macroR", "macroF1")
PS_FAMILIES = ("PSP", "PSnDCG")
LABEL_FAMILIES = ("C", "macroP", "macroR", "macroF1")


def _as_ks(k: int | Iterable[int]) -> tuple[int, ...]:
    ks = (k,) if isinstance(k, (int, np.integer)) else tuple(k)
    if not ks or any(not isinstance(x, (int, np.integer)) or x < 1 for x in ks):
        raise ConfigError(f"k must be positive integers, got {k!r}", where="eval.k", fix="e.g. k = [1, 3, 5]")
    return tuple(sorted({int(x) for x in ks}))


def _check_filter(filter_pairs: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray | None:
    if filter_pairs is None:
        return None
    fp = np.asarray(filter_pairs)
    if fp.size == 0:
        return None
    if fp.ndim != 2 or fp.shape[1] != 2 or not np.issubdtype(fp.dtype, np.integer):
        raise DataError(f"filter pairs must be an integer array of shape (k, 2), got {fp.dtype} {fp.shape}",
                        where="filter_pairs", fix="pass (row, label) pairs, e.g. Dataset.tst_filter")
    fp = fp.astype(np.int64)
    if fp.min() < 0 or fp[:, 0].max() >= shape[0] or fp[:, 1].max() >= shape[1]:
        raise DataError(f"filter pair out of range for a {shape[0]}x{shape[1]} score matrix",
                        where="filter_pairs", fix="check the filter file belongs to this test split")
    return fp


def _rank_rows(indptr: np.ndarray, data: np.ndarray, k: int) -> np.ndarray:
    """(n, k) positions into ``data`` of each CSR row's k largest values, descending, -1 padded.

    Equal values keep their stored order (stable sort). Rows are grouped by length class
    (powers of two) and each group is sorted as one padded 2-D array: a per-row sort without a
    Python loop over rows, and at most 2x padding (a global lexsort is several times slower).
    """
    n = len(indptr) - 1
    counts = np.diff(indptr)
    out = np.full((n, k), -1, dtype=np.int64)
    cls = np.zeros(n, dtype=np.int64)
    nz = counts > 0
    cls[nz] = np.ceil(np.log2(counts[nz])).astype(np.int64)
    for c in np.unique(cls[nz]):
        rws = np.flatnonzero(nz & (cls == c))
        width = int(counts[rws].max())
        offs = np.arange(width)
        valid = offs < counts[rws][:, None]
        idx = np.where(valid, indptr[rws][:, None] + offs, 0)
        # ascending sort of -value; padding (+inf) stays after real entries, even -inf scores
        keyv = np.where(valid, -data[idx], np.inf)
        order = np.argsort(keyv, axis=1, kind="stable")[:, :k]
        pos = np.take_along_axis(idx, order, axis=1)
        ok = np.take_along_axis(valid, order, axis=1)
        out[rws, : order.shape[1]] = np.where(ok, pos, -1)
    return out


def topk_labels(scores: sp.spmatrix, k: int, filter_pairs: np.ndarray | None = None) -> np.ndarray:
    """(n, k) int64 label ids ranked by score per row, padded with -1 where a row has fewer predictions.

    Ties: lower label id first. ``filter_pairs`` (row, label) are dropped from the scores first.
    """
    if not sp.issparse(scores):
        raise DataError(f"scores must be a scipy sparse matrix, got {type(scores).__name__}", where="scores",
                        fix="pass the top-k scores as a CSR matrix")
    s = sp.csr_matrix(scores, dtype=np.float64, copy=True)
    s.sum_duplicates()  # canonical: label-ascending within rows, which the stable sort keeps for ties
    if np.isnan(s.data).any():
        raise DataError("scores contain NaN", where="scores", fix="check the model's outputs")
    n, L = s.shape
    indptr, labels, data = s.indptr.astype(np.int64), s.indices.astype(np.int64), s.data
    fp = _check_filter(filter_pairs, (n, L))
    if fp is not None:
        rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(indptr))
        keep = ~np.isin(rows * L + labels, fp[:, 0] * L + fp[:, 1])
        labels, data = labels[keep], data[keep]
        indptr = np.concatenate(([0], np.cumsum(np.bincount(rows[keep], minlength=n))))
    pos = _rank_rows(indptr, data, k)
    return np.where(pos >= 0, labels[np.maximum(pos, 0)], -1)


def _lookup(truth: sp.csr_matrix, top: np.ndarray) -> np.ndarray:
    """Boolean (n, K): is top[i, j] a true label of row i. ``truth`` must be canonical CSR."""
    n, L = truth.shape
    tkeys = np.repeat(np.arange(n, dtype=np.int64), np.diff(truth.indptr)) * L + truth.indices
    q = np.arange(n, dtype=np.int64)[:, None] * L + top
    pos = np.searchsorted(tkeys, q)
    found = tkeys[np.minimum(pos, max(len(tkeys) - 1, 0))] == q if len(tkeys) else np.zeros(q.shape, bool)
    return found & (top >= 0)


def _best_weights(truth: sp.csr_matrix, w: np.ndarray, k: int) -> np.ndarray:
    """(n, k): each row's k largest label weights among its true labels, descending, 0-padded."""
    vals = w[truth.indices]
    pos = _rank_rows(truth.indptr.astype(np.int64), vals, k)
    return np.where(pos >= 0, vals[np.maximum(pos, 0)], 0.0)


class RankedEval:
    """Per-row metric numerators and per-label hit structures, computed once; summarised per weighting.

    ``summarise(w)`` gives the metrics for row weights ``w`` (bootstrap multiplicities); the paired
    bootstrap calls ``summarise_many`` on blocks of replicates, so each replicate costs one dense
    mat-vec plus a few sparse mat-vecs.
    """

    def __init__(self, scores: sp.spmatrix, truth: sp.spmatrix, ks: tuple[int, ...],
                 inv_ps: np.ndarray | None = None, filter_pairs: np.ndarray | None = None):
        y = binarise(truth, where="truth")
        if not sp.issparse(scores) or scores.shape != y.shape:
            got = scores.shape if sp.issparse(scores) else type(scores).__name__
            raise DataError(f"scores {got} and truth {y.shape} differ in shape", where="scores",
                            fix="predict for every test row over the full label set")
        if inv_ps is not None and len(inv_ps) != y.shape[1]:
            raise DataError(f"{len(inv_ps)} propensity weights for {y.shape[1]} labels", where="train labels",
                            fix="use the train matrix of the same data set")
        self.n, self.L = y.shape
        self.ks = ks
        self.has_ps = inv_ps is not None
        K = max(ks)
        top = topk_labels(scores, K, filter_pairs)
        hits = _lookup(y, top)
        self.top, self.hits = top, hits
        ny = np.diff(y.indptr)
        disc = 1.0 / np.log2(np.arange(2, K + 2))
        cum_hits = np.cumsum(hits, axis=1)
        cum_dcg = np.cumsum(hits * disc, axis=1)
        cols: dict[str, np.ndarray] = {}
        if self.has_ps:
            best = _best_weights(y, inv_ps, K)
            w_top = np.where(hits, inv_ps[np.maximum(top, 0)], 0.0)
            cum_ps = np.cumsum(w_top, axis=1)
            cum_best = np.cumsum(best, axis=1)
            cum_psdcg = np.cumsum(w_top * disc, axis=1)
            cum_best_dcg = np.cumsum(best * disc, axis=1)
        for k in ks:
            h = cum_hits[:, k - 1]
            # ideal DCG over min(k, |y|); rows with no label get a dummy 1 and score 0 (their DCG is 0)
            idcg = np.where(ny > 0, np.cumsum(disc)[np.clip(np.minimum(ny, k) - 1, 0, None)], 1.0)
            cols[f"P@{k}"] = h / k
            cols[f"R@{k}"] = h / np.maximum(ny, 1)
            cols[f"nDCG@{k}"] = cum_dcg[:, k - 1] / idcg
            if self.has_ps:
                cols[f"PSP@{k}/num"] = cum_ps[:, k - 1]
                cols[f"PSP@{k}/den"] = cum_best[:, k - 1]
                cols[f"PSnDCG@{k}/num"] = cum_psdcg[:, k - 1] / idcg
                cols[f"PSnDCG@{k}/den"] = cum_best_dcg[:, k - 1] / idcg
        self.col_names = list(cols)
        self.row_matrix = np.column_stack([cols[c] for c in self.col_names])  # (n, m)

        # Label side, restricted to labels present in the truth: only they enter coverage and macro.
        present = np.unique(y.indices)
        self.n_truth_labels = len(present)
        self._col_of = np.full(self.L, -1, dtype=np.int64)
        self._col_of[present] = np.arange(len(present))
        self._y_cols = self._col_of[y.indices]
        self._y_rows = np.repeat(np.arange(self.n, dtype=np.int64), ny)
        self._pairs: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._mats: dict[int | None, tuple[sp.csr_matrix, ...]] = {}

    def _label_pairs(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(label column, row, hit) of every top-k prediction on a label present in the truth."""
        if k not in self._pairs:
            lab = self.top[:, :k]
            mask = (lab >= 0) & (self._col_of[np.maximum(lab, 0)] >= 0)
            rows = np.broadcast_to(np.arange(self.n, dtype=np.int64)[:, None], lab.shape)[mask]
            self._pairs[k] = (self._col_of[lab[mask]], rows, self.hits[:, :k][mask])
        return self._pairs[k]

    def _label_counts(self, k: int | None, W: np.ndarray) -> tuple[np.ndarray, ...]:
        """Weighted per-label counts, (L', b) each: truth rows (k None), else (top-k hits, top-k predictions).

        One weighting (plain evaluate): bincount. Many (bootstrap): sparse (labels x rows) matrices,
        built once and cached, times the dense (rows x b) weights.
        """
        Lp = self.n_truth_labels
        if W.shape[0] == 1:
            w = W[0]
            if k is None:
                return (np.bincount(self._y_cols, weights=w[self._y_rows], minlength=Lp)[:, None],)
            c, r, h = self._label_pairs(k)
            return (np.bincount(c[h], weights=w[r[h]], minlength=Lp)[:, None],
                    np.bincount(c, weights=w[r], minlength=Lp)[:, None])
        if k not in self._mats:
            if k is None:
                c, r, h = self._y_cols, self._y_rows, np.ones(len(self._y_cols), bool)
            else:
                c, r, h = self._label_pairs(k)
            mk = lambda cc, rr: sp.csr_matrix((np.ones(len(cc)), (cc, rr)), shape=(Lp, self.n))  # noqa: E731
            self._mats[k] = (mk(c, r),) if k is None else (mk(c[h], r[h]), mk(c, r))
        WT = np.ascontiguousarray(W.T)
        return tuple(m @ WT for m in self._mats[k])

    def keys(self) -> list[str]:
        fams = [f for f in FAMILIES if self.has_ps or f not in PS_FAMILIES]
        return [f"{f}@{k}" for f in fams for k in self.ks]

    def parse_key(self, key: str) -> tuple[str, int]:
        """"PSP@5" -> ("PSP", 5); a ConfigError for a metric this evaluation cannot give."""
        fam, _, ks = key.partition("@")
        if key not in self.keys():
            hint = " (PSP/PSnDCG need the train label matrix)" if fam in PS_FAMILIES and not self.has_ps else ""
            raise ConfigError(f"unknown or unavailable metric {key!r}{hint}", where="metrics",
                              fix=f"choose from {', '.join(self.keys())}")
        return fam, int(ks)

    def check_weights(self, sample_weight: np.ndarray | None) -> np.ndarray:
        if sample_weight is None:
            return np.ones(self.n)
        w = np.asarray(sample_weight, dtype=np.float64)
        if w.shape != (self.n,) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise DataError(f"sample_weight must be {self.n} finite non-negative values with a positive sum",
                            where="sample_weight", fix="pass one multiplicity per test row")
        return w

    def summarise(self, sample_weight: np.ndarray | None = None) -> dict[str, float]:
        """Metrics as fractions in [0, 1]; ``sample_weight`` = per-row multiplicities."""
        w = self.check_weights(sample_weight)
        out = self.summarise_many(w[None, :])
        return {key: float(v[0]) for key, v in out.items()}

    def summarise_many(self, W: np.ndarray, keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Metrics for each row of the (b, n) replicate-by-row weight matrix ``W``: {key: (b,) array}."""
        W = np.asarray(W, dtype=np.float64)
        keys = self.keys() if keys is None else list(keys)
        parsed = [self.parse_key(key) for key in keys]
        wsum = W.sum(axis=1)
        # (b, n) @ (n, m): this orientation; M.T @ W is ~50x slower in OpenBLAS on a busy machine
        tot = dict(zip(self.col_names, (W @ self.row_matrix).T, strict=True))
        out: dict[str, np.ndarray] = {}
        need_label = sorted({k for fam, k in parsed if fam in LABEL_FAMILIES})
        if need_label:
            (t_cnt,) = self._label_counts(None, W)  # (L', b): weighted count of rows holding each label
            present = t_cnt > 0
            n_present = present.sum(axis=0)
        label_stats = {k: self._label_counts(k, W) for k in need_label}
        with np.errstate(divide="ignore", invalid="ignore"):
            for key, (fam, k) in zip(keys, parsed, strict=True):
                if fam in ("P", "R", "nDCG"):
                    out[key] = tot[key] / wsum
                elif fam in PS_FAMILIES:
                    num, den = tot[f"{key}/num"], tot[f"{key}/den"]
                    out[key] = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
                else:
                    tp, pred = label_stats[k]
                    if fam == "C":
                        per = (tp > 0).astype(np.float64)
                    elif fam == "macroP":
                        per = np.where(pred > 0, tp / np.where(pred > 0, pred, 1.0), 0.0)
                    elif fam == "macroR":
                        per = np.where(present, tp / np.where(present, t_cnt, 1.0), 0.0)
                    else:  # F1 = 2tp / (2tp + fp + fn) = 2tp / (predicted + true)
                        d = pred + t_cnt
                        per = np.where(d > 0, 2 * tp / np.where(d > 0, d, 1.0), 0.0)
                    per = np.where(present, per, 0.0)
                    out[key] = np.where(n_present > 0, per.sum(axis=0) / np.maximum(n_present, 1), 0.0)
        return out


def _resolve_ps(train_truth: sp.spmatrix | None, A: float | None, B: float | None,
                name: str) -> np.ndarray | None:
    if train_truth is None:
        if A is not None or B is not None:
            raise ConfigError("propensity A/B given without a train label matrix", where="eval.A/eval.B",
                              fix="pass train_truth (the original binarised train matrix) or drop A/B")
        return None
    a0, b0 = propensity_ab(name)
    return inv_propensity(train_truth, a0 if A is None else A, b0 if B is None else B)


def prepare_eval(scores: sp.spmatrix, truth: sp.spmatrix, train_truth: sp.spmatrix | None = None,
                 k: int | Iterable[int] = (1, 3, 5), A: float | None = None, B: float | None = None,
                 filter_pairs: np.ndarray | None = None, name: str = "") -> RankedEval:
    """Rank once and precompute everything ``evaluate`` needs (reused by the bootstrap)."""
    inv_ps = _resolve_ps(train_truth, A, B, name)
    return RankedEval(scores, truth, _as_ks(k), inv_ps, filter_pairs)


def evaluate(scores: sp.spmatrix, truth: sp.spmatrix, train_truth: sp.spmatrix | None = None,
             k: int | Iterable[int] = (1, 3, 5), A: float | None = None, B: float | None = None,
             filter_pairs: np.ndarray | None = None, name: str = "",
             sample_weight: np.ndarray | None = None) -> dict[str, float]:
    """P, nDCG, PSP, PSnDCG, R, C, macroP/R/F1 at each k, as fractions in [0, 1].

    ``scores`` (n × L CSR): predicted scores, only the top max(k) per row matter. ``truth``: the
    test labels (binarised). PSP/PSnDCG need ``train_truth`` (inverse propensities from its
    binarised column sums; A/B default by ``name`` via ``propensity_ab``) and are omitted without it.
    ``sample_weight``: non-negative per-row multiplicities; every mean becomes a weighted mean and
    coverage/macro count rows with their weight (integer weights = rows physically repeated).
    """
    ev = prepare_eval(scores, truth, train_truth, k, A, B, filter_pairs, name)
    return ev.summarise(sample_weight)

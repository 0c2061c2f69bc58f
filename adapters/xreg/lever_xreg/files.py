"""XReg's inputs and outputs: feature and target files in XC sparse text, its score file back as CSR.

XReg reads every matrix as ``rows cols`` then one row per line of ``index:value`` (the pyxclib format of
:func:`lever_plugins.data.write_sparse`); a row of the feature file is a point, a row of the label file
its targets. Its predictor writes the same format: one line per test point with its top 100 labels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp

from lever_plugins.data import read_sparse
from lever_plugins.errors import DataError, LeverError

# xreg_predict prints the 6th score of the 6th test point after predicting: with fewer rows it reads
# past the score matrix and crashes (SOURCE.md), so the test file gets padding rows.
MIN_TEST_ROWS = 6


def soft_targets(targets: sp.spmatrix) -> sp.csr_matrix:
    """The targets as XReg's ``-w 1`` expects them: CSR float32, values in [0, 1], no stored zeros (XReg
    treats every stored entry as a positive, a stored 0 as a positive of weight 0)."""
    t = sp.csr_matrix(targets, dtype=np.float32, copy=True)  # never edit the caller's matrix in place
    t.sum_duplicates()
    t.eliminate_zeros()
    if t.nnz and (t.data.min() < 0 or t.data.max() > 1):
        bad = float(t.data.max() if t.data.max() > 1 else t.data.min())
        raise DataError(
            f"target value {bad:g} outside [0, 1]",
            where="trainer.adapter = xreg",
            fix="XReg (-w 1) regresses relevance in [0, 1]: check [soft_labels] calibration and blend_mode",
        )
    t.sort_indices()
    return t


def tfidf_features(
    vocab_texts: list[str], row_texts: list[str], tst_texts: list[str], min_df: int = 1, max_features: int | None = None
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Bag-of-words TF-IDF (sublinear tf, smoothed idf, L2 rows) with its vocabulary and idf from
    ``vocab_texts`` (the training documents and label texts, the same in both arms), applied to the
    training rows and the test documents. CSR float32, sorted indices."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(sublinear_tf=True, min_df=min_df, max_features=max_features, dtype=np.float32)
    try:
        vec.fit(vocab_texts)
    except ValueError as exc:  # no token of two or more word characters
        raise LeverError(
            f"no TF-IDF vocabulary in {len(vocab_texts)} training and label texts: {exc}",
            where="trainer.adapter = xreg",
            fix="check [data] text, or use [trainer] options = { features = \"encoder\" }",
        ) from exc
    out = []
    for texts in (row_texts, tst_texts):
        m = sp.csr_matrix(vec.transform(texts), dtype=np.float32)
        m.sort_indices()
        out.append(m)
    return out[0], out[1]


def dense_features(x: np.ndarray, rows: int, what: str) -> sp.csr_matrix:
    """Frozen-encoder embeddings as a sparse matrix for XReg (it normalises rows itself)."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] != rows or x.shape[1] == 0:
        raise LeverError(
            f"encoder features of the {what} rows have shape {x.shape}, expected ({rows}, d > 0)",
            where="trainer.adapter = xreg, features = encoder",
            fix="run through `lever ab` / `lever wrap`, which encode the texts with [encoder] model",
        )
    m = sp.csr_matrix(x)
    m.sort_indices()
    return m


def pad_rows(x: sp.csr_matrix, min_rows: int = MIN_TEST_ROWS) -> tuple[sp.csr_matrix, int]:
    """``x`` with copies of its first row appended up to ``min_rows`` rows (empty rows if it has none),
    and how many were added; their predictions are dropped when the scores are read back."""
    n_pad = max(0, min_rows - x.shape[0])
    if n_pad == 0:
        return x, 0
    filler = x[[0] * n_pad] if x.shape[0] else sp.csr_matrix((n_pad, x.shape[1]), dtype=x.dtype)
    return sp.vstack([x, filler], format="csr"), n_pad


def read_scores(path: Path, n_rows: int, n_labels: int, top_k: int) -> sp.csr_matrix:
    """XReg's score file as CSR (n_rows × n_labels): the first ``n_rows`` rows (padding dropped), each
    row's ``top_k`` highest scores."""
    s = read_sparse(path, n_cols=n_labels, nonneg=False)
    if s.shape[0] < n_rows:
        raise DataError(
            f"XReg wrote scores for {s.shape[0]} test rows, expected at least {n_rows}",
            where=str(path),
            fix="the predictor stopped early: read upstream.log beside it",
        )
    return top_k_rows(s[:n_rows].tocsr(), top_k)


def top_k_rows(s: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Each row's ``k`` highest entries (ties: lower label first), CSR with sorted indices."""
    s = sp.csr_matrix(s, dtype=np.float32, copy=True)
    s.sort_indices()
    counts = np.diff(s.indptr)
    if counts.max(initial=0) <= k:
        return s
    rows = np.repeat(np.arange(s.shape[0]), counts)
    order = np.lexsort((s.indices, -s.data, rows))  # by row, then score descending, then label
    rank = np.arange(s.nnz) - np.repeat(s.indptr[:-1], counts)
    keep = order[rank < k]  # rank within the row of each position of the sorted order
    out = sp.csr_matrix((s.data[keep], (rows[keep], s.indices[keep])), shape=s.shape, dtype=np.float32)
    out.sort_indices()
    return out

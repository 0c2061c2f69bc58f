"""Build LEVER's augmented targets: labels as documents (N+L rows) plus teacher kNN soft labels.

Semantics follow the official ``create_teacher_distilled_dataset.py`` (``augment_lbls`` and
``augment_docs``), with its bugs fixed (see notes/upstream-lever_official.md §3):

* Label rows (``label_rows``): row N+l holds label l (hard 1). Walk l's label neighbours in order
  (score desc, id asc), stop at the first calibrated score below ``threshold``, skip labels already in
  the row (l itself), add (N+l, l', p) until the row holds ``tau_l`` labels: at most tau_l − 1 added.
* Document top-up (``tau_d`` > 0): a label's count is its column sum in the HARD augmented matrix
  (its own label row included, teacher-added label-row entries not, exactly as upstream). A label with
  count < tau_d walks its nearest training documents the same way, skipping documents that are
  already positives, adding (doc, l, p) until its count reaches tau_d. Labels are independent, so the
  upstream visiting order (increasing count) does not matter.
* Scores are compared in float32 and ``p == threshold`` is kept. Ground truth is never overwritten:
  ``soft`` holds only teacher-added pairs, disjoint from ``y_aug``.
* Labels without text (``has_text[l]`` False): their embedding is an encoding of the empty string and
  says nothing about the label, so they neither walk neighbours (no label-row neighbours, no document
  top-up) nor appear as anyone's neighbour; their label row still holds the label itself.

Everything is vectorised over chunks of ``chunk_size`` labels: the walk "stop at the first score below
the threshold, skip existing, take until the count" is a prefix-AND, a mask and a cumsum on the
(chunk × k) neighbour arrays; membership of (doc, label) in the training matrix is a searchsorted on
sorted int64 keys label·N + doc.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from lever_plugins.config import SoftLabelConfig
from lever_plugins.errors import ConfigError, DataError
from lever_plugins.soft_labels.calibrate import calibrate, resolved, threshold_cosine
from lever_plugins.soft_labels.knn import iter_knn


@dataclass
class SoftLabels:
    """``y_aug``: CSR (N+L)×L float32 hard targets (binarised train rows, then the L×L identity when
    label rows are on; N×L otherwise). ``soft``: CSR of the same shape with ONLY the teacher-added
    pairs and their calibrated scores. ``n_docs``: N, the first row of the label rows."""

    y_aug: sp.csr_matrix
    soft: sp.csr_matrix
    n_docs: int
    stats: dict[str, Any] = field(default_factory=dict)


def binarize(y: sp.spmatrix) -> sp.csr_matrix:
    """CSR float32 with 1 at every stored nonzero (AOL stores query frequencies)."""
    y = sp.csr_matrix(y, dtype=np.float32, copy=True)
    y.eliminate_zeros()
    y.sum_duplicates()
    y.data[:] = 1.0
    y.sort_indices()
    return y


def walk(p: np.ndarray, ids: np.ndarray, skip: np.ndarray, need: np.ndarray, threshold: float) -> np.ndarray:
    """Mask of the neighbours the official walk takes, row by row, without a Python loop over rows.

    ``p``/``ids``: (rows × k) calibrated scores and ids in walk order; ``skip``: neighbours already
    present (passed over, not counted, the walk goes on); ``need``: how many each row may still add.
    The walk stops at the first score below ``threshold`` or at padding (id -1).
    """
    alive = np.logical_and.accumulate((ids >= 0) & (p >= np.float32(threshold)), axis=1)
    cand = alive & ~skip
    return cand & (np.cumsum(cand, axis=1) <= need[:, None])


def _check_inputs(
    y: sp.csr_matrix,
    doc_emb: np.ndarray | None,
    lbl_emb: np.ndarray,
    has_text: np.ndarray | None,
    config: SoftLabelConfig,
) -> np.ndarray:
    n, n_lbl = y.shape
    if lbl_emb.ndim != 2 or lbl_emb.shape[0] != n_lbl:
        raise DataError(
            f"label embeddings have shape {lbl_emb.shape} but the train matrix has {n_lbl} labels",
            where="soft_labels",
            fix="embed every label text, in label-id order",
        )
    if config.tau_d > 0:
        if doc_emb is None:
            raise ConfigError(
                "soft_labels.tau_d > 0 needs training-document embeddings",
                where="soft_labels.tau_d",
                fix="pass doc_emb or set tau_d = 0",
            )
        if doc_emb.ndim != 2 or doc_emb.shape[0] != n or doc_emb.shape[1] != lbl_emb.shape[1]:
            raise DataError(
                f"document embeddings have shape {doc_emb.shape}, expected ({n}, {lbl_emb.shape[1]})",
                where="soft_labels",
                fix="embed every training document with the same teacher as the labels",
            )
    if config.tau_l < 1 or config.tau_d < 0 or config.k < 1:
        raise ConfigError("soft_labels needs tau_l >= 1, tau_d >= 0 and k >= 1", where="soft_labels")
    if has_text is None:
        return np.ones(n_lbl, dtype=bool)
    has_text = np.asarray(has_text, dtype=bool)
    if has_text.shape != (n_lbl,):
        raise DataError(f"has_text has shape {has_text.shape}, expected ({n_lbl},)", where="soft_labels")
    return has_text


PairChunk = tuple[np.ndarray, np.ndarray, np.ndarray]  # (rows, cols, calibrated scores) of one query chunk


@dataclass
class _Counters:
    label_pairs: int = 0
    doc_pairs: int = 0
    below_tau_d: int = 0
    seconds_knn: float = 0.0
    knn: dict[str, dict[str, Any]] = field(default_factory=dict)  # per search: method, parameter, recall


def _probs(cos: np.ndarray, config: SoftLabelConfig) -> np.ndarray:
    return calibrate(cos, config.calibration, config.sigmoid_a, config.sigmoid_c)


def iter_soft_pairs(
    y: sp.csr_matrix,
    doc_emb: np.ndarray | None,
    lbl_emb: np.ndarray,
    config: SoftLabelConfig,
    has_text: np.ndarray,
    counters: _Counters | None = None,
    knn_options: dict[str, Any] | None = None,
    distributed: bool = False,
) -> Iterator[PairChunk]:
    """The teacher-added pairs, one query chunk at a time: first the label rows (rows N+l, in increasing
    l), then the document top-up (rows are documents, in no particular order). ``y`` is binarised;
    ``has_text`` checked. Both builders consume this, so they produce the same pairs."""
    n, n_lbl = y.shape
    config = resolved(config, n_lbl)
    c = counters or _Counters()
    # the recall target counts the neighbours that can become soft labels: cosine >= the threshold's
    knn_opts = dict(index=config.index, chunk_size=config.chunk_size, distributed=distributed, recall=config.recall,
                    recall_sample=config.recall_sample, exact_max_ops=config.exact_max_ops,
                    recall_min_score=threshold_cosine(config.threshold, config.calibration, config.sigmoid_a,
                                                      config.sigmoid_c))
    knn_opts.update(knn_options or {})
    texted = np.flatnonzero(has_text)

    # -- label rows: row N+l gets up to tau_l - 1 label neighbours
    if config.label_rows and config.tau_l > 1 and texted.size:
        base = lbl_emb if texted.size == n_lbl else lbl_emb[texted]  # no copy of a 10^6 × d array
        need_all = np.full(config.chunk_size, config.tau_l - 1, dtype=np.int64)
        t = time.perf_counter()
        c.knn["labels"] = {}
        for s, cos, pos in iter_knn(base, base, config.k, info=c.knn["labels"], **knn_opts):
            ids = np.where(pos >= 0, texted[np.maximum(pos, 0)], -1)  # back to label ids
            lab = texted[s : s + len(ids)]
            p = _probs(cos, config)
            take = walk(p, ids, ids == lab[:, None], need_all[: len(ids)], config.threshold)
            r, k = np.nonzero(take & (p > 0))  # a score of 0 (threshold 0) adds no mass: never stored
            c.label_pairs += r.size
            c.seconds_knn += time.perf_counter() - t
            yield n + lab[r], ids[r, k], p[r, k]
            t = time.perf_counter()
        c.seconds_knn += time.perf_counter() - t

    # -- document top-up: labels with fewer than tau_d hard positives get their nearest documents
    if config.tau_d > 0:
        count = np.bincount(y.indices, minlength=n_lbl).astype(np.int64)
        if config.label_rows:
            count += 1
        short = np.flatnonzero((count < config.tau_d) & has_text)
        c.below_tau_d = int(short.size)
        if short.size and n > 0:
            yc = y.tocoo()
            keys = np.sort(yc.col.astype(np.int64) * n + yc.row.astype(np.int64))
            del yc
            t = time.perf_counter()
            c.knn["docs"] = {}
            for s, cos, docs in iter_knn(lbl_emb[short], doc_emb, config.k, info=c.knn["docs"], **knn_opts):
                lab = short[s : s + len(docs)]
                q = lab[:, None] * n + docs
                pos = np.minimum(np.searchsorted(keys, q), max(keys.size - 1, 0))
                known = (keys[pos] == q) if keys.size else np.zeros(q.shape, dtype=bool)
                p = _probs(cos, config)
                take = walk(p, docs, known, config.tau_d - count[lab], config.threshold)
                r, k = np.nonzero(take & (p > 0))
                c.doc_pairs += r.size
                c.seconds_knn += time.perf_counter() - t
                yield docs[r, k], lab[r], p[r, k]
                t = time.perf_counter()
            c.seconds_knn += time.perf_counter() - t


def soft_stats(c: _Counters, labels_touched: int, n_without_text: int, score_sum: float, n_pairs: int,
               seconds: float) -> dict[str, Any]:
    return {
        "pairs_label_rows": int(c.label_pairs),
        "pairs_doc_topup": int(c.doc_pairs),
        "labels_touched": int(labels_touched),
        "labels_below_tau_d": int(c.below_tau_d),
        "labels_without_text": int(n_without_text),
        "mean_score": float(score_sum / n_pairs) if n_pairs else 0.0,
        "seconds_neighbours": round(c.seconds_knn, 3),  # kNN search and walks
        "knn": c.knn,  # per search (labels, docs): exact or approximate, its parameter, the recall reached
        "seconds": round(seconds, 3),
    }


def build_soft_labels(
    y_trn: sp.spmatrix,
    doc_emb: np.ndarray | None,
    lbl_emb: np.ndarray,
    config: SoftLabelConfig,
    has_text: np.ndarray | None = None,
    *,
    knn_options: dict[str, Any] | None = None,
    distributed: bool = False,
) -> SoftLabels:
    """Augmented hard targets and teacher soft labels from teacher embeddings (module doc: the rules).

    ``y_trn``: N×L train matrix (binarised here); ``doc_emb``: N×d training-document embeddings (only
    needed when tau_d > 0); ``lbl_emb``: L×d label embeddings; ``has_text``: bool per label, False for
    labels whose text is empty. ``knn_options``: extra arguments of :func:`iter_knn` (``ivf_nlist``,
    ``nprobe``, ...); ``distributed``: under torchrun, the kNN is sharded over the ranks (every rank
    must call this and gets the whole result). For L and N too large to hold the output in memory, see
    :func:`lever_plugins.soft_labels.stream.write_soft_labels`.
    """
    t0 = time.perf_counter()
    y = binarize(y_trn)
    n, n_lbl = y.shape
    has_text = _check_inputs(y, doc_emb, lbl_emb, has_text, config)
    if config.label_rows:
        y_aug = sp.vstack([y, sp.identity(n_lbl, dtype=np.float32, format="csr")], format="csr")
    else:
        y_aug = y
    y_aug = y_aug.astype(np.float32)
    y_aug.sort_indices()
    counters = _Counters()
    parts = list(iter_soft_pairs(y, doc_emb, lbl_emb, config, has_text, counters, knn_options, distributed))
    if parts:
        rows = np.concatenate([p[0] for p in parts])
        cols = np.concatenate([p[1] for p in parts])
        vals = np.concatenate([p[2] for p in parts]).astype(np.float32)
    else:
        rows = cols = np.zeros(0, dtype=np.int64)
        vals = np.zeros(0, dtype=np.float32)
    soft = sp.csr_matrix((vals, (rows, cols)), shape=(y_aug.shape[0], n_lbl), dtype=np.float32)
    soft.sort_indices()
    stats = soft_stats(counters, np.unique(cols).size, n_lbl - int(has_text.sum()), float(vals.sum()), vals.size,
                       time.perf_counter() - t0)
    return SoftLabels(y_aug=y_aug, soft=soft, n_docs=n, stats=stats)

"""The ``napkinxc`` adapter: napkinXC's PLT on TF-IDF features, LEVER in binary form.

napkinXC trains on binary labels only: ``fit(X, Y)`` takes Y as lists of label ids (or a matrix
whose values it ignores) and has no sample or label weights; ``labels_weights`` exists only at
prediction, to re-rank by weight × probability. So a soft target reaches it as a threshold: a
training pair is a positive when its blended target is >= ``positive_threshold``.

Default threshold 0.5: the blended target is the probability the pair is relevant, and 0.5 keeps
exactly the pairs more likely relevant than not. With ``blend_mode = "union"`` (the official LEVER
matrix: 1 on ground truth, p̂ >= the soft-label threshold on teacher pairs) every teacher pair
becomes a positive, i.e. the binarised LEVER matrix is the union of ground truth and teacher pairs.
With ``"paper"`` a teacher-only pair has (1 − λ)·p̂, which is below 0.5 unless λ is small; to keep
those pairs there, lower the threshold to at most (1 − λ) × the soft-label threshold.

Rows with no positive after thresholding are dropped: a PLT row with no label trains only the root
as a negative, and the base arm (N binary rows) should see exactly the rows it always saw.
"""

from __future__ import annotations

import importlib.metadata as md
import re
import time
from typing import Any

import numpy as np
import scipy.sparse as sp

from lever_plugins.adapter import Arm, LossFn
from lever_plugins.errors import ConfigError, LeverError

DIST = "napkinxc"
MIN_VERSION = (0, 6)
DEFAULT_POSITIVE_THRESHOLD = 0.5


def installed_version() -> str | None:
    try:
        return md.version(DIST)
    except md.PackageNotFoundError:
        return None


def _version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v)[:3])


def to_binary_labels(targets: sp.spmatrix, threshold: float = DEFAULT_POSITIVE_THRESHOLD) -> list[list[int]]:
    """Per row, the label ids whose target is >= ``threshold`` (sorted): what napkinXC trains on."""
    t = sp.csr_matrix(targets)
    t.sum_duplicates()
    keep = t.data >= threshold
    rows = np.repeat(np.arange(t.shape[0]), np.diff(t.indptr))[keep]
    cols = t.indices[keep]
    order = np.lexsort((cols, rows))
    rows, cols = rows[order], cols[order]
    bounds = np.searchsorted(rows, np.arange(t.shape[0] + 1))
    cols_list = cols.tolist()
    return [cols_list[bounds[i] : bounds[i + 1]] for i in range(t.shape[0])]


def train_predict_texts(
    trn_texts: list[str],
    targets: sp.spmatrix,
    tst_texts: list[str],
    top_k: int = 100,
    seed: int = 13,
    positive_threshold: float = DEFAULT_POSITIVE_THRESHOLD,
    threads: int = 1,
    min_df: int = 1,
    **plt_params: Any,
) -> tuple[sp.csr_matrix, dict[str, Any]]:
    """TF-IDF (fitted on ``trn_texts``), binarised targets, PLT, top-k scores (CSR n_test × L) and stats."""
    from lever_napkinxc.features import tfidf
    from lever_napkinxc.model import fit_predict

    if len(trn_texts) != targets.shape[0]:
        raise LeverError(
            f"{len(trn_texts)} training texts for {targets.shape[0]} target rows",
            where="trainer.adapter = napkinxc",
            fix="pass one text per training row (documents, then label texts for the N + L rows)",
        )
    n_labels = targets.shape[1]
    labels = to_binary_labels(targets, positive_threshold)
    kept = np.fromiter((i for i, row in enumerate(labels) if row), dtype=np.int64)
    if len(kept) == 0:
        raise LeverError(
            f"no training pair has a target >= {positive_threshold}",
            where="napkinxc positive_threshold",
            fix="lower the threshold (blend_mode 'paper' gives teacher pairs (1 - lambda) * p)",
        )
    t0 = time.perf_counter()
    feats = tfidf([trn_texts[i] for i in kept], tst_texts, min_df=min_df)
    feature_seconds = time.perf_counter() - t0
    scores, stats = fit_predict(
        feats.x_trn, [labels[i] for i in kept], feats.x_tst, n_labels,
        top_k=top_k, seed=seed, threads=threads, **plt_params,
    )  # fmt: skip
    stats.update(
        rows=int(len(kept)),
        rows_dropped=int(len(labels) - len(kept)),
        positives=int(sum(len(labels[i]) for i in kept)),
        labels=int(n_labels),
        features_dim=int(feats.dim),
        feature_seconds=round(feature_seconds, 4),
        positive_threshold=float(positive_threshold),
        napkinxc=installed_version(),
    )
    return scores, stats


class NapkinxcAdapter:
    """napkinXC's PLT (from PyPI) as a LEVER trainer (a :class:`lever_plugins.adapter.Adapter`). Nothing
    to patch: LEVER reaches it through its training data (binarised N + L rows). napkinXC has no loss to
    replace, so ``takes_loss_hook`` is False."""

    name = "napkinxc"
    upstream = "napkinxc (PyPI)"
    needs_features = False  # TF-IDF of the arm's texts, built here
    takes_sparse = False
    supports_finetune = False
    takes_loss_hook = False

    def __init__(
        self,
        positive_threshold: float = DEFAULT_POSITIVE_THRESHOLD,
        threads: int = 1,
        min_df: int = 1,
        **plt_params: Any,
    ):
        # threads = 1 by default: with more, LIBLINEAR's rand() draws interleave and runs differ.
        self.positive_threshold = positive_threshold
        self.threads = threads
        self.min_df = min_df
        self.plt_params = plt_params

    def problems(self) -> list[str]:
        """What stops training: napkinxc missing, too old, or its extension not importable."""
        v = installed_version()
        want = ".".join(map(str, MIN_VERSION))
        if v is None:
            return [f"napkinxc is not installed (pip install 'napkinxc>={want}')"]
        problems = []
        if _version_tuple(v) < MIN_VERSION:
            problems.append(f"napkinxc {v} is older than {want} (pip install -U 'napkinxc>={want}')")
        try:
            from napkinxc.models import PLT  # noqa: F401  (the compiled extension loads here)
        except Exception as exc:  # a broken wheel surfaces as any import-time error
            problems.append(f"napkinxc {v} does not import: {exc}")
        return problems

    def preflight(self, config: Any) -> None:
        if config.upstream_args:
            raise ConfigError(
                f"adapter {self.name!r} takes no upstream arguments {list(config.upstream_args)}",
                where="[trainer] upstream_args",
                fix="drop them",
            )
        problems = self.problems()
        if problems:
            raise LeverError(problems[0], where="trainer.adapter = napkinxc", fix="see `lever plugins`")

    def train_predict(self, arm: Arm, config: Any, loss: LossFn) -> tuple[sp.csr_matrix, dict[str, Any]]:
        """PLT on TF-IDF of the arm's texts (``arm.x_train``/``arm.x_test`` are not used). Returns top-
        ``config.top_k`` scores (CSR n_test × L) and stats."""
        problems = self.problems()
        if problems:
            raise LeverError(problems[0], where="trainer.adapter = napkinxc", fix="see `lever plugins`")
        return train_predict_texts(
            list(arm.trn_texts), arm.targets, list(arm.tst_texts), top_k=int(config.top_k), seed=int(arm.seed),
            positive_threshold=self.positive_threshold, threads=self.threads, min_df=self.min_df,
            **self.plt_params,
        )  # fmt: skip

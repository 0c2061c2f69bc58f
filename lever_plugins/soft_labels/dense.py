"""Dense distillation targets (``[soft_labels] mode = "dense"``): the teacher's score on EVERY pair.

The sparse path keeps p̂ only for the kNN pairs above the threshold and leaves 0 everywhere else, so
the student never sees what the teacher thinks of the other L − k labels of a document. Here the
training target of row i and label l is the paper's objective written as one BCE target,

    t_il = λ·y_il + (1 − λ)·p̂_il,    p̂_il = calibrate(⟨u_i, v_l⟩)

with u_i the teacher embedding of training row i (a document, or a label text for the label rows) and
v_l the teacher embedding of label l, for every column the trainer scores: all L labels in full mode,
each batch's candidates (positives, mined hard negatives, random negatives) in shortlist mode. Nothing
N × L is stored: a block of targets costs one (rows × d) · (d × cols) product, the same as the logits
the trainer computes for it. ``truth = "one"`` keeps ground-truth pairs at 1 (LEVER only adds mass);
``"blend"`` is the formula above as written.

The calibration must keep the signal soft: a sharp sigmoid leaves most targets near 0 and gives no
gradient for tail labels, so ``linear`` (1 + cos)/2 and a temperature ``sigmoid((cos − c)/T)`` are the
choices; ``sigmoid`` with ``a``/``c`` as in the sparse path is accepted too.

Adapters that only take a stored target matrix get the sparse top-k export of the same teacher (the
kNN soft labels of the sparse path): they lose every pair below the threshold or past the k-th
neighbour, which is what dense mode exists to keep.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from lever_plugins.errors import ConfigError, DataError

TRUTH = ("one", "blend")
START = ("centroids", "teacher")


def weigh_truth(loss_fn: Callable, w: float) -> Callable:
    """``loss_fn`` (a mean over entries, the ``lever_loss`` contract) with the entries whose target is 1 weighing
    ``w`` times every other entry: Σ w_il·ℓ_il / entries. Any loss that is a mean of per-entry terms is weighted
    exactly, because it is called again on the weighted entries. ``w`` = 1 returns ``loss_fn`` itself."""
    w = float(w)
    if w == 1.0:
        return loss_fn

    def loss(logits, targets):
        out = loss_fn(logits, targets)
        truth = targets >= 1.0
        n = int(truth.sum())
        if n:
            out = out + (w - 1.0) * (n / targets.numel()) * loss_fn(logits[truth], targets[truth])
        return out

    return loss


@dataclass(frozen=True)
class DenseTargets:
    """Targets computed block by block. ``hard``: M×L binary (ground truth, and each label row's own
    label); ``rows``: M×d teacher embeddings of the training rows; ``labels``: L×d teacher label
    embeddings; ``lam``: weight of the hard target; ``calibration``: "linear" or "sigmoid" with
    ``a`` (scale) and ``c`` (offset): σ(a·cos + c); ``head`` > 0: a label with n > ``head`` positives in
    ``hard`` gets the teacher's weight (1 − λ)·head/n instead of 1 − λ (the teacher serves the tail; the
    head keeps its own data); ``truth_weight``: ground-truth pairs weigh this much in the loss, every other pair
    1 (:meth:`weighted_loss`); ``start``: where the built-in trainer's head starts,
    "centroids" (its default) or "teacher" (:meth:`student_init`)."""

    hard: sp.csr_matrix
    rows: np.ndarray
    labels: np.ndarray
    lam: float = 0.5
    calibration: str = "linear"
    a: float = 1.0
    c: float = 0.0
    truth: str = "one"
    start: str = "centroids"
    head: float = 0.0
    truth_weight: float = 1.0

    def __post_init__(self) -> None:
        M, L = self.hard.shape
        if self.rows.shape[0] != M or self.labels.shape[0] != L or self.rows.shape[1] != self.labels.shape[1]:
            raise DataError(
                f"dense targets: {self.rows.shape} row and {self.labels.shape} label embeddings for a {M}×{L} "
                "target matrix", where="soft_labels mode = 'dense'",
            )  # fmt: skip
        if not 0.0 <= self.lam <= 1.0:
            raise ConfigError(f"blend lambda = {self.lam} must be in [0, 1]", where="soft_labels.blend_lambda")
        if self.truth not in TRUTH:
            raise ConfigError(f"dense truth {self.truth!r} is not one of {', '.join(TRUTH)}",
                              where="soft_labels.dense_truth")  # fmt: skip
        if self.head < 0:
            raise ConfigError(f"dense head = {self.head} must be >= 0 (0: off)", where="soft_labels.dense_head")
        if not self.truth_weight > 0:
            raise ConfigError(f"dense truth weight = {self.truth_weight} must be > 0 (1: off)",
                              where="soft_labels.dense_truth_weight")  # fmt: skip
        if self.truth_weight != 1 and self.truth != "one":
            raise ConfigError("a dense truth weight needs the ground-truth pairs at 1",
                              where="soft_labels.dense_truth_weight",
                              fix="set soft_labels.dense_truth = 'one'")  # fmt: skip
        if self.start not in START:
            raise ConfigError(f"dense init {self.start!r} is not one of {', '.join(START)}",
                              where="soft_labels.dense_init")  # fmt: skip
        share = np.ones(L)  # the teacher's share of 1 − λ per label
        if self.head > 0:
            n = np.bincount(self.hard.indices, minlength=L).astype(np.float64)
            share = np.where(n > self.head, self.head / np.maximum(n, 1.0), 1.0)
        object.__setattr__(self, "soft_weight", ((1.0 - self.lam) * share).astype(np.float32))

    @property
    def shape(self) -> tuple[int, int]:
        return self.hard.shape

    def _teacher(self, rows: np.ndarray | slice, cols: np.ndarray | None = None):
        """p̂ for ``rows`` × ``cols`` as a torch tensor (float32), computed in place."""
        import torch

        v = self.labels if cols is None else self.labels[cols]
        # torch's GEMM and in-place ops, not numpy's: the trainers call this between torch ops every batch, and a
        # second BLAS thread pool spinning after each numpy product slowed torch's own ops ~5× on 2 cores
        # (measured: a 1,400-document shortlist fit 8.7 s with numpy here, against 2.2 s without dense targets);
        # numpy's temporaries (a 256 × 25K block is 26 MB, ~10 passes) cost WordNet's +LEVER arm ~1/5 of its time
        u = torch.from_numpy(np.ascontiguousarray(self.rows[rows], dtype=np.float32))
        p = (u @ torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)).T).clamp_(-1.0, 1.0)
        if self.calibration == "linear":
            return p.add_(1.0).mul_(0.5)
        return p.mul_(float(self.a)).add_(float(self.c)).sigmoid_()

    def teacher(self, rows: np.ndarray | slice, cols: np.ndarray | None = None) -> np.ndarray:
        """p̂ for ``rows`` × ``cols`` (all labels when None), float32."""
        return self._teacher(rows, cols).numpy()

    def block(self, rows: np.ndarray | slice, cols: np.ndarray | None = None) -> np.ndarray:
        """Training targets for ``rows`` × ``cols`` (all labels when None): float32 in [0, 1]."""
        import torch

        L = self.hard.shape[1]
        q = self.soft_weight if cols is None else self.soft_weight[cols]  # 1 − λ_l
        t = self._teacher(rows, cols).mul_(torch.from_numpy(np.ascontiguousarray(q)))  # (1 − λ_l)·p̂ everywhere
        # then the stored (ground-truth) pairs, scattered: + λ_l·y, and at least y with truth "one"
        h = self.hard[rows].tocoo()
        r, c, y = h.row, h.col, h.data.astype(np.float32)
        if cols is not None:
            pos = np.full(L, -1, dtype=np.int64)
            pos[cols] = np.arange(len(cols))
            c = pos[c]
            keep = c >= 0
            r, c, y = r[keep], c[keep], y[keep]
        out = t.numpy()
        val = out[r, c] + (1.0 - q[c]) * y
        out[r, c] = np.maximum(val, y) if self.truth == "one" else val
        return out

    def weighted_loss(self, loss_fn: Callable) -> Callable:
        """``loss_fn`` with the ground-truth pairs weighing ``truth_weight`` times every other pair
        (:func:`weigh_truth`). The teacher's soft mass on all the other pairs pulls the positives' logits towards
        the teacher-near labels; a weight > 1 keeps the ground truth on top (measured: docs/distillation.md,
        "Session 11"). With ``truth = "one"`` the ground-truth targets are exactly 1 and every soft target is at
        most 1 − λ, so the pairs at 1 are the ground truth."""
        return weigh_truth(loss_fn, self.truth_weight)

    def student_init(self, x: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(weight L×d, bias L) of a linear head on the student's features ``x`` (M×d, the training rows in
        the order of ``rows``) whose logit on row i approximates logit((1 − λ)·p̂(u_i, l)), the target of every
        non-positive pair: the student starts where the soft part of the loss wants it, so labels that are
        rarely scored (shortlist mode, few epochs) keep the teacher's ranking.

        In cos: exact for ``sigmoid`` while p̂ ≪ 1 (σ(z) ≈ e^z there, so logit((1 − λ)σ(a·cos + c)) ≈
        a·cos + c + log(1 − λ)); for ``linear`` the tangent at cos = 0. In the features: when ``x`` is the
        teacher rows (the frozen teacher on the cached feature embeddings; None means that) the head is
        exact; otherwise the teacher rows are first mapped from ``x`` by least squares (u ≈ x·A, fitted on
        these rows), so any teacher and any dense features give a start."""
        q = np.maximum(self.soft_weight.astype(np.float64), 1e-6)  # 1 − λ_l
        if self.calibration == "linear":
            p0 = 0.5 * q  # (1 − λ)·(1 + 0)/2
            scale, bias = 0.5 * q / (p0 * (1.0 - p0)), np.log(p0 / (1.0 - p0))
        else:
            scale, bias = np.full_like(q, float(self.a)), float(self.c) + np.log(q)
        v = self.labels.astype(np.float64)
        if x is not None and not (x.shape == self.rows.shape and np.array_equal(x, self.rows)):
            if x.shape[0] != self.rows.shape[0]:
                raise DataError(f"{x.shape[0]} feature rows for {self.rows.shape[0]} teacher rows",
                                where="soft_labels dense_init")  # fmt: skip
            xd = x.astype(np.float64)
            g = xd.T @ xd
            g[np.diag_indices_from(g)] += 1e-6 * max(float(np.trace(g)) / g.shape[0], 1e-12)
            A = np.linalg.solve(g, xd.T @ self.rows.astype(np.float64))  # d_x × d_teacher
            v = v @ A.T
        w = (scale[:, None] * v).astype(np.float32)
        return w, bias.astype(np.float32)

    def sparse_export(self, k: int) -> sp.csr_matrix:
        """The top-``k`` targets of each row as CSR (ground truth always kept): for trainers that take a
        stored matrix. Everything past the k-th label per row is lost (set to 0)."""
        from lever_plugins.topk import topk_by_id

        M, L = self.shape
        k = min(k, L)
        out = []
        step = max(1, 4_000_000 // max(L, 1))
        for s in range(0, M, step):
            e = min(s + step, M)
            t = self.block(slice(s, e))
            t = t + 2.0 * self.hard[s:e].toarray()  # ground truth first
            vals, idx = topk_by_id(t, k)
            vals = np.where(vals > 1.0, vals - 2.0, vals)
            out.append(sp.csr_matrix((vals.ravel(), idx.ravel(), np.arange(0, (e - s) * k + 1, k)), shape=(e - s, L)))
        m = sp.vstack(out, format="csr").astype(np.float32)
        m.sort_indices()
        return m

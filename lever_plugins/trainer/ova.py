"""The built-in one-vs-all (OvA) classifier: a linear head with bias on frozen features, trained with
(soft-target) BCE taken from the ``lever_loss`` hook.

Two ways to pick the label columns a mini-batch is trained on (``TrainerConfig.negatives``):

``"full"``
    Dense logits over all L labels: cost O(batch × L × d) per step. Exact, and the right choice up to
    roughly 20K labels on CPU.

``"shortlist"`` (ANCE / NGAME-style negative mining)
    Per batch the candidate columns are the union of

    * every stored target entry of the batch's rows (ground truth and soft entries alike, so no soft
      target is ever dropped),
    * ``shortlist_size`` hard negatives per document: its nearest classifier vectors by inner product
      ``[h(x), 1] · [w, b]`` against a snapshot of the weights taken at the start of each epoch
      (ANCE's periodically refreshed index): exact (GEMM + ``torch.topk``) up to ``IVF_MIN_LABELS``
      labels, a faiss ``IndexIVFFlat`` above, so that mining stays sublinear in L,
    * ``shortlist_size`` uniformly random labels shared by the batch (so that labels no document ever
      retrieves still see negatives and cannot drift upwards).

    ``shortlist_max`` > 0 caps the union: the hard negatives of every document are cut by rank, farthest
    first, until the batch fits (stored target entries, soft ones included, and random negatives are never
    cut). A budget on the step's cost that holds whatever the head's geometry: a head whose hard negatives
    spread over the tail (the dense +LEVER student starting at the teacher) unions to ~2× the columns of
    one whose negatives pile onto the head labels (the base starting at centroids), on the same
    ``shortlist_size``.

    The logits are ``batch × |candidates|`` against the gathered weight rows (a sparse
    ``nn.Embedding`` + lazy ``SparseAdam``, so neither the gradient nor the optimiser step touches the
    L − |candidates| untouched rows): cost O(batch × candidates × d) instead of O(batch × L × d).
    Sharing one candidate set across the batch makes the step one dense GEMM and gives every document
    the other documents' positives and hard negatives as extra (in-batch) negatives, as NGAME does.
    Weights start from the label centroids (the target-weighted mean feature of each label's rows), so
    the first epoch's shortlist is already meaningful.

Reduction. The ``lever_loss`` hook returns a mean over the ``batch × columns`` entries it is given (the
default is ``binary_cross_entropy_with_logits(reduction="mean")``). The trainer multiplies it by the
number of columns, so the optimised quantity is Σ_columns BCE / batch in both modes: every entry has
weight 1/batch whatever the number of candidates a batch happened to draw (a plain mean would weigh an
entry of a batch with 10K candidates 2× less than one of a batch with 5K), and the shortlist loss is
exactly the full loss with the easy-negative terms dropped. It also keeps gradients independent of L:
a mean over B × 200K entries gives per-weight gradients of the order of Adam's epsilon.

Sparse features (``x_sparse``, e.g. TF-IDF; ``negatives = "full"`` only). A second, full-rank linear
head on a sparse M×V matrix is added to the logits: ``x_sparse · Ws`` with Ws (V×L) an
``nn.EmbeddingBag`` (sum mode, the row's values as per-sample weights) updated by ``SparseAdam``, so a
step touches only the vocabulary rows present in the batch. Lexical evidence (package names, rare
words shared by near-duplicate documents) is what frozen sentence embeddings miss; the head costs V×L
floats, hence full mode only (measured on debtags: P@1 72.0 → 79.5 with TF-IDF beside MiniLM).

Solver (``solver``). ``"sgd"``: the mini-batch loop below (Adam/SparseAdam, ``epochs``, ``lr``).
``"lbfgs"`` (full mode, linear head): the frozen-feature head is a convex problem, solved full-batch
with L-BFGS and an explicit L2 penalty ``l2`` in :mod:`lever_plugins.trainer.lbfgs` — no learning
rate or epoch count to tune, and the rare TF-IDF words get the weights a regularised logistic
regression gives them instead of whatever a fixed number of Adam steps left.

kNN fusion (``knn_alpha`` > 0, NGAME-style score fusion). The final score of a label is
``(1 − α)·σ(logit) + α·Σ_j s_j t_j / Σ_j s_j`` over the ``knn_k`` training rows nearest to the test
row by inner product of the dense features (exact faiss), ``t_j`` their (soft) target rows: an
instance-based vote that helps labels the linear head fits poorly.

Prediction is exact in both modes: ``torch.topk`` over chunks of test rows (an exact faiss
``IndexFlatIP`` over ``[W, b]`` with queries ``[x, 1]`` is available as ``OvAModel.topk(method="faiss")``;
it gives the same top-k but is slower for k = 100 on CPU); scores are logits x·w + b.

Deterministic on CPU for a given seed and input shapes: the batch order, the random negatives and the
optional hidden layer's initialisation all come from the seed; torch and faiss CPU kernels are
deterministic for a fixed thread count.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from lever_plugins import events
from lever_plugins.errors import ConfigError, DataError
from lever_plugins.topk import topk_by_id

IVF_MIN_LABELS = 32768  # above this many labels, mining uses an approximate IVF index (sublinear in L)
IVF_NPROBE = 16
PREDICT_CHUNK = 2048  # test rows per scoring chunk: bounds memory at chunk × L floats


class OvAModel:
    """Trained one-vs-all classifier: ``scores(x) = h(x) · Wᵀ + b``.

    ``h`` is the identity, or ``x + relu(x W1ᵀ + b1) W2ᵀ`` (a residual hidden layer) when the model was
    trained with ``hidden > 0``. Arrays are float32 numpy: ``weight`` L×d, ``bias`` L.
    """

    def __init__(
        self,
        weight: np.ndarray,
        bias: np.ndarray,
        hidden: dict[str, np.ndarray] | None = None,
        mode: str = "full",
        sparse_weight: np.ndarray | None = None,
    ):
        self.weight = np.ascontiguousarray(weight, dtype=np.float32)
        self.bias = np.ascontiguousarray(bias, dtype=np.float32)
        self.hidden = hidden or None
        self.mode = mode
        self.sparse_weight = None if sparse_weight is None else np.ascontiguousarray(sparse_weight, np.float32)

    @property
    def num_labels(self) -> int:
        return self.weight.shape[0]

    def features(self, x: np.ndarray) -> np.ndarray:
        """The representation the linear head sees (the input itself without a hidden layer)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.hidden is None:
            return x
        h = np.maximum(x @ self.hidden["w1"].T + self.hidden["b1"], 0.0)
        return (x + h @ self.hidden["w2"].T).astype(np.float32)

    def scores(self, x: np.ndarray, x_sparse: sp.spmatrix | None = None) -> np.ndarray:
        """Dense n×L logits: only for small n·L (tests, inspection)."""
        out = self.features(x) @ self.weight.T + self.bias
        if self.sparse_weight is not None:
            out = out + np.asarray(sp.csr_matrix(x_sparse) @ self.sparse_weight)
        return out

    def topk(
        self,
        x: np.ndarray,
        k: int,
        method: str | None = None,
        x_sparse: sp.spmatrix | None = None,
        prior: sp.csr_matrix | None = None,
        alpha: float = 0.0,
    ) -> sp.csr_matrix:
        """Exact top-``k`` labels per row of ``x`` as an n×L CSR of logits.

        ``method``: "torch" (chunked matmul + topk, the default) or "faiss" (exact IndexFlatIP over
        [W, b] with queries [x, 1]). Both are exact; torch is the default because faiss' flat search
        keeps a k-heap per query and was measured several times slower for k = 100 on CPU.
        ``x_sparse``: the rows' sparse features when the model has a sparse head. ``prior`` (n×L) and
        ``alpha`` > 0: rank by ``(1 − alpha)·σ(logit) + alpha·prior`` instead (kNN fusion); the
        values returned are then the fused scores.
        """
        n, L = x.shape[0], self.num_labels
        k = max(1, min(int(k), L))
        method = method or "torch"
        if n == 0:
            return sp.csr_matrix((0, L), dtype=np.float32)
        if self.sparse_weight is not None and (x_sparse is None or x_sparse.shape[0] != n):
            raise DataError("this model has a sparse head: give x_sparse with one row per query", where="topk")
        feats = self.features(x)
        if method == "faiss" and self.sparse_weight is None and not alpha:
            vals, idx = _faiss_topk(feats, self.weight, self.bias, k)
        elif method in ("torch", "faiss"):
            extra = None
            if self.sparse_weight is not None:
                xs = sp.csr_matrix(x_sparse, dtype=np.float32)

                def extra(s: int, e: int) -> np.ndarray:
                    return np.asarray(xs[s:e] @ self.sparse_weight, dtype=np.float32)

            fuse = (sp.csr_matrix(prior, dtype=np.float32), float(alpha)) if prior is not None and alpha else None
            vals, idx = _torch_topk(feats, self.weight, self.bias, k, extra=extra, fuse=fuse)
        else:
            raise ValueError(f"unknown top-k method {method!r}")
        # A logit of exactly 0.0 would be an explicit zero that any eliminate_zeros() drops.
        vals[vals == 0.0] = np.float32(-1e-30)
        indptr = np.arange(0, n * k + 1, k, dtype=np.int64)
        return sp.csr_matrix((vals.ravel(), idx.ravel(), indptr), shape=(n, L), dtype=np.float32)

    def save(self, path: str | Path) -> None:
        """Write the model to ``path`` (.npz), atomically."""
        from lever_plugins.runs import atomic_path

        arrays = {"weight": self.weight, "bias": self.bias, "mode": np.array(self.mode)}
        for key, val in (self.hidden or {}).items():
            arrays[f"hidden_{key}"] = val
        if self.sparse_weight is not None:
            arrays["sparse_weight"] = self.sparse_weight
        with atomic_path(path) as tmp:
            np.savez(tmp, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> OvAModel:
        z = np.load(path)
        hidden = {k[len("hidden_") :]: z[k] for k in z.files if k.startswith("hidden_")}
        sw = z["sparse_weight"] if "sparse_weight" in z.files else None
        return cls(z["weight"], z["bias"], hidden or None, str(z["mode"]), sw)


def _faiss_topk(feats: np.ndarray, weight: np.ndarray, bias: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    index = faiss.IndexFlatIP(weight.shape[1] + 1)
    index.add(np.ascontiguousarray(np.hstack([weight, bias[:, None]]), dtype=np.float32))
    q = np.hstack([feats, np.ones((feats.shape[0], 1), np.float32)])
    vals = np.empty((feats.shape[0], k), np.float32)
    idx = np.empty((feats.shape[0], k), np.int64)
    for s in range(0, feats.shape[0], PREDICT_CHUNK):
        vals[s : s + PREDICT_CHUNK], idx[s : s + PREDICT_CHUNK] = index.search(q[s : s + PREDICT_CHUNK], k)
    return vals, idx


def _torch_topk(
    feats: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray,
    k: int,
    extra: Callable[[int, int], np.ndarray] | None = None,
    fuse: tuple[sp.csr_matrix, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    import torch

    w, b = torch.from_numpy(weight), torch.from_numpy(bias)
    vals = np.empty((feats.shape[0], k), np.float32)
    idx = np.empty((feats.shape[0], k), np.int64)
    with torch.no_grad():
        for s in range(0, feats.shape[0], PREDICT_CHUNK):
            e = min(s + PREDICT_CHUNK, feats.shape[0])
            logits = torch.addmm(b, torch.from_numpy(feats[s:e]), w.T)
            if extra is not None:
                logits += torch.from_numpy(extra(s, e))
            if fuse is not None:
                prior, alpha = fuse
                logits = (1.0 - alpha) * torch.sigmoid(logits) + alpha * torch.from_numpy(prior[s:e].toarray())
            # ties (e.g. labels whose weights never moved) keep the lowest label ids: the same scores
            # whatever the thread count (lever_plugins.topk)
            vals[s : s + PREDICT_CHUNK], idx[s : s + PREDICT_CHUNK] = topk_by_id(logits, k)
    return vals, idx


# ---------------------------------------------------------------- training


def _check_inputs(x_train, targets, config, x_valid, y_valid) -> tuple[np.ndarray, sp.csr_matrix]:
    if not isinstance(x_train, np.ndarray) or x_train.ndim != 2:
        raise DataError("training features must be a 2-D numpy array", where="trainer x_train")
    if not sp.issparse(targets):
        raise DataError("training targets must be a scipy sparse matrix", where="trainer targets")
    if targets.shape[0] != x_train.shape[0]:
        raise DataError(
            f"{x_train.shape[0]} feature rows but {targets.shape[0]} target rows",
            where="trainer targets",
            fix="features and targets must describe the same training rows (N, or N+L with LEVER)",
        )
    targets = sp.csr_matrix(targets, dtype=np.float32)
    targets.sum_duplicates()
    if targets.nnz and (targets.data.min() < 0.0 or targets.data.max() > 1.0 or not np.isfinite(targets.data).all()):
        raise DataError(
            f"targets must lie in [0, 1], found [{targets.data.min():g}, {targets.data.max():g}]",
            where="trainer targets",
            fix="blend hard and soft targets into [0, 1] (lever_blend_targets)",
        )
    if not np.isfinite(x_train).all():
        raise DataError("training features contain NaN or infinity", where="trainer x_train")
    if config.negatives not in ("full", "shortlist"):
        raise ConfigError(f"trainer.negatives = {config.negatives!r} is not one of full, shortlist", where="config")
    for name in ("epochs", "early_stopping"):
        if getattr(config, name) < 0:
            raise ConfigError(f"trainer.{name} = {getattr(config, name)} must be >= 0", where="config")
    for name in ("batch_size", "top_k", "shortlist_size"):
        if getattr(config, name) < 1:
            raise ConfigError(f"trainer.{name} = {getattr(config, name)} must be >= 1", where="config")
    if config.lr <= 0:
        raise ConfigError(f"trainer.lr = {config.lr} must be > 0", where="config")
    if (x_valid is None) != (y_valid is None):
        raise DataError("give both x_valid and y_valid, or neither", where="trainer validation")
    if x_valid is not None:
        if x_valid.ndim != 2 or x_valid.shape[1] != x_train.shape[1]:
            raise DataError("validation features have another width than training ones", where="trainer x_valid")
        if y_valid.shape != (x_valid.shape[0], targets.shape[1]):
            raise DataError(
                f"y_valid has shape {y_valid.shape}, expected {(x_valid.shape[0], targets.shape[1])}",
                where="trainer y_valid",
            )
    return np.ascontiguousarray(x_train, dtype=np.float32), targets


def _device(name: str):
    import torch

    if name in ("auto", ""):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device = {name!r} but CUDA is not available", where="config", fix='use "auto"')
    return torch.device(name)


def _default_loss(config) -> Callable:
    """Mean BCE with logits: what the built-in ``lever_loss`` answers. The pipeline passes the hook itself
    (bound by :func:`lever_plugins.stages.loss_fn`), so this serves direct library calls only."""
    import torch.nn.functional as F

    def loss(logits, targets):
        return F.binary_cross_entropy_with_logits(logits, targets, reduction="mean")

    return loss


def _init_head(x: np.ndarray, targets: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Label centroids as weights (unit norm) and each label's prior logit as bias.

    The prior bias keeps the first steps from being spent pushing L−(few) negatives down from 0.5; the
    centroids make the first epoch's hard-negative shortlist meaningful.
    """
    M, L = targets.shape
    mass = np.asarray(targets.sum(axis=0), dtype=np.float64).ravel()
    centroid = np.asarray(targets.T.tocsr() @ x, dtype=np.float32)  # L×d, sparse × dense
    norms = np.linalg.norm(centroid, axis=1, keepdims=True)
    centroid /= np.maximum(norms, 1e-12)
    p = np.clip((mass + 0.5) / (M + 1.0), 1e-7, 0.5)
    bias = np.log(p / (1.0 - p)).astype(np.float32)
    return np.ascontiguousarray(centroid), bias


class _MiningIndex:
    """Nearest classifier vectors ``[w, b]`` for queries ``[h, 1]``: the hard negatives of an epoch."""

    def __init__(self, wb: np.ndarray, seed: int, device):
        self.torch_w = None
        self.kind = "flat"
        L, dim = wb.shape
        if device.type == "cuda" or L <= IVF_MIN_LABELS:
            # Exact mining as GEMM + torch.topk: faiss' flat search keeps a k-heap per query and was
            # measured 10× slower for k = 100 (0.42 s per 256 × 17K batch on one core).
            self.torch_w = wb.clone()  # a snapshot: training updates the weights in place
            self.kind = "exact"
            return
        import faiss

        wb = np.ascontiguousarray(wb.cpu().numpy(), dtype=np.float32)  # faiss copies it on add()
        # Rebuilt every epoch, so kept cheap: √L lists, k-means on a 32-per-list sample, 10 iterations
        # (≈ 1 s at L = 200K); a probe scans ≈ nprobe/√L of the labels.
        nlist = int(math.sqrt(L))
        quantizer = faiss.IndexFlatIP(dim)
        self.index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        self.index.cp.niter = 10
        self.index.cp.seed = seed
        self.index.cp.max_points_per_centroid = 32
        self.index.train(wb)
        self.index.nprobe = IVF_NPROBE
        self.kind = f"ivf{nlist}"
        self.index.add(wb)

    def search(self, q, k: int) -> np.ndarray:

        if self.torch_w is not None:
            return topk_by_id(q @ self.torch_w.T, k)[1]  # ties by label id: thread-count independent
        _, idx = self.index.search(np.ascontiguousarray(q.cpu().numpy(), dtype=np.float32), k)
        return idx


def _hard_ranks_within(hard: np.ndarray, kept: np.ndarray, cap: int) -> int:
    """The most hard-negative ranks j such that the batch's candidates, ``kept`` ∪ ``hard[:, :j]``, number
    at most ``cap``: every document loses its farthest hard negatives first and keeps as many as the others
    (rank order, not a global score cut, because raw scores of different documents are not comparable).
    Stored target entries and random negatives are never cut, so a batch whose ``kept`` alone exceeds the
    cap gets j = 0."""
    k = hard.shape[1]
    kept_u = np.unique(kept)
    budget = cap - len(kept_u)
    if k == 0 or budget < 0:
        return 0
    ranks = np.broadcast_to(np.arange(k), hard.shape)
    ok = hard >= 0
    labels, r = hard[ok], ranks[ok]
    new = ~np.isin(labels, kept_u)
    labels, r = labels[new], r[new]
    if labels.size == 0:
        return k
    # a label joins the union at the first rank any document mines it: the union size at j is
    # |kept| + #labels whose first rank < j, one sort instead of a union per candidate j
    order = np.lexsort((r, labels))
    ls, rs = labels[order], r[order]
    first = rs[np.flatnonzero(np.r_[True, ls[1:] != ls[:-1]])]
    joined = np.cumsum(np.bincount(first, minlength=k))  # joined[j - 1]: new labels within ranks < j
    return int(np.searchsorted(joined, budget, side="right"))


def _valid_p1(model: OvAModel, x_valid: np.ndarray, y_valid: sp.csr_matrix) -> float:
    top = model.topk(x_valid, 1)
    hits = np.asarray(y_valid[np.arange(x_valid.shape[0]), top.indices]).ravel() > 0
    return float(hits.mean()) if hits.size else 0.0


def train(
    x_train: np.ndarray,
    targets: sp.spmatrix,
    config: Any,
    seed: int,
    loss_fn: Callable | None = None,
    progress: bool = True,
    x_valid: np.ndarray | None = None,
    y_valid: sp.spmatrix | None = None,
    hidden: int | None = None,
    x_sparse: sp.spmatrix | None = None,
    encoder: Any = None,
    dense: Any = None,
    prior: np.ndarray | None = None,
    init: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[OvAModel, dict[str, Any]]:
    """Train the OvA classifier on ``x_train`` (M×d) and soft or binary ``targets`` (M×L CSR in [0, 1]).

    ``loss_fn(logits, targets) -> scalar`` (the pipeline passes the ``lever_loss`` hook; default: mean BCE) is
    called once per
    batch; its value is read as a mean over entries (see the module docstring). ``hidden``: width of an
    optional residual hidden layer (default: ``config.hidden`` if the config has it, else 0 = linear), trained
    by AdamW at ``config.hidden_lr`` (the head's ``lr`` when the config has none).
    ``x_sparse`` (M×V, e.g. TF-IDF): add the sparse full-rank head (full mode only; module docstring).
    ``encoder``: trainable features (:mod:`lever_plugins.trainer.finetune`): ``encoder.features(rows)``
    gives the batch's features as a tensor with autograd in place of ``x_train[rows]`` (``x_train`` then
    only seeds the head), and ``encoder.zero_grad()`` / ``encoder.step()`` run around each head update.
    ``dense`` (:class:`lever_plugins.soft_labels.dense.DenseTargets`): the target of every scored pair is
    ``dense.block(rows, columns)`` (the teacher's score on every column: all labels in full mode, each
    batch's candidates in shortlist mode); ``targets`` then only seeds the head and, in shortlist mode,
    contributes its stored entries to the candidates.
    ``prior`` (L×d, L-BFGS only): the dense weights' prior centre (:func:`lever_plugins.trainer.lbfgs.train_lbfgs`).
    ``init`` (weight L×d, bias L): the head's starting point instead of label centroids and prior biases
    (:meth:`lever_plugins.soft_labels.dense.DenseTargets.student_init`: the teacher's calibrated scores; taken
    from ``dense`` when its ``start`` is "teacher").
    Returns the trained model and JSON-able stats (per-epoch seconds, losses, validation P@1).
    """
    import torch

    from lever_plugins.progress import progress as progress_bar

    x_train, targets = _check_inputs(x_train, targets, config, x_valid, y_valid)
    if dense is not None and dense.shape != targets.shape:
        raise DataError(f"dense targets of shape {dense.shape} for {targets.shape} stored targets",
                        where="trainer targets")  # fmt: skip
    if y_valid is not None:
        y_valid = sp.csr_matrix(y_valid)
    hidden = int(getattr(config, "hidden", 0) if hidden is None else hidden)
    # Adam moves every weight by ~lr per step whatever its gradient: at the head's 1e-2 a 1,024-wide layer
    # feeding all labels swamps the input (WordNet base P@1 55.6 -> 41.5), hence its own, smaller rate
    hidden_lr = float(getattr(config, "hidden_lr", 0.0) or config.lr)
    M, d = x_train.shape
    L = targets.shape[1]
    B = int(config.batch_size)
    mode = config.negatives
    n_random = min(L, int(config.shortlist_size))
    k_hard = min(L, int(config.shortlist_size))
    cap = int(getattr(config, "shortlist_max", 0))
    device = _device(config.device)
    loss_fn = loss_fn or _default_loss(config)
    if dense is not None and hasattr(dense, "weighted_loss"):
        loss_fn = dense.weighted_loss(loss_fn)
    # Separate streams: the batch order depends on (seed, M) only, not on the mode or on how many
    # random negatives were drawn, so base and +LEVER runs of one size see the same order.
    order_rng = np.random.default_rng([seed, 0])
    neg_rng = np.random.default_rng([seed, 1])
    gen = torch.Generator().manual_seed(seed)

    xs = None
    if x_sparse is not None:
        xs = sp.csr_matrix(x_sparse, dtype=np.float32)
        if xs.shape[0] != M:
            raise DataError(f"{xs.shape[0]} sparse feature rows but {M} training rows", where="trainer x_sparse")
        if mode != "full":
            raise ConfigError(
                "sparse features need trainer.negatives = 'full' (their head holds V×L weights)",
                where="[encoder] tfidf",
                fix="set [trainer] negatives = 'full', or turn tfidf off for very many labels",
            )
        if xs.nnz and not np.isfinite(xs.data).all():
            raise DataError("sparse features contain NaN or infinity", where="trainer x_sparse")
    if prior is not None and getattr(config, "solver", "sgd") != "lbfgs":
        raise ConfigError("a weight prior needs trainer.solver = 'lbfgs' (the penalty is its centre)",
                          where="ova.train prior", fix="set [trainer] solver = 'lbfgs', or prior=None")  # fmt: skip
    if init is None and dense is not None and getattr(dense, "start", "centroids") == "teacher":
        init = dense.student_init(x_train)
    if init is not None:
        w0, b0 = (np.ascontiguousarray(a, dtype=np.float32) for a in init)
        if w0.shape != (L, d) or b0.shape != (L,):
            raise DataError(f"head init of shapes {w0.shape}, {b0.shape} for {L} labels × {d} features",
                            where="trainer init")  # fmt: skip
    else:
        w0, b0 = _init_head(x_train, targets)
    shape_stats = {
        "mode": mode, "rows": M, "labels": L, "dim": d, "sparse_dim": 0 if xs is None else xs.shape[1],
        "torch_threads": torch.get_num_threads(),
    }  # fmt: skip
    if getattr(config, "solver", "sgd") == "lbfgs":
        from lever_plugins.trainer.lbfgs import check_config, train_lbfgs

        check_config(config, hidden=hidden, finetune=encoder is not None)
        arrays, solved = train_lbfgs(x_train, targets, config, loss_fn, b0, x_sparse=xs, progress=progress,
                                     dense=dense, device=device, prior=prior,
                                     weight0=w0 if init is not None else None)  # fmt: skip
        model = OvAModel(arrays["weight"], arrays["bias"], None, mode, arrays["sparse_weight"])
        events.emit("epoch", what="trainer", epoch=1, loss=solved["objective"],
                    docs_per_s=M / max(solved["seconds"], 1e-9), seconds=solved["seconds"])
        return model, {
            **shape_stats, "device": str(device), "hidden": 0,
            "epoch_seconds": [solved["seconds"]], "epoch_cpu_seconds": [solved["cpu_seconds"]],
            "train_loss": [solved["objective"]], "valid_p1": [], "epochs_run": 1, "best_epoch": 1,
            "best_valid_p1": None, **solved,
        }  # fmt: skip
    dense_params: list = []
    if hidden > 0:  # residual block, W2 = 0: training starts from the linear model
        w1 = torch.empty(hidden, d)
        torch.nn.init.kaiming_uniform_(w1, a=math.sqrt(5), generator=gen)
        w1 = torch.nn.Parameter(w1.to(device))
        b1 = torch.nn.Parameter(torch.zeros(hidden, device=device))
        w2 = torch.nn.Parameter(torch.zeros(d, hidden, device=device))
        dense_params = [w1, b1, w2]

    def feats(xb):
        if not dense_params:
            return xb
        return xb + torch.relu(xb @ dense_params[0].T + dense_params[1]) @ dense_params[2].T

    if mode == "full":
        W = torch.nn.Parameter(torch.from_numpy(w0).to(device))
        bvec = torch.nn.Parameter(torch.from_numpy(b0).to(device))
        groups = [
            {"params": [W], "weight_decay": config.weight_decay},
            {"params": [bvec], "weight_decay": 0.0},
        ]
        if dense_params:
            groups.append({"params": dense_params, "weight_decay": config.weight_decay, "lr": hidden_lr})
        opt = torch.optim.AdamW(groups, lr=config.lr)
        sparse_opt = None
        if xs is not None:  # zero start: training begins from the dense model
            sbag = torch.nn.EmbeddingBag(xs.shape[1], L, mode="sum", sparse=True).to(device)
            torch.nn.init.zeros_(sbag.weight)
            sparse_opt = torch.optim.SparseAdam(list(sbag.parameters()), lr=config.lr)
    else:
        wb0 = torch.from_numpy(np.hstack([w0, b0[:, None]])).to(device)
        emb = torch.nn.Embedding.from_pretrained(wb0, freeze=False, sparse=True)
        sparse_opt = torch.optim.SparseAdam(list(emb.parameters()), lr=config.lr)
        opt = torch.optim.AdamW(dense_params, lr=hidden_lr, weight_decay=config.weight_decay) if dense_params else None
    del w0, b0

    def snapshot() -> OvAModel:
        with torch.no_grad():
            if mode == "full":
                w, b = W.detach().cpu().numpy().copy(), bvec.detach().cpu().numpy().copy()
            else:
                wb = emb.weight.detach().cpu().numpy()
                w, b = wb[:, :d].copy(), wb[:, d].copy()
            hid = None
            if dense_params:
                hid = {
                    k: p.detach().cpu().numpy().copy() for k, p in zip(("w1", "b1", "w2"), dense_params, strict=True)
                }
            sw = sbag.weight.detach().cpu().numpy().copy() if xs is not None else None
        return OvAModel(w, b, hid, mode, sw)

    stats: dict[str, Any] = {
        **shape_stats,
        "device": str(device),
        "hidden": hidden,
        "hidden_lr": hidden_lr if hidden > 0 else None,
        "epoch_seconds": [],
        "epoch_cpu_seconds": [],
        "train_loss": [],
        "valid_p1": [],
        "mean_candidates": [],
        "mining_index": None,
    }
    best_p1, best_epoch, best_model, since_best = -1.0, 0, None, 0
    use_valid = x_valid is not None and config.early_stopping > 0 and xs is None and encoder is None
    n_batches = (M + B - 1) // B
    epochs_run = 0

    for epoch in range(int(config.epochs)):
        t0, c0 = time.perf_counter(), time.process_time()
        perm = order_rng.permutation(M)
        mining = None
        if mode == "shortlist":
            with torch.no_grad():
                mining = _MiningIndex(emb.weight.detach(), seed + epoch, device)
            stats["mining_index"] = mining.kind
        loss_sum, cand_sum, rows_done = 0.0, 0, 0
        bar = progress_bar(total=n_batches, desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch",
                           enabled=progress, leave=False)  # fmt: skip
        for s in range(0, M, B):
            idx = perm[s : s + B]
            sub = targets[idx]
            xb = torch.from_numpy(x_train[idx]).to(device) if encoder is None else encoder.features(idx)
            h = feats(xb)
            if mode == "full":
                yb = torch.from_numpy(sub.toarray() if dense is None else dense.block(idx)).to(device)
                logits = torch.addmm(bvec, h, W.T)
                if xs is not None:
                    xb_s = xs[idx]
                    logits = logits + sbag(
                        torch.from_numpy(xb_s.indices.astype(np.int64)).to(device),
                        torch.from_numpy(xb_s.indptr[:-1].astype(np.int64)).to(device),
                        per_sample_weights=torch.from_numpy(xb_s.data).to(device),
                    )
            else:
                with torch.no_grad():
                    q = torch.cat([h.detach(), torch.ones(len(idx), 1, device=device)], dim=1)
                    hard = mining.search(q, k_hard)
                kept = np.concatenate([sub.indices, neg_rng.integers(0, L, n_random)])
                if cap:
                    hard = hard[:, : _hard_ranks_within(hard, kept, cap)]
                cand = np.unique(np.concatenate([kept, hard[hard >= 0].ravel()]))
                if dense is None:
                    rows = np.repeat(np.arange(len(idx)), np.diff(sub.indptr))
                    block = np.zeros((len(idx), len(cand)), np.float32)
                    block[rows, np.searchsorted(cand, sub.indices)] = sub.data
                else:
                    block = dense.block(idx, cand)
                yb = torch.from_numpy(block).to(device)
                cand_t = torch.from_numpy(cand).to(device)
                wc = emb(cand_t)
                logits = torch.addmm(wc[:, d], h, wc[:, :d].T)
            loss = loss_fn(logits, yb) * logits.shape[1]  # Σ over columns / batch (module docstring)
            if opt is not None:
                opt.zero_grad(set_to_none=True)
            if sparse_opt is not None:
                sparse_opt.zero_grad(set_to_none=True)
            if encoder is not None:
                encoder.zero_grad()
            loss.backward()
            if opt is not None:
                opt.step()
            if sparse_opt is not None:
                sparse_opt.step()
            if encoder is not None:
                encoder.step()
            if mode == "shortlist":
                if config.weight_decay > 0:  # decoupled decay, lazily on the rows this step touched
                    with torch.no_grad():
                        emb.weight[cand_t, :d] *= 1.0 - config.lr * config.weight_decay
                cand_sum += len(cand)
            loss_sum += float(loss.detach())
            rows_done += len(idx)
            bar.update(1)
            if progress:
                rate = rows_done / max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix({"loss": f"{float(loss.detach()):.4f}",
                                 "texts/s" if encoder is not None else "rows/s": f"{rate:.0f}"}, refresh=False)
        bar.close()
        epochs_run += 1
        stats["epoch_seconds"].append(round(time.perf_counter() - t0, 4))
        # CPU seconds of this process: on a shared machine far steadier than wall time (benchmarks)
        stats["epoch_cpu_seconds"].append(round(time.process_time() - c0, 4))
        stats["train_loss"].append(loss_sum / max(n_batches, 1))
        if mode == "shortlist":
            stats["mean_candidates"].append(cand_sum / max(n_batches, 1))
        secs = time.perf_counter() - t0
        events.emit("epoch", what="trainer", epoch=epoch + 1, loss=stats["train_loss"][-1],
                    docs_per_s=rows_done / max(secs, 1e-9), seconds=round(secs, 4))
        if use_valid:
            model = snapshot()
            p1 = _valid_p1(model, x_valid, y_valid)
            stats["valid_p1"].append(p1)
            events.emit("valid", what="trainer", epoch=epoch + 1, valid_p1=p1)
            if p1 > best_p1:
                best_p1, best_epoch, best_model, since_best = p1, epoch + 1, model, 0
            else:
                since_best += 1
                if since_best >= config.early_stopping:
                    break

    final = best_model if best_model is not None else snapshot()
    stats["epochs_run"] = epochs_run
    stats["best_epoch"] = best_epoch if best_model is not None else epochs_run
    stats["best_valid_p1"] = best_p1 if best_model is not None else None
    return final, stats


def train_predict(
    x_train: np.ndarray,
    targets: sp.spmatrix,
    x_test: np.ndarray,
    config: Any,
    seed: int,
    loss_fn: Callable | None = None,
    progress: bool = True,
    x_valid: np.ndarray | None = None,
    y_valid: sp.spmatrix | None = None,
    x_sparse: tuple[sp.spmatrix, sp.spmatrix] | None = None,
    dense: Any = None,
) -> tuple[sp.csr_matrix, dict[str, Any]]:
    """Train (see :func:`train`) and return the exact top ``config.top_k`` scores per test row (n×L CSR):
    logits, or fused scores when ``config.knn_alpha`` > 0. ``x_sparse``: (train, test) sparse features."""
    if not isinstance(x_test, np.ndarray) or x_test.ndim != 2 or x_test.shape[1] != np.shape(x_train)[1]:
        raise DataError("test features must be a 2-D array as wide as the training ones", where="trainer x_test")
    xs_trn, xs_tst = x_sparse if x_sparse is not None else (None, None)
    model, stats = train(x_train, targets, config, seed, loss_fn, progress, x_valid, y_valid, x_sparse=xs_trn,
                         dense=dense)  # fmt: skip
    if dense is not None:
        stats["targets"] = "dense"
        stats["truth_weight"] = float(getattr(dense, "truth_weight", 1.0))
    t0 = time.perf_counter()
    alpha = float(getattr(config, "knn_alpha", 0.0))
    prior = None
    if alpha > 0:
        prior = knn_prior(np.asarray(x_train, np.float32), sp.csr_matrix(targets, dtype=np.float32), x_test,
                          int(getattr(config, "knn_k", 10)))  # fmt: skip
        stats["knn_seconds"] = round(time.perf_counter() - t0, 4)
    scores = model.topk(x_test, config.top_k, x_sparse=xs_tst, prior=prior, alpha=alpha)
    stats["predict_seconds"] = round(time.perf_counter() - t0, 4)
    return scores, stats


def knn_prior(x_train: np.ndarray, targets: sp.csr_matrix, x_test: np.ndarray, k: int) -> sp.csr_matrix:
    """n_test × L: similarity-weighted mean of the target rows of each test row's ``k`` nearest training
    rows (exact inner product; negative similarities count as 0)."""
    from lever_plugins.soft_labels.knn import knn_search

    if not 0 < k <= x_train.shape[0]:
        raise ConfigError(f"trainer.knn_k = {k} must be in 1..{x_train.shape[0]}", where="config")
    sims, nbrs = knn_search(np.ascontiguousarray(x_test, np.float32), x_train, k)
    w = np.where(nbrs >= 0, np.maximum(sims, 0.0), 0.0).astype(np.float32)
    w /= np.maximum(w.sum(axis=1, keepdims=True), 1e-12)
    n = x_test.shape[0]
    indptr = np.arange(0, n * k + 1, k)
    mix = sp.csr_matrix((w.ravel(), np.maximum(nbrs, 0).ravel(), indptr), shape=(n, x_train.shape[0]))
    return (mix @ targets).tocsr().astype(np.float32)

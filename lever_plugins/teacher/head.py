"""Teacher "head": a projection trained on the cached frozen embeddings, in minutes on a CPU.

Training the whole encoder (teacher "siamese" with ``train = true``) costs minutes per epoch on a CPU
and, measured here, added nothing as a source of soft labels. This teacher keeps the frozen encoder
and learns a d×d projection P of the DOCUMENT side, initialised at the identity (so epoch 0 is the
frozen teacher): s(x, l) = ⟨norm(P·e(x)), norm(e(l))⟩, labels staying where the encoder put them
(short label names are what the encoder embeds worst, and what must stay comparable across labels).

Loss: the paper's Eq. 9 pairwise logistic loss, log(1 + exp(γ·(s_neg − s_pos))), for each document with
one positive label drawn per epoch against its ``negatives`` hardest non-positive labels (exact over all
labels, which costs one batch × L product, the same as scoring them), γ = ``scale``.

Cross-fitting. A student distilled from scores the teacher was trained on learns the teacher's overfit,
not its knowledge. The training documents are split into ``folds`` parts; the projection trained on
the other parts embeds each part (out-of-fold), and one projection trained on all documents embeds
label texts, test documents and anything else. :meth:`HeadTeacher.fit_embeddings` gives the
out-of-fold embeddings of the documents ``fit`` saw.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from lever_plugins.config import TeacherConfig
from lever_plugins.errors import ConfigError


def normalize(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float32)
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)


def pairwise_logistic(pos: Any, neg: Any, scale: float, valid: Any = None) -> Any:
    """Eq. 9 of the paper: mean of log(1 + exp(scale·(s_neg − s_pos))) over (positive, negative) pairs.
    ``pos``: batch scores of the positives (B), ``neg``: scores of their negatives (B × k), ``valid``: an
    optional B × k mask of the pairs that count."""
    import torch.nn.functional as F

    terms = F.softplus(scale * (neg - pos[:, None]))
    if valid is None:
        return terms.mean()
    return (terms * valid).sum() / valid.sum().clamp_min(1)


def train_projection(
    x: np.ndarray,
    y: sp.csr_matrix,
    v: np.ndarray,
    epochs: int = 10,
    lr: float = 1e-3,
    scale: float = 20.0,
    negatives: int = 10,
    batch_size: int = 512,
    weight_decay: float = 0.0,
    seed: int = 0,
    label_sample: int = 4096,
) -> tuple[np.ndarray, list[float]]:
    """Learn P (d×d, from the identity) minimising :func:`pairwise_logistic` of s = ⟨norm(P·x), v_l⟩ for
    rows ``x`` (n×d) with labels ``y`` (n×L) against label embeddings ``v`` (L×d, unit rows).
    Each epoch visits every row with at least one label once, with one positive drawn uniformly from its
    labels. With more than ``label_sample`` labels each batch scores its own positives and a uniform sample
    of ``label_sample`` labels (hard negatives are the hardest of those), so a step costs
    batch × label_sample × d instead of batch × L × d. Returns (P, loss per epoch). Deterministic on CPU
    for a fixed thread count."""
    import torch
    import torch.nn.functional as F

    y = sp.csr_matrix(y)
    n, d = x.shape
    rows = np.flatnonzero(np.diff(y.indptr) > 0)
    P = torch.nn.Parameter(torch.eye(d))
    opt = torch.optim.Adam([P], lr=lr, weight_decay=weight_decay)
    X = torch.from_numpy(np.ascontiguousarray(x, np.float32))
    V = torch.from_numpy(np.ascontiguousarray(v, np.float32))
    rng = np.random.default_rng(seed)
    L = v.shape[0]
    k = int(min(negatives, L - 1))
    losses = []
    for _ in range(int(epochs)):
        perm = rng.permutation(rows)
        total = 0.0
        for s in range(0, len(perm), batch_size):
            idx = perm[s : s + batch_size]
            cnt = np.diff(y.indptr)[idx]
            pos = y.indices[y.indptr[idx] + (rng.random(len(idx)) * cnt).astype(np.int64)]
            sub = y[idx]
            if L > label_sample:  # the batch's positives and a uniform sample of the other labels
                cols = np.union1d(sub.indices, rng.choice(L, label_sample, replace=False))
            else:
                cols = np.arange(L)
            u = F.normalize(X[idx] @ P.T, dim=1)
            scores = u @ V[torch.from_numpy(cols)].T
            with torch.no_grad():  # hardest non-positive labels among the scored ones
                mask = torch.zeros_like(scores, dtype=torch.bool)
                mask[torch.from_numpy(np.repeat(np.arange(len(idx)), np.diff(sub.indptr))),
                     torch.from_numpy(np.searchsorted(cols, sub.indices).astype(np.int64))] = True  # fmt: skip
                kk = min(k, len(cols) - 1)
                hard = scores.detach().masked_fill(mask, -float("inf")).topk(kk, dim=1)
                # a row with fewer than kk non-positive columns: drop the -inf picks (positives)
                valid = torch.isfinite(hard.values)
            ar = torch.arange(len(idx))
            s_pos = scores[ar, torch.from_numpy(np.searchsorted(cols, pos).astype(np.int64))]
            s_neg = scores.gather(1, hard.indices)
            loss = pairwise_logistic(s_pos, s_neg, scale, valid)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / max(len(rows), 1))
    return P.detach().numpy().copy(), losses


def fold_of(n: int, folds: int, seed: int) -> np.ndarray:
    """Fold id of each of ``n`` rows: a seeded permutation cut into ``folds`` near-equal parts."""
    f = np.empty(n, np.int64)
    f[np.random.default_rng([seed, 7]).permutation(n)] = np.arange(n) % folds
    return f


class HeadTeacher:
    """Registered by the built-in plugin as teacher "head" (``[teacher] name = "head"``); options in
    ``[teacher.options]``: ``folds`` (cross-fitting parts; 1 = no cross-fitting), ``epochs``, ``lr``,
    ``scale`` (γ of Eq. 9), ``negatives`` (hard negatives per document), ``batch_size``, ``label_sample``
    (above this many labels a step scores a uniform sample of them: :func:`train_projection`).
    The frozen encoder is ``[teacher] model`` at ``max_len`` (its embeddings come from the shared cache,
    so with the encoder's model and max_len nothing is encoded twice)."""

    name = "head"

    def __init__(self, config: TeacherConfig, seed: int = 13, progress: bool = True, folds: int = 5,
                 epochs: int = 10, lr: float = 1e-3, scale: float = 20.0, negatives: int = 10,
                 batch_size: int = 512, label_sample: int = 4096):  # fmt: skip
        checks = {"folds": (folds, folds >= 1), "epochs": (epochs, epochs >= 0), "lr": (lr, lr > 0),
                  "scale": (scale, scale > 0), "negatives": (negatives, negatives >= 1),
                  "batch_size": (batch_size, batch_size >= 1), "label_sample": (label_sample, label_sample >= 1)}
        for key, (value, ok) in checks.items():
            if isinstance(value, bool) or not ok:
                raise ConfigError(f"teacher option {key} = {value!r} is out of range", where=f"[teacher.options] {key}",
                                  fix="folds >= 1, epochs >= 0, lr > 0, scale > 0, negatives >= 1, batch_size >= 1, "
                                  "label_sample >= 1")
        self.config = config
        self.seed = int(config.seed or seed)
        self.progress = progress
        self.options = {"folds": int(folds), "epochs": int(epochs), "lr": float(lr), "scale": float(scale),
                        "negatives": int(negatives), "batch_size": int(batch_size),
                        "label_sample": int(label_sample)}  # fmt: skip
        self.P: np.ndarray | None = None
        self._oof: np.ndarray | None = None

    def preflight(self) -> None:
        """Before any stage: the frozen encoder's model resolves to a local folder whose files load."""
        from lever_plugins.teacher.encoder import check_teacher_model

        check_teacher_model(self.config.model)

    def _frozen(self, texts: Sequence[str]) -> np.ndarray:
        from lever_plugins.teacher.encoder import embed_cached, shared_cache_dir

        c = self.config
        return embed_cached(list(texts), c.model, c.max_len, shared_cache_dir() / "embeddings", device=c.device,
                            progress=self.progress, amp=c.amp)  # fmt: skip

    def _key(self, doc_texts: Sequence[str], lbl_texts: Sequence[str], y: sp.csr_matrix) -> str:
        from lever_plugins.teacher.encoder import text_hashes

        h = hashlib.sha256(repr((self.config.model, self.config.max_len, self.seed, sorted(self.options.items())))
                           .encode())  # fmt: skip
        for a in (text_hashes(doc_texts), text_hashes(lbl_texts), y.indptr, y.indices):
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()

    def fit(self, doc_texts: Sequence[str], lbl_texts: Sequence[str], y: sp.spmatrix, workdir: str | Path,
            resume: bool = True) -> dict[str, Any]:  # fmt: skip
        """Train the full projection and, with ``folds`` > 1, one per fold for the out-of-fold document
        embeddings. Saved atomically to ``workdir/head.npz``; with ``resume`` a saved fit of the same
        inputs and options is loaded instead."""
        from lever_plugins.runs import atomic_path

        y = sp.csr_matrix(y, dtype=np.float32)
        y.eliminate_zeros()
        path = Path(workdir) / "head.npz"
        key = self._key(doc_texts, lbl_texts, y)
        if resume and path.is_file():
            z = np.load(path)
            if str(z["key"]) == key:
                self.P, self._oof = z["P"], z["oof"]
                return {"resumed": True}
        t0 = time.perf_counter()
        x = self._frozen(doc_texts)
        v = normalize(self._frozen(lbl_texts))
        o = self.options
        kw = {k: o[k] for k in ("epochs", "lr", "scale", "negatives", "batch_size", "label_sample")}
        P, losses = train_projection(x, y, v, seed=self.seed, **kw)
        oof = normalize(x @ P.T)
        fold_losses = []
        if o["folds"] > 1:
            f = fold_of(x.shape[0], o["folds"], self.seed)
            for j in range(o["folds"]):
                out = f == j
                Pj, lj = train_projection(x[~out], y[~out], v, seed=self.seed + 1 + j, **kw)
                oof[out] = normalize(x[out] @ Pj.T)
                fold_losses.append(lj[-1] if lj else None)
        self.P, self._oof = P, oof
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, P=P, oof=oof, key=np.array(key))
        return {"seconds": round(time.perf_counter() - t0, 2), "loss": losses, "fold_final_loss": fold_losses,
                **o}  # fmt: skip

    def _require(self) -> np.ndarray:
        if self.P is None:
            raise RuntimeError("HeadTeacher.fit must run before embed")
        return self.P

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Document side: norm(P·e(text)) with the projection trained on all documents."""
        return normalize(self._frozen(texts) @ self._require().T)

    def embed_labels(self, texts: Sequence[str]) -> np.ndarray:
        """Label side: the frozen encoder's unit embeddings."""
        return normalize(self._frozen(texts))

    def fit_embeddings(self) -> np.ndarray:
        """Out-of-fold document-side embeddings of the documents ``fit`` trained on (in their order)."""
        self._require()
        return self._oof

"""Tail baselines beside base and +LEVER in ``lever ab`` (``[eval] baselines`` or ``--baseline``).

Each is registered through ``lever_register_baselines``; ``run(ctx)`` returns test scores (n_test × L CSR)
and reuses the A/B run's cached stages (features, teacher, soft labels, the base arm's scores):

- ``rerank``: the base classifier's top-k probabilities σ(logit) times the label's inverse propensity
  (from the original binary train matrix, the run's A/B), renormalised to sum 1 per test row.
- ``ensemble``: α·σ(classifier logit) + (1 − α)·teacher cosine over the union of the base classifier's
  top-k and the teacher's top-k labels (classifier score 0 outside its top-k); α from a grid of 11 values,
  chosen on a 10 % hold-out of train by a classifier trained on the other 90 % (``[eval] ensemble_select``,
  default P@5 + PSP@5).
- ``lever_rerank`` / ``lever_ensemble``: the same two applied to the +LEVER classifier (the distilled
  student plus ReRank, or blended with the teacher at inference): the best system, not only the
  teacher-free one (the paper's Table 10).
- ``label_rows``: the trainer on the N + L rows (label texts as documents, each its own label) and no
  teacher neighbours: the augmented hard matrix of the soft-label stage.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from lever_plugins.config import RunConfig, config_hash, trainer_key
from lever_plugins.data.dataset import Dataset
from lever_plugins.errors import ConfigError
from lever_plugins.runs import Run, write_json

HOLDOUT = 0.1
ALPHAS = tuple(np.round(np.linspace(0.0, 1.0, 11), 2).tolist())


@dataclass
class BaselineContext:
    """What a baseline may use: the A/B run, its data and the stages it has already computed.

    ``arms``: arm -> (training features, targets, upstream cache key), as ``stages.arm_inputs`` gives;
    ``scores``: arm -> test scores (top-k logits of the configured trainer).
    """

    run: Run
    ds: Dataset
    cfg: RunConfig
    sig: str
    feats: dict[str, np.ndarray]
    arms: dict[str, tuple[np.ndarray, sp.csr_matrix, str]]
    scores: dict[str, sp.csr_matrix]
    log: Any = None
    uses: list[dict[str, Any]] = field(default_factory=list)  # the baseline's plugin: pass to cached_stage


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))).astype(np.float32)


def rerank(scores: sp.csr_matrix, weights: np.ndarray) -> sp.csr_matrix:
    """σ(scores) × weights[label], each row renormalised to sum 1 (same sparsity pattern)."""
    out = sp.csr_matrix(scores, dtype=np.float32, copy=True)
    out.data = _sigmoid(out.data) * np.asarray(weights, dtype=np.float32)[out.indices]
    sums = np.asarray(out.sum(axis=1)).ravel()
    rows = np.repeat(np.arange(out.shape[0]), np.diff(out.indptr))
    out.data /= np.where(sums > 0, sums, 1.0)[rows].astype(np.float32)
    return out


def _ensemble_parts(
    clf: sp.csr_matrix, doc_emb: np.ndarray, lbl_emb: np.ndarray, teacher_k: int
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per row: candidate labels (clf's stored ∪ teacher's top ``teacher_k``), σ(clf) (0 where not stored), cosine."""
    from lever_plugins.soft_labels.knn import knn_search

    clf = sp.csr_matrix(clf, dtype=np.float32)
    clf.sort_indices()
    _, tids = knn_search(doc_emb, lbl_emb, min(teacher_k, clf.shape[1]))
    parts = []
    for i in range(clf.shape[0]):
        lo, hi = clf.indptr[i], clf.indptr[i + 1]
        cand = np.union1d(clf.indices[lo:hi], tids[i][tids[i] >= 0])
        c = np.zeros(len(cand), dtype=np.float32)
        c[np.searchsorted(cand, clf.indices[lo:hi])] = _sigmoid(clf.data[lo:hi])
        parts.append((cand, c, lbl_emb[cand] @ doc_emb[i]))
    return parts


def _combine(parts: list, alpha: float, top_k: int, shape: tuple[int, int]) -> sp.csr_matrix:
    rows, cols, vals = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0, np.float32)]
    for i, (cand, c, t) in enumerate(parts):
        s = (alpha * c + (1.0 - alpha) * t).astype(np.float32)
        keep = np.argsort(-s, kind="stable")[:top_k]  # cand is ascending: ties keep the lowest label ids
        rows.append(np.full(len(keep), i, dtype=np.int64))
        cols.append(cand[keep].astype(np.int64))
        vals.append(s[keep])
    out = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=shape)
    out.sort_indices()
    return out.astype(np.float32)


def ensemble_scores(
    clf: sp.csr_matrix, doc_emb: np.ndarray, lbl_emb: np.ndarray, alpha: float, top_k: int, teacher_k: int
) -> sp.csr_matrix:
    """α·σ(clf) + (1 − α)·cos(doc, label) on the union of clf's stored labels and the teacher's top
    ``teacher_k`` labels per row; the best ``top_k`` per row are kept."""
    return _combine(_ensemble_parts(clf, doc_emb, lbl_emb, teacher_k), alpha, top_k, clf.shape)


def select_metric(metrics: dict[str, float], select: str, option: str = "eval.ensemble_select") -> float:
    """Sum of the metrics named in ``select`` ("P@5+PSP@5"); ``option``: the setting it came from."""
    total = 0.0
    for name in select.split("+"):
        name = name.strip()
        if name not in metrics:
            raise ConfigError(
                f"unknown metric {name!r} in {option}",
                where=option,
                fix=f"use names such as {', '.join(sorted(metrics)[:6])}, joined by '+'",
            )
        total += metrics[name]
    return total


def choose_alpha(
    clf: sp.csr_matrix,
    doc_emb: np.ndarray,
    lbl_emb: np.ndarray,
    truth: sp.csr_matrix,
    train_truth: sp.csr_matrix,
    select: str,
    top_k: int,
    A: float,
    B: float,
) -> tuple[float, dict[float, float]]:
    """The α of ``ALPHAS`` with the best ``select`` value on (clf, truth); ties go to the larger α."""
    from lever_plugins.config import select_ks
    from lever_plugins.metrics import evaluate

    parts = _ensemble_parts(clf, doc_emb, lbl_emb, top_k)
    values = {}
    for a in ALPHAS:
        s = _combine(parts, a, top_k, clf.shape)
        values[a] = select_metric(evaluate(s, truth, train_truth=train_truth, k=select_ks(select), A=A, B=B), select)
    best = max(values.values())
    return max(a for a, v in values.items() if v == best), values


def teacher_embedder(ctx: BaselineContext):
    """A function texts -> teacher embeddings: the run's teacher, refitted with ``resume=True`` (the teacher
    stage has finished, so a trained teacher loads its last checkpoint and trains no further)."""
    from lever_plugins import plugins
    from lever_plugins.stages import make_teacher

    r = plugins.lookup(plugins.teachers(), ctx.cfg.teacher.name, "teacher", "teacher.name")
    teacher = make_teacher(ctx.cfg)
    with plugins.guard(r, "fit"):
        teacher.fit(ctx.ds.trn_texts, ctx.ds.lbl_texts, ctx.ds.binary_train(), ctx.run.root / "teacher", resume=True)

    def embed(texts: list[str]):
        with plugins.guard(r, "embed"):
            return teacher.embed(texts)

    return embed


def _sparse_mark(sparse: Any) -> list[bool]:
    """Extra cache-key part for a classifier stage that also gets the TF-IDF head: empty without it, so
    the keys of runs without sparse features stay what they were before sparse inputs reached baselines."""
    return [True] if sparse is not None else []


class ReRank:
    name = "rerank"
    title = "ReRank (inverse propensity)"
    arm = "base"

    def run(self, ctx: BaselineContext) -> sp.csr_matrix:
        from lever_plugins.metrics import inv_propensity
        from lever_plugins.stages import eval_kwargs

        ek = eval_kwargs(ctx.ds, ctx.cfg)
        return rerank(ctx.scores[self.arm], inv_propensity(ctx.ds.binary_train(), ek["A"], ek["B"]))


class LeverReRank(ReRank):
    name = "lever_rerank"
    title = "+LEVER + ReRank"
    arm = "lever"


class Ensemble:
    """α·σ(classifier) + (1 − α)·teacher cosine, α chosen on a 10 % train hold-out (module doc). The
    classifier is the ``arm``'s: the base classifier (``ensemble``) or the distilled one (``lever_ensemble``,
    the paper's Table 10 style "LEVER + teacher at inference")."""

    name = "ensemble"
    title = "teacher-classifier ensemble"
    arm = "base"

    def run(self, ctx: BaselineContext) -> sp.csr_matrix:
        from lever_plugins.stages import (
            arm_sparse,
            cached_stage,
            dense_targets,
            encoder_key,
            eval_kwargs,
            holdout_arm,
            holdout_split,
            save_csr,
            teacher_stage,
            train_stage,
        )

        run, ds, cfg = ctx.run, ctx.ds, ctx.cfg
        temb, tkey = teacher_stage(run, ds, cfg, ctx.sig, ctx.log)
        hold, rest = holdout_split(len(ds.trn_texts), HOLDOUT, cfg.seed)
        y = ds.binary_train()
        x_arm, t_arm, arm_key = ctx.arms[self.arm]
        # the arm's classifier trained on 90 % of train (and its label rows), scored on the other 10 %
        sparse = arm_sparse(ctx.feats, t_arm.shape[0])  # the same input as the arm (TF-IDF head included)
        dense = dense_targets(run, ds, cfg, t_arm.shape[0]) if self.arm == "lever" else None
        name = "ensemble_holdout" if self.arm == "base" else f"{self.name}_holdout"
        arm = holdout_arm(run, ds, cfg, name, ctx.feats, x_arm, t_arm, hold, rest, dense)
        clf_hold, _ = train_stage(
            run, arm, cfg, config_hash(arm_key, "holdout", HOLDOUT, cfg.seed, *_sparse_mark(sparse)), ctx.log
        )
        # the hold-out classifier's input decides alpha too
        key = config_hash(
            tkey, arm_key, trainer_key(cfg.trainer), encoder_key(cfg), cfg.seed, cfg.eval.ensemble_select, ALPHAS,
            *_sparse_mark(sparse), *([self.arm] if self.arm != "base" else []),
        )  # fmt: skip
        art = f"baselines/{self.name}/scores.npz"
        ek = eval_kwargs(ds, cfg)

        def compute() -> dict:
            embed = teacher_embedder(ctx)
            # out-of-fold teacher embeddings of the hold-out documents when the teacher stage has them: a
            # teacher trained on these documents would look better on them than on test documents
            hold_emb = temb["doc"][hold] if temb.get("doc") is not None else embed([ds.trn_texts[i] for i in hold])
            alpha, values = choose_alpha(
                clf_hold, hold_emb, temb["lbl"], y[hold], y[rest], cfg.eval.ensemble_select, cfg.trainer.top_k,
                ek["A"], ek["B"],
            )  # fmt: skip
            s = ensemble_scores(
                ctx.scores[self.arm], embed(ds.tst_texts), temb["lbl"], alpha, cfg.trainer.top_k, cfg.trainer.top_k
            )
            save_csr(run.root / art, s)
            stats = {"alpha": alpha, "holdout_select": {str(a): v for a, v in values.items()}}
            write_json(run.root / "baselines" / self.name / "alpha.json", stats)
            if ctx.log:
                ctx.log(f"[{self.name}] alpha {alpha} ({cfg.eval.ensemble_select} on a {HOLDOUT:.0%} train hold-out)")
            return stats

        cached_stage(run, f"baseline_{self.name}", key, [art], compute, ctx.log, uses=ctx.uses)
        return sp.load_npz(run.root / art).tocsr()


class LeverEnsemble(Ensemble):
    name = "lever_ensemble"
    title = "+LEVER + teacher ensemble"
    arm = "lever"


class LabelRows:
    name = "label_rows"
    title = "label rows only (N + L, no teacher)"

    def run(self, ctx: BaselineContext) -> sp.csr_matrix:
        from lever_plugins.stages import arm_sparse, make_arm, train_stage

        y_aug = sp.load_npz(ctx.run.root / "soft" / "y_aug.npz").tocsr().astype(np.float32)  # the soft stage's
        n = ctx.ds.y_trn.shape[0]
        if y_aug.shape[0] == n:
            raise ConfigError(
                "the label_rows baseline needs label rows", where="[soft_labels] label_rows", fix="set it to true"
            )
        x = np.vstack([ctx.feats["trn"], ctx.feats["lbl"][: y_aug.shape[0] - n]])
        h = hashlib.sha256()
        for a in (y_aug.indptr, y_aug.indices, y_aug.data):
            h.update(np.ascontiguousarray(a).tobytes())
        sparse = arm_sparse(ctx.feats, len(x))  # the same input as the +LEVER arm (TF-IDF head included)
        ukey = config_hash(ctx.sig, "label_rows", h.hexdigest(), *_sparse_mark(sparse))
        arm = make_arm(ctx.run, ctx.ds, ctx.cfg, "label_rows", x, y_aug, ctx.feats["tst"], x_sparse=sparse)
        s, _ = train_stage(ctx.run, arm, ctx.cfg, ukey, ctx.log)
        return s

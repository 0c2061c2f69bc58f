"""Distillation choices on a train hold-out (never the test split): base, teacher-classifier ensemble,
label rows, and dense +LEVER variants (with or without the teacher blended back in), one table row each.

    OMP_NUM_THREADS=1 python benchmarks/distill_sweep.py configs/wordnet.toml ../shared/data/wordnet-hypernyms-lf \\
        --max-train 15000 '{"lam": 0.5, "calib": "sigmoid", "a": 20, "c": -14}' \\
        '{"lam": 0.5, "teacher": "head", "folds": 2, "hkw": {"epochs": 5}}'

Each JSON argument is one dense variant: ``lam`` (λ), ``calib`` ("linear" or "sigmoid" with ``a``, ``c``),
``truth`` ("one"/"blend"), ``teacher`` ("frozen" or "head" with ``folds`` and head options ``hkw``),
``head`` (labels with n > head positives get the teacher weight (1 − λ)·head/n), ``init`` ("teacher": the
head starts at the teacher's calibrated scores, ``DenseTargets.student_init``),
``pos`` (ground-truth pairs weigh ``pos`` times the other pairs in the loss),
``ensemble`` (also print the student blended with the teacher at each α of ``--alphas``), and any TrainerConfig
key to override. The ensemble rows print every α (the best is chosen on these same hold-out numbers, so it
is optimistic for the ensemble). The tables in docs/distillation.md come from this script.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("data")
    ap.add_argument("variants", nargs="*", help="JSON objects, one per dense variant")
    ap.add_argument("--max-train", type=int, default=0)
    ap.add_argument("--holdout", type=float, default=0.1)
    ap.add_argument("--variants-only", action="store_true", help="skip the base, ensemble and label-rows rows")
    ap.add_argument("--no-label-rows", action="store_true", help="skip the label-rows row")
    ap.add_argument("--base-pos", type=float, default=0.0, help="also fit the base with this positive weight")
    ap.add_argument("--alphas", default="0.5,0.6,0.7,0.8,0.9", help="the ensemble rows' α values")
    a = ap.parse_intermixed_args()

    import torch.nn.functional as F

    from lever_plugins import config as cfgmod
    from lever_plugins import stages
    from lever_plugins.metrics.ranking import evaluate
    from lever_plugins.soft_labels.dense import DenseTargets, weigh_truth
    from lever_plugins.teacher.head import fold_of, normalize, train_projection
    from lever_plugins.trainer import ova

    cfg = cfgmod.load(a.config, {"data": {"holdout": a.holdout, "path": a.data, "max_train": a.max_train}})
    ds = stages.load_data(cfg)  # load_data applies the hold-out and slices (once)
    feats = stages.features(ds, cfg)
    ek = stages.eval_kwargs(ds, cfg)
    y = ds.binary_train().astype(np.float32)
    N, L = y.shape
    xtr, xte, xl = feats["trn"], feats["tst"], feats["lbl"]
    print(f"{N} train, {xte.shape[0]} hold-out, {L} labels", flush=True)
    ttr, tte, tl = normalize(xtr), normalize(xte), normalize(xl)
    sp_tr, sp_te, sp_l = feats.get("trn_sparse"), feats.get("tst_sparse"), feats.get("lbl_sparse")

    def loss(z, t):
        return F.binary_cross_entropy_with_logits(z, t, reduction="mean")

    def fit(x, t, xs=None, dense=None, prior=None, init=None, pos=1.0, **over):
        c = copy.copy(cfg.trainer)
        for k, v in over.items():
            setattr(c, k, v)
        # ground-truth pairs (target 1; soft targets stay <= 1 - λ < 1) weigh ``pos`` times the others
        return ova.train(x, sp.csr_matrix(t, dtype=np.float32), c, cfg.seed, weigh_truth(loss, pos), progress=False,
                         x_sparse=xs, dense=dense, prior=prior, init=init)  # fmt: skip

    def topk(s, k=100):
        idx = np.argpartition(-s, k, axis=1)[:, :k]
        rows = np.repeat(np.arange(s.shape[0]), k)
        vals = s[np.arange(s.shape[0])[:, None], idx].ravel()
        return sp.csr_matrix((vals, (rows, idx.ravel())), shape=s.shape)

    def ev(name, s, extra=""):
        m = evaluate(topk(s), ds.y_tst, **ek)
        r = {k: round(100 * m[k], 2) for k in ("P@1", "P@5", "PSP@5", "C@5")}
        print(f"| {name} | {r['P@1']:.2f} | {r['P@5']:.2f} | {r['PSP@5']:.2f} | {r['C@5']:.2f} | {extra} |",
              flush=True)  # fmt: skip
        return r

    def sig(z):
        return 1 / (1 + np.exp(-z))

    alphas = tuple(float(v) for v in a.alphas.split(","))

    def ens(name, s, cos):
        for al in alphas:
            ev(f"{name} α {al}", al * sig(s) + (1 - al) * cos)

    print("| run | P@1 | P@5 | PSP@5 | C@5 | notes |\n|---|---:|---:|---:|---:|---|")
    cos_te = tte @ tl.T
    ev("teacher (frozen) alone", cos_te)
    if not a.variants_only:
        t0 = time.time()
        base, _ = fit(xtr, y, sp_tr)
        sb = base.scores(xte, sp_te)
        ev("base", sb, f"{time.time() - t0:.0f} s")
        ens("ensemble", sb, cos_te)
        if a.base_pos:
            t0 = time.time()
            bp, _ = fit(xtr, y, sp_tr, pos=a.base_pos)
            sbp = bp.scores(xte, sp_te)
            ev(f"base pos {a.base_pos}", sbp, f"{time.time() - t0:.0f} s")
            ens(f"ensemble (base pos {a.base_pos})", sbp, cos_te)
    xa = np.vstack([xtr, xl])
    xsa = sp.vstack([sp_tr, sp_l]).tocsr() if sp_tr is not None else None
    ya = sp.vstack([y, sp.eye(L, dtype=np.float32)]).tocsr()
    if not (a.variants_only or a.no_label_rows):
        t0 = time.time()
        lr_, _ = fit(xa, ya, xsa)
        ev("label rows", lr_.scores(xte, sp_te), f"{time.time() - t0:.0f} s")
    heads: dict = {}

    def head(folds, **kw):
        key = (folds, json.dumps(kw, sort_keys=True))
        if key not in heads:
            t0 = time.time()
            P, _ = train_projection(xtr, y, tl, seed=1, **kw)
            oof = normalize(xtr @ P.T)
            if folds > 1:
                f = fold_of(N, folds, 1)
                for j in range(folds):
                    Pj, _ = train_projection(xtr[f != j], y[f != j], tl, seed=2 + j, **kw)
                    oof[f == j] = normalize(xtr[f == j] @ Pj.T)
            heads[key] = (P, oof)
            ev(f"teacher head {key} alone", normalize(xte @ P.T) @ tl.T, f"{time.time() - t0:.0f} s")
        return heads[key]

    for spec in a.variants:
        v = json.loads(spec)
        lam, calib = v.pop("lam", 0.5), v.pop("calib", "linear")
        ca, cc, truth = v.pop("a", 1.0), v.pop("c", 0.0), v.pop("truth", "one")
        teacher, folds, hkw = v.pop("teacher", "frozen"), v.pop("folds", 5), v.pop("hkw", {})
        with_ens = v.pop("ensemble", True)
        beta, targets = v.pop("prior", 0.0), v.pop("targets", "dense")
        init, dhead, pos = v.pop("init", ""), v.pop("head", 0.0), v.pop("pos", 1.0)
        if teacher == "frozen":
            rows, P = np.vstack([ttr, tl]), None
        else:
            P, oof = head(folds, **hkw)
            rows = np.vstack([oof, normalize(xl @ P.T)])
        dt = DenseTargets(hard=ya, rows=rows, labels=tl, lam=lam, calibration=calib, a=ca, c=cc, truth=truth,
                          head=dhead)  # fmt: skip
        # teacher prior: the student's dense weights are pulled towards β × the teacher's label embeddings
        # (the features are the teacher's document side for the frozen teacher)
        prior = beta * (tl if P is None else tl @ P) if beta else None
        t0 = time.time()
        m, _ = fit(xa, ya, xsa, dense=dt if targets == "dense" else None, prior=prior,
                   init=dt.student_init(None if P is None else xa) if init == "teacher" else None,
                   pos=pos, **v)  # fmt: skip
        s = m.scores(xte, sp_te)
        name = f"{targets} {teacher} λ {lam} {calib} a {ca} c {cc} {truth} prior {beta} init {init or '-'} head {dhead}"
        name += f" pos {pos}" if pos != 1 else ""
        name = f"{name} {v or ''}".strip()
        ev(name, s, f"{time.time() - t0:.0f} s")
        if with_ens:
            ens(f"{name} + teacher", s, cos_te if P is None else normalize(xte @ P.T) @ tl.T)


if __name__ == "__main__":
    main()

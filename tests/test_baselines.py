"""Tail baselines (ReRank, teacher-classifier ensemble, label rows alone) against numpy oracles and in `lever ab`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import lever

from lever_plugins import config, plugins
from lever_plugins.baselines import ALPHAS, choose_alpha, ensemble_scores, rerank
from lever_plugins.errors import PluginError
from lever_plugins.metrics import evaluate, inv_propensity
from lever_plugins.runner import run_ab


def _topk_logits(rng: np.random.Generator, n: int, n_lbl: int, k: int) -> sp.csr_matrix:
    dense = rng.normal(size=(n, n_lbl)).astype(np.float32)
    idx = np.argsort(-dense, axis=1)[:, :k]
    mask = np.zeros_like(dense, dtype=bool)
    np.put_along_axis(mask, idx, True, axis=1)
    return sp.csr_matrix(np.where(mask, dense, 0.0).astype(np.float32))


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_rerank_equals_numpy_rescoring() -> None:
    rng = np.random.default_rng(0)
    s = _topk_logits(rng, 30, 50, 7)
    y = sp.random(80, 50, density=0.05, random_state=1, format="csr")
    w = inv_propensity(y, 0.55, 1.5)
    got = rerank(s, w)
    d = s.toarray()
    want = np.where(d != 0, 1 / (1 + np.exp(-d.astype(np.float64))) * w[None, :], 0.0)
    want /= want.sum(axis=1, keepdims=True)
    assert np.allclose(got.toarray(), want, atol=1e-6)
    assert (got.indices == s.indices).all()  # same candidates, re-ordered only by value


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_ensemble_scores_equal_dense_oracle(alpha: float) -> None:
    rng = np.random.default_rng(1)
    n, n_lbl, k, tk = 25, 40, 5, 6
    clf = _topk_logits(rng, n, n_lbl, k)
    docs, lbls = _unit(rng, n, 8), _unit(rng, n_lbl, 8)
    got = ensemble_scores(clf, docs, lbls, alpha, top_k=k, teacher_k=tk).toarray()
    cos = docs @ lbls.T
    c = clf.toarray()
    cand = c != 0
    np.put_along_axis(cand, np.argsort(-cos, axis=1)[:, :tk], True, axis=1)
    full = alpha * np.where(c != 0, 1 / (1 + np.exp(-c)), 0.0) + (1 - alpha) * cos
    full = np.where(cand, full, -np.inf)
    for i in range(n):
        top = np.argsort(-full[i])[:k]
        assert set(np.flatnonzero(got[i])) == set(top)
        assert np.allclose(got[i, top], full[i, top], atol=1e-5)


def test_choose_alpha_picks_the_informative_scorer() -> None:
    rng = np.random.default_rng(2)
    n, n_lbl = 60, 30
    truth_col = rng.integers(0, n_lbl, n)
    truth = sp.csr_matrix((np.ones(n), (np.arange(n), truth_col)), shape=(n, n_lbl))
    lbls = _unit(rng, n_lbl, 16)
    good_docs = lbls[truth_col]  # the teacher puts each document on its label
    bad_docs = _unit(rng, n, 16)
    noise = _topk_logits(rng, n, n_lbl, 5)
    right = sp.csr_matrix((np.full(n, 8.0), (np.arange(n), truth_col)), shape=(n, n_lbl)) + noise * 0.1
    kw = dict(train_truth=truth, select="P@1", top_k=5, A=0.55, B=1.5)
    a_teacher, vals = choose_alpha(noise, good_docs, lbls, truth, **kw)
    a_clf, _ = choose_alpha(right, bad_docs, lbls, truth, **kw)
    assert set(vals) == set(ALPHAS)
    assert vals[0.0] == pytest.approx(1.0) and a_teacher < 0.5
    assert a_clf == 1.0


TINY = {
    "seed": 3,
    "encoder": {"max_len": 16, "batch_size": 64},
    "teacher": {"train": False, "max_len": 16},
    "soft_labels": {"tau_l": 3, "tau_d": 4, "threshold": 0.7},
    "trainer": {"epochs": 4, "batch_size": 32, "negatives": "full", "lr": 0.05},
    "eval": {"bootstrap": 30, "baselines": ["rerank", "ensemble", "label_rows"]},
}


def test_ab_with_baselines(tmp_path: Path, tiny_lf: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lever_plugins.data import load_dataset

    monkeypatch.setenv("LEVER_CACHE_DIR", str(tmp_path / "cache"))
    values = json.loads(json.dumps(TINY))
    values["encoder"]["model"] = values["teacher"]["model"] = str(tiny_model)  # fast: a 2-layer random BERT
    cfg = config.from_dict({**values, "data": {"path": str(tiny_lf)}})
    out = tmp_path / "run"
    from lever_plugins.trainer import ova

    train_predict = ova.train_predict

    def slow(*a, **kw):  # every classifier fit takes >= 4 s more, so a stage counted twice shows
        time.sleep(4.0)
        return train_predict(*a, **kw)

    monkeypatch.setattr(ova, "train_predict", slow)
    t0 = time.perf_counter()
    r = run_ab(cfg, out, log=lambda s: None)
    wall = time.perf_counter() - t0
    monkeypatch.setattr(ova, "train_predict", train_predict)
    # "time per stage": the baselines' classifier stages run inside compare and are listed by name, so
    # compare's own figure (bootstrap, tables, plots) leaves them out and no second is counted twice
    secs = r["stage_seconds"]
    assert min(secs["train_label_rows"], secs["train_ensemble_holdout"]) >= 4.0
    assert secs["compare"] < secs["train_label_rows"] + secs["train_ensemble_holdout"]
    assert sum(secs.values()) <= wall
    ds = load_dataset(tiny_lf)
    y = ds.binary_train()
    ek = dict(train_truth=y, A=0.55, B=1.5)
    base = sp.load_npz(out / "base" / "scores.npz")
    # rerank row: the saved base scores re-scored independently
    d = base.toarray()
    p = np.where(d != 0, 1 / (1 + np.exp(-d.astype(np.float64))) * inv_propensity(y, 0.55, 1.5), 0.0)
    p /= np.maximum(p.sum(axis=1, keepdims=True), 1e-30)
    assert r["metrics"]["rerank"] == pytest.approx(evaluate(sp.csr_matrix(p), ds.y_tst, **ek))
    # metrics.json of every row against its saved scores, scored in the test: P@1 by hand (top score of
    # each test row in its truth), the rest by evaluate (itself checked against napkinxc in test_metrics)
    saved = {"rerank": sp.csr_matrix(p), "ensemble": sp.load_npz(out / "baselines" / "ensemble" / "scores.npz"),
             "label_rows": sp.load_npz(out / "label_rows" / "scores.npz")}  # fmt: skip
    truth = ds.y_tst.toarray() > 0
    for name, s in saved.items():
        m = json.loads((out / "baselines" / name / "metrics.json").read_text())
        dense = s.toarray()
        dense[s.toarray() == 0] = -np.inf  # only stored entries are predictions
        top1 = np.argmax(dense, axis=1)
        has = np.isfinite(dense.max(axis=1))
        assert m["P@1"] == pytest.approx(np.mean(truth[np.arange(len(top1)), top1] & has))
        assert m == pytest.approx(evaluate(s, ds.y_tst, **ek))
    # label rows: trained on exactly [Y; I] (no teacher pairs), the soft stage's hard matrix
    y_aug = sp.load_npz(out / "soft" / "y_aug.npz")
    assert (y_aug != sp.vstack([y, sp.identity(y.shape[1])])).nnz == 0
    # the ensemble's alpha is on the grid and its scores mix classifier and teacher candidates
    alpha = json.loads((out / "baselines" / "ensemble" / "alpha.json").read_text())["alpha"]
    assert alpha in ALPHAS
    table = (out / "compare.md").read_text()
    for title in ("ReRank (inverse propensity)", "teacher-classifier ensemble", "label rows only (N + L, no teacher)"):
        assert f"| {title} |" in table
    assert set(json.loads((out / "deciles.json").read_text())) == {
        "base", "+LEVER", "ReRank (inverse propensity)", "teacher-classifier ensemble",
        "label rows only (N + L, no teacher)",
    }  # fmt: skip
    # a re-run recomputes nothing
    stages = json.loads((out / "manifest.json").read_text())["stages"]
    assert {"train_label_rows", "train_ensemble_holdout", "baseline_ensemble"} <= set(stages)
    run_ab(cfg, out, log=lambda s: None)
    again = json.loads((out / "manifest.json").read_text())["stages"]
    assert {k: v["finished"] for k, v in again.items()} == {k: v["finished"] for k, v in stages.items()}


def test_unknown_baseline_fails_before_the_run(tmp_path: Path, tiny_lf: Path) -> None:
    cfg = config.from_dict({**TINY, "data": {"path": str(tiny_lf)}, "eval": {"baselines": ["rerank", "reranq"]}})
    with pytest.raises(PluginError, match="did you mean 'rerank'"):
        run_ab(cfg, tmp_path / "run", log=lambda s: None)
    assert not (tmp_path / "run").exists()
    r = lever("ab", "--data", str(tiny_lf), "--out", str(tmp_path / "r2"), "--baseline", "nope")
    assert r.returncode == 2 and "unknown baseline 'nope'" in r.stderr and r.stderr.count("\n") == 1


def test_baselines_registered_through_the_hook() -> None:
    reg = plugins.baselines()
    assert {"rerank", "ensemble", "label_rows"} <= set(reg)
    assert all(reg[n].dist == "lever-plugins" for n in ("rerank", "ensemble", "label_rows"))
    assert reg["rerank"].factory().title.startswith("ReRank")


def test_ensemble_embeds_with_the_runs_trained_teacher(
    tmp_path: Path, tiny_lf: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch, one_torch_thread: None
) -> None:
    """A trained teacher is reloaded from the teacher stage's checkpoint, not re-trained or replaced."""
    from lever_plugins.baselines import BaselineContext, teacher_embedder
    from lever_plugins.runs import Run
    from lever_plugins.stages import data_signature, load_data, teacher_stage

    monkeypatch.setenv("LEVER_CACHE_DIR", str(tmp_path / "cache"))
    values = json.loads(json.dumps(TINY))
    values["teacher"] = {"train": True, "model": str(tiny_model), "epochs": 1, "max_len": 16, "batch_size": 8,
                         "warmup_steps": 1, "lr": 1e-2}  # fmt: skip
    cfg = config.from_dict({**values, "data": {"path": str(tiny_lf)}})
    ds = load_data(cfg)
    with Run(tmp_path / "run") as run:
        temb, _ = teacher_stage(run, ds, cfg, data_signature(ds))
        ctx = BaselineContext(run, ds, cfg, data_signature(ds), {}, {}, {})
        got = teacher_embedder(ctx)(ds.trn_texts[:6])
    assert np.allclose(got, temb["doc"][:6], atol=1e-5)
    from lever_plugins.teacher.encoder import Encoder

    pristine = Encoder(str(tiny_model), 16, device="cpu").encode(ds.trn_texts[:6], progress=False)
    assert not np.allclose(got, pristine, atol=1e-3)  # the trained weights, not the pre-trained ones


def test_baselines_train_on_the_arms_input_with_tfidf(
    tmp_path: Path, tiny_lf: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the hybrid input the label-rows and ensemble classifiers get the TF-IDF head too: the
    label_rows scores equal an L-BFGS fit on [dense; label dense] + [TF-IDF; label TF-IDF], done here."""
    from lever_plugins.stages import features, load_data
    from lever_plugins.trainer import ova

    monkeypatch.setenv("LEVER_CACHE_DIR", str(tmp_path / "cache"))
    values = json.loads(json.dumps(TINY))
    values["encoder"].update(model=str(tiny_model), tfidf=True)
    values["teacher"]["model"] = str(tiny_model)
    values["trainer"].update(solver="lbfgs", l2=1e-3, max_iter=30)
    values["eval"]["baselines"] = ["ensemble", "label_rows"]
    cfg = config.from_dict({**values, "data": {"path": str(tiny_lf)}})
    out = tmp_path / "run"
    run_ab(cfg, out, log=lambda s: None)
    stages = json.loads((out / "manifest.json").read_text())["stages"]
    dims = {k: stages[k]["stats"]["sparse_dim"] for k in
            ("train_base", "train_lever", "train_label_rows", "train_ensemble_holdout")}  # fmt: skip
    assert len(set(dims.values())) == 1 and dims["train_base"] > 0, dims
    ds = load_data(cfg)
    f = features(ds, cfg, progress=False)
    y_aug = sp.load_npz(out / "soft" / "y_aug.npz").tocsr().astype(np.float32)
    x = np.vstack([f["trn"], f["lbl"]])
    xs = sp.vstack([f["trn_sparse"], f["lbl_sparse"]], format="csr")
    expect, _ = ova.train_predict(x, y_aug, f["tst"], cfg.trainer, seed=cfg.seed, progress=False,
                                  x_sparse=(xs, f["tst_sparse"]))  # fmt: skip
    got = sp.load_npz(out / "label_rows" / "scores.npz")
    np.testing.assert_allclose(got.toarray(), expect.toarray(), rtol=1e-5, atol=1e-6)

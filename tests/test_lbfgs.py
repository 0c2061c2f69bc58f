"""The full-batch L-BFGS solver of the built-in trainer against scikit-learn's logistic regression.

The objective decomposes over labels into independent L2-regularised logistic regressions, so
sklearn's ``LogisticRegression`` (an independent solver, intercept not penalised, C = 1/(l2·M))
fitted label by label is an exact oracle; soft targets t become two weighted copies of each row
(label 1 with weight t, label 0 with weight 1 − t), which has the same loss.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp

from lever_plugins.config import TrainerConfig
from lever_plugins.errors import ConfigError
from lever_plugins.trainer import lbfgs as lbfgs_mod
from lever_plugins.trainer import ova

torch = pytest.importorskip("torch")
linear_model = pytest.importorskip("sklearn.linear_model")


def problem(n: int = 240, d: int = 6, V: int = 40, L: int = 4, seed: int = 0, soft: bool = False):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    xs = sp.random(n, V, density=0.1, format="csr", dtype=np.float32, random_state=seed)
    w_true = rng.standard_normal((d, L))
    ws_true = rng.standard_normal((V, L)) * 2
    logit = x @ w_true + xs @ ws_true - 1.0
    p = 1 / (1 + np.exp(-logit))
    y = (rng.random((n, L)) < p).astype(np.float32)
    if soft:  # some soft entries in (0, 1), like LEVER's blended targets
        y = np.where(rng.random((n, L)) < 0.2, rng.random((n, L)).astype(np.float32), y)
    return x, xs, sp.csr_matrix(y)


def cfg(**kw) -> TrainerConfig:
    base = dict(negatives="full", solver="lbfgs", l2=1e-2, max_iter=500, top_k=4, device="cpu")
    base.update(kw)
    return TrainerConfig(**base)


def bce(logits, targets):
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)


def sklearn_oracle(x, xs, y, l2):
    """Per-label weighted logistic regression on [x, xs]: (coef L×(d+V), intercept L)."""
    feats = np.hstack([x, xs.toarray()]).astype(np.float64)
    n = feats.shape[0]
    dense_y = y.toarray()
    coefs, icpts = [], []
    for j in range(y.shape[1]):
        t = dense_y[:, j]
        X2 = np.vstack([feats, feats])
        lab = np.r_[np.ones(n), np.zeros(n)]
        sw = np.r_[t, 1 - t]
        keep = sw > 0
        clf = linear_model.LogisticRegression(C=1.0 / (l2 * n), tol=1e-10, max_iter=5000)
        clf.fit(X2[keep], lab[keep], sample_weight=sw[keep])
        coefs.append(clf.coef_[0])
        icpts.append(clf.intercept_[0])
    return np.array(coefs), np.array(icpts)


@pytest.mark.parametrize("soft", [False, True])
def test_lbfgs_matches_sklearn_logistic_regression(soft):
    x, xs, y = problem(soft=soft)
    model, stats = ova.train(x, y, cfg(), seed=0, loss_fn=bce, progress=False, x_sparse=xs)
    coef, icpt = sklearn_oracle(x, xs, y, l2=1e-2)
    ours = np.hstack([model.weight, model.sparse_weight.T])
    np.testing.assert_allclose(ours, coef, atol=2e-3, rtol=1e-2)
    np.testing.assert_allclose(model.bias, icpt, atol=2e-3, rtol=1e-2)
    assert stats["solver"] == "lbfgs" and stats["objective"] < stats["objective_first"]


def test_lbfgs_dense_only_matches_sklearn():
    x, xs, y = problem(seed=1)
    model, _ = ova.train(x, y, cfg(l2=3e-2), seed=0, loss_fn=bce, progress=False)
    coef, icpt = sklearn_oracle(x, sp.csr_matrix((x.shape[0], 0), dtype=np.float32), y, l2=3e-2)
    assert model.sparse_weight is None
    np.testing.assert_allclose(model.weight, coef, atol=2e-3, rtol=1e-2)
    np.testing.assert_allclose(model.bias, icpt, atol=2e-3, rtol=1e-2)


def test_loss_comes_from_the_hook():
    """The solver minimises whatever the lever_loss hook returns: doubling the loss is the same
    problem as halving the penalty (and a different one from the original)."""
    x, xs, y = problem(seed=2)
    a, _ = ova.train(x, y, cfg(l2=2e-2), seed=0, loss_fn=lambda z, t: 2 * bce(z, t), progress=False, x_sparse=xs)
    b, _ = ova.train(x, y, cfg(l2=1e-2), seed=0, loss_fn=bce, progress=False, x_sparse=xs)
    c, _ = ova.train(x, y, cfg(l2=2e-2), seed=0, loss_fn=bce, progress=False, x_sparse=xs)
    np.testing.assert_allclose(a.sparse_weight, b.sparse_weight, atol=2e-3)
    assert np.abs(a.sparse_weight - c.sparse_weight).max() > 0.05


def test_chunking_and_target_caching_do_not_change_the_solution(monkeypatch):
    x, xs, y = problem(seed=3)
    one, one_stats = ova.train(x, y, cfg(), seed=0, loss_fn=bce, progress=False, x_sparse=xs)
    monkeypatch.setattr(lbfgs_mod, "CHUNK_ENTRIES", 7 * y.shape[1])  # 7-row chunks, last one shorter
    monkeypatch.setattr(lbfgs_mod, "DENSE_TARGETS_MAX", 0)  # and targets densified per evaluation
    many, stats = ova.train(x, y, cfg(), seed=0, loss_fn=bce, progress=False, x_sparse=xs)
    # same optimum; float32 sums in another order only move where the solver stops
    np.testing.assert_allclose(one.sparse_weight, many.sparse_weight, atol=2e-3)
    np.testing.assert_allclose(one.bias, many.bias, atol=2e-3)
    assert abs(stats["objective"] - one_stats["objective"]) < 1e-6


def test_deterministic_and_predicts_top_k():
    x, xs, y = problem(seed=4)
    s1, _ = ova.train_predict(x, y, x[:30], cfg(), seed=0, loss_fn=bce, progress=False, x_sparse=(xs, xs[:30]))
    s2, _ = ova.train_predict(x, y, x[:30], cfg(), seed=0, loss_fn=bce, progress=False, x_sparse=(xs, xs[:30]))
    assert (s1 != s2).nnz == 0
    model, _ = ova.train(x, y, cfg(), seed=0, loss_fn=bce, progress=False, x_sparse=xs)
    dense = model.scores(x[:30], xs[:30])
    expect = np.sort(dense, axis=1)[:, ::-1]
    np.testing.assert_allclose(np.sort(s1.toarray(), axis=1)[:, ::-1], expect, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("change", [dict(negatives="shortlist"), dict(hidden=8)])
def test_lbfgs_refuses_what_it_cannot_train(change):
    x, xs, y = problem(seed=5)
    config = dataclasses.replace(cfg(), **change)
    with pytest.raises(ConfigError, match="solver = 'lbfgs'"):
        ova.train(x, y, config, seed=0, loss_fn=bce, progress=False, x_sparse=None)


def test_tol_stops_on_a_stalled_window_not_on_one_small_iteration():
    """``tol`` compares the objective over TOL_WINDOW iterations: the run stops on a multiple of the
    window, after the window whose drop fell below tol × (F(start) − F(now)), and not before; the weights
    are those of the uninterrupted run at that iteration (pausing does not change the path)."""
    x, xs, y = problem(seed=6, n=400, V=80)
    b0 = np.zeros(y.shape[1], np.float32)
    trace: list[float] = []
    free, _ = lbfgs_mod.train_lbfgs(x, y, cfg(tol=0.0, l2=1e-4, max_iter=120), bce, b0, x_sparse=xs, trace=trace,
                                    progress=False)  # fmt: skip
    tol = 1e-3
    stopped_trace: list[float] = []
    got, stats = lbfgs_mod.train_lbfgs(x, y, cfg(tol=tol, l2=1e-4, max_iter=120), bce, b0, x_sparse=xs,
                                       trace=stopped_trace, progress=False)  # fmt: skip
    w = lbfgs_mod.TOL_WINDOW
    assert stats["stopped_on_tol"] and stats["iterations"] % w == 0 and stats["iterations"] < 120
    # the oracle: replay the rule on uninterrupted runs cut at each window's end (pausing keeps the path)
    f0 = stopped_trace[0]
    drops, bests, prev = [], [], float("inf")
    for it in range(w, stats["iterations"] + 1, w):
        tr: list[float] = []
        lbfgs_mod.train_lbfgs(x, y, cfg(tol=0.0, l2=1e-4, max_iter=it), bce, b0, x_sparse=xs, trace=tr,
                              progress=False)  # fmt: skip
        drops.append(prev - min(tr))
        prev = min(tr)
        bests.append(prev)
    achieved = [f0 - b for b in bests]
    assert drops[-1] < tol * achieved[-1]
    assert all(d >= tol * a for d, a in zip(drops[1:-1], achieved[1:-1], strict=True))
    # stopping early costs little against the run to 120 iterations, and the stopped weights are the path's
    assert min(stopped_trace) - min(trace) < 10 * tol * (f0 - min(trace))
    assert np.abs(got["sparse_weight"] - free["sparse_weight"]).max() > 0  # it did stop short of the end


def test_prior_centre_against_scipy():
    """With ``prior`` P the penalty is (l2/2)·‖W − P‖²: the solution matches scipy's L-BFGS-B on the
    same objective written out in float64 (an independent solver), and differs from the prior-free one."""
    from scipy.optimize import minimize

    x, xs, y = problem(seed=7, n=200, V=30, L=3, soft=True)
    n, d = x.shape
    L = y.shape[1]
    l2 = 5e-2
    P = np.random.default_rng(1).standard_normal((L, d)).astype(np.float32) * 2
    b0 = np.zeros(L, np.float32)
    got, _ = lbfgs_mod.train_lbfgs(x, y, cfg(l2=l2, max_iter=500), bce, b0, x_sparse=xs, prior=P, progress=False)
    plain, _ = lbfgs_mod.train_lbfgs(x, y, cfg(l2=l2, max_iter=500), bce, b0, x_sparse=xs, progress=False)
    X, S, T = x.astype(np.float64), xs.toarray().astype(np.float64), y.toarray().astype(np.float64)
    V = S.shape[1]

    def f(theta):
        W = theta[: L * d].reshape(L, d)
        Ws = theta[L * d : L * d + V * L].reshape(V, L)
        b = theta[L * d + V * L :]
        z = X @ W.T + S @ Ws + b
        loss = np.mean(np.logaddexp(0, z) - T * z) * L  # Σ over labels, mean over rows
        g = (1 / (1 + np.exp(-z)) - T) / n
        gW = g.T @ X + l2 * (W - P)
        gWs = S.T @ g + l2 * Ws
        obj = loss + 0.5 * l2 * (((W - P) ** 2).sum() + (Ws**2).sum())
        return obj, np.concatenate([gW.ravel(), gWs.ravel(), g.sum(0)])

    opts = {"maxiter": 5000, "gtol": 1e-10}
    res = minimize(f, np.zeros(L * d + V * L + L), jac=True, method="L-BFGS-B", options=opts)
    W_ref = res.x[: L * d].reshape(L, d)
    np.testing.assert_allclose(got["weight"], W_ref, atol=2e-3, rtol=1e-2)
    np.testing.assert_allclose(got["bias"], res.x[L * d + V * L :], atol=2e-3, rtol=1e-2)
    assert np.abs(plain["weight"] - W_ref).max() > 0.1

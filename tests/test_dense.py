"""Dense distillation (soft_labels mode = "dense"), the head teacher and Eq. 9.

Oracles: the dense trainer must equal the same trainer given the materialised N × L target matrix; the
head's loss equals the formula written out; cross-fitting embeds each document with a projection that
never saw it."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from lever_plugins import config
from lever_plugins.soft_labels.dense import DenseTargets
from lever_plugins.teacher.head import fold_of, normalize, pairwise_logistic, train_projection


def _problem(seed: int = 0, n: int = 80, L: int = 15, d: int = 8):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    y = sp.random(n, L, density=0.15, random_state=seed, format="csr", dtype=np.float32)
    y.data[:] = 1.0
    rows = normalize(rng.standard_normal((n, d)))
    labels = normalize(rng.standard_normal((L, d)))
    return x, y, rows, labels


def _materialised(dt: DenseTargets) -> np.ndarray:
    """The definition, entry by entry: λ·y + (1 − λ)·(1 + cos)/2, ground truth kept at 1 with truth='one'."""
    y = dt.hard.toarray()
    out = np.empty(y.shape, np.float64)
    for i in range(y.shape[0]):
        for j in range(y.shape[1]):
            p = (1.0 + float(np.dot(dt.rows[i], dt.labels[j]))) / 2.0
            t = dt.lam * y[i, j] + (1 - dt.lam) * p
            out[i, j] = max(t, y[i, j]) if dt.truth == "one" else t
    return out


@pytest.mark.parametrize("truth", ["one", "blend"])
def test_block_matches_definition(truth):
    _, y, rows, labels = _problem()
    dt = DenseTargets(hard=y, rows=rows, labels=labels, lam=0.3, truth=truth)
    full = _materialised(dt)
    np.testing.assert_allclose(dt.block(slice(None)), full, atol=1e-6)
    r, c = np.array([5, 1, 40]), np.array([0, 7, 14])
    np.testing.assert_allclose(dt.block(r, c), full[np.ix_(r, c)], atol=1e-6)
    assert (dt.block(slice(None))[y.toarray() == 1] == 1.0).all() == (truth == "one")


def test_sparse_export_keeps_truth_and_top_values():
    _, y, rows, labels = _problem(1)
    dt = DenseTargets(hard=y, rows=rows, labels=labels, lam=0.5)
    k = 5
    m = dt.sparse_export(k)
    full = _materialised(dt)
    yd = y.toarray()
    for i in range(y.shape[0]):
        kept = set(m[i].indices)
        truth = set(np.flatnonzero(yd[i]))
        assert truth <= kept or len(truth) > k
        rest = [j for j in np.argsort(-full[i], kind="stable") if j not in truth][: k - len(truth)]
        assert kept == truth | set(rest) if len(truth) <= k else True
        np.testing.assert_allclose(m[i].toarray().ravel()[sorted(kept)], full[i, sorted(kept)], atol=1e-6)


@pytest.mark.parametrize("negatives,solver", [("full", "sgd"), ("shortlist", "sgd"), ("full", "lbfgs")])
def test_trainer_with_dense_equals_materialised_targets(negatives, solver, one_torch_thread):
    """Dense targets on the fly == the same trainer on the stored N × L matrix of those targets (which
    carries every entry, so shortlist candidates see the same values)."""
    from lever_plugins.trainer import ova

    x, y, rows, labels = _problem(2)
    dt = DenseTargets(hard=y, rows=rows, labels=labels, lam=0.4)
    full = sp.csr_matrix(dt.block(slice(None)))
    cfg = config.TrainerConfig(negatives=negatives, solver=solver, epochs=3, batch_size=16, lr=0.05, max_iter=30,
                               shortlist_size=4)
    # the shortlist's candidates include every stored entry: store the materialised matrix in both runs
    m1, _ = ova.train(x, full, cfg, seed=5, progress=False, dense=dt)
    m2, _ = ova.train(x, full, cfg, seed=5, progress=False)
    np.testing.assert_allclose(m1.weight, m2.weight, atol=1e-5)
    # and the dense targets differ from the sparse ones: training on y alone gives another model
    m3, _ = ova.train(x, y, cfg, seed=5, progress=False)
    assert np.abs(m3.weight - m1.weight).max() > 1e-3


def test_pairwise_logistic_is_eq9():
    import torch

    pos = torch.tensor([0.5, -0.2])
    neg = torch.tensor([[0.1, 0.7], [0.0, -0.5]])
    pairs = [(0.5, 0.1), (0.5, 0.7), (-0.2, 0.0), (-0.2, -0.5)]
    want = np.mean([np.log1p(np.exp(3.0 * (n - p))) for p, n in pairs])
    assert float(pairwise_logistic(pos, neg, 3.0)) == pytest.approx(want, rel=1e-6)


def _rotated(seed: int, L: int, d: int, n: int):
    """Documents that are their label's embedding seen through a fixed random rotation, plus noise."""
    rng = np.random.default_rng(seed)
    v = normalize(rng.standard_normal((L, d)))
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    lab = rng.integers(0, L, n)
    x = (v[lab] @ q.T + 0.05 * rng.standard_normal((n, d))).astype(np.float32)
    y = sp.csr_matrix((np.ones(n, np.float32), (np.arange(n), lab)), shape=(n, L))
    return x, y, v, lab


def test_projection_learns_a_rotation():
    """Documents are labels seen through a fixed rotation: the frozen scores rank poorly, the trained
    projection recovers the labels (P@1 near 1), and its training loss falls."""
    x, y, v, lab = _rotated(0, L=20, d=12, n=400)
    p1_frozen = np.mean(np.argmax(normalize(x) @ v.T, 1) == lab)
    P, losses = train_projection(x, y, v, epochs=30, lr=0.01, scale=10.0, negatives=5, batch_size=64)
    p1 = np.mean(np.argmax(normalize(x @ P.T) @ v.T, 1) == lab)
    assert losses[-1] < 0.5 * losses[0]
    assert p1 > 0.95 and p1 > p1_frozen + 0.3


def test_projection_with_label_sample_learns_too():
    """With a label sample smaller than L the same problem is learnt (the sampled path is exercised)."""
    x, y, v, lab = _rotated(1, L=60, d=12, n=600)
    P, losses = train_projection(x, y, v, epochs=30, lr=0.01, scale=10.0, negatives=5, batch_size=64, label_sample=16)
    assert losses[-1] < 0.5 * losses[0]
    assert np.mean(np.argmax(normalize(x @ P.T) @ v.T, 1) == lab) > 0.9


def test_folds_partition():
    f = fold_of(103, 5, 1)
    assert sorted(np.bincount(f).tolist()) == [20, 20, 21, 21, 21]
    assert not np.array_equal(f, fold_of(103, 5, 2))


def test_head_teacher_out_of_fold(tmp_path, monkeypatch):
    """Each document's out-of-fold embedding is the projection trained WITHOUT its fold; the document side
    for new texts is the projection trained on all; resume loads the saved fit."""
    from lever_plugins.teacher import head as headmod

    rng = np.random.default_rng(3)
    texts = [f"d{i}" for i in range(30)]
    lbls = [f"l{j}" for j in range(6)]
    table = {t: rng.standard_normal(8).astype(np.float32) for t in texts + lbls + ["new"]}
    monkeypatch.setattr(headmod.HeadTeacher, "_frozen", lambda self, ts: np.stack([table[t] for t in ts]))
    y = sp.csr_matrix((np.ones(30, np.float32), (np.arange(30), rng.integers(0, 6, 30))), shape=(30, 6))
    calls = []
    real = headmod.train_projection

    def spy(x, yy, v, **kw):
        calls.append(x.copy())
        return real(x, yy, v, **kw)

    monkeypatch.setattr(headmod, "train_projection", spy)
    t = headmod.HeadTeacher(config.TeacherConfig(train=False), seed=1, folds=3, epochs=2)
    t.fit(texts, lbls, y, tmp_path)
    assert len(calls) == 4  # all documents, then one per fold
    x = np.stack([table[s] for s in texts])
    f = fold_of(30, 3, 1)
    oof = t.fit_embeddings()
    for j in range(3):
        kw = {k: t.options[k] for k in ("epochs", "lr", "scale", "negatives", "batch_size", "label_sample")}
        Pj, _ = real(x[f != j], y[f != j], normalize(np.stack([table[s] for s in lbls])), seed=1 + 1 + j, **kw)
        np.testing.assert_allclose(oof[f == j], normalize(x[f == j] @ Pj.T), atol=1e-5)
        assert len(calls[1 + j]) == (f != j).sum()
    np.testing.assert_allclose(t.embed(["new"]), normalize(table["new"][None] @ t.P.T), atol=1e-6)
    np.testing.assert_allclose(t.embed_labels(["l0"]), normalize(table["l0"][None]), atol=1e-6)
    t2 = headmod.HeadTeacher(config.TeacherConfig(train=False), seed=1, folds=3, epochs=2)
    calls.clear()
    assert t2.fit(texts, lbls, y, tmp_path)["resumed"] and not calls
    np.testing.assert_array_equal(t2.fit_embeddings(), oof)


def test_ab_dense_mode_end_to_end(tmp_path: Path, tiny_lf: Path, monkeypatch):
    """lever ab with mode = dense and the head teacher: the +LEVER arm trained on dense targets (stats say
    so, with the configured ground-truth weight) built from the teacher's out-of-fold document embeddings; the
    sparse export is what is stored."""
    from lever_plugins.runner import run_ab

    monkeypatch.setenv("LEVER_CACHE_DIR", str(tmp_path / "cache"))
    values = {
        "seed": 3, "data": {"path": str(tiny_lf)},
        "encoder": {"max_len": 16, "batch_size": 64}, "teacher": {"name": "head", "train": False, "max_len": 16,
                                                                  "options": {"folds": 2, "epochs": 2}},
        "soft_labels": {"mode": "dense", "tau_l": 3, "threshold": 0.7, "dense_truth_weight": 2.0},
        "trainer": {"negatives": "full", "solver": "lbfgs", "max_iter": 20},
        "eval": {"bootstrap": 20, "baselines": ["lever_rerank", "lever_ensemble"]},
    }  # fmt: skip
    out = tmp_path / "run"
    run_ab(config.from_dict(values), out, log=lambda s: None)
    # the combination rows: ReRank of the +LEVER scores (recomputed here), and a +LEVER ensemble whose
    # alpha was chosen on a hold-out classifier trained with the dense targets
    from lever_plugins.data import load_dataset
    from lever_plugins.metrics import evaluate

    ds = load_dataset(tiny_lf)
    lev = sp.load_npz(out / "lever" / "scores.npz").tocsr()
    freq = np.asarray(ds.binary_train().sum(0)).ravel()
    c = (np.log(60) - 1) * (1.5 + 1) ** 0.55
    w = 1 + c * np.exp(-0.55 * np.log(freq + 1.5))
    rr = lev.copy()
    rr.data = 1 / (1 + np.exp(-rr.data)) * w[rr.indices]
    rr = sp.csr_matrix(rr.multiply(1 / np.asarray(rr.sum(1))))
    got = json.loads((out / "baselines" / "lever_rerank" / "metrics.json").read_text())
    assert got["PSP@5"] == pytest.approx(evaluate(rr, ds.y_tst, train_truth=ds.binary_train(), A=0.55, B=1.5)["PSP@5"])
    man = json.loads((out / "manifest.json").read_text())["stages"]
    assert man["train_lever_ensemble_holdout"]["stats"]["targets"] == "dense"
    assert 0.0 <= json.loads((out / "baselines" / "lever_ensemble" / "alpha.json").read_text())["alpha"] <= 1.0
    stats = json.loads((out / "manifest.json").read_text())["stages"]["train_lever"]
    assert stats["stats"]["targets"] == "dense"
    assert stats["stats"]["truth_weight"] == 2.0  # [soft_labels] dense_truth_weight reached the trainer
    assert man["train_lever_ensemble_holdout"]["stats"]["truth_weight"] == 2.0
    z = np.load(out / "teacher" / "embeddings.npz")
    assert z["doc"].shape[0] == 60 and z["lbl_doc"].shape[0] == 12
    # the head teacher's document side is a trained projection: not the label side's frozen embedding
    assert np.abs(z["lbl_doc"] - z["lbl"]).max() > 1e-4


def test_dense_mode_refuses_a_blend_plugin(tiny_lf: Path):
    """Dense targets are formed on the fly: a third-party lever_blend_targets would be bypassed, so the run
    is refused before any stage (and accepted in sparse mode)."""
    from lever_plugins import plugins, stages
    from lever_plugins.errors import ConfigError
    from lever_plugins.hookspecs import hookimpl

    class Blend:
        @hookimpl
        def lever_blend_targets(self, y, soft, config):
            return None

    pm = plugins.get_plugin_manager()
    pm.register(Blend(), name="test-blend")
    try:
        cfg = config.from_dict({"data": {"path": str(tiny_lf)}, "soft_labels": {"mode": "dense"}})
        with pytest.raises(ConfigError, match="bypass lever_blend_targets"):
            stages.preflight(cfg)
        stages.preflight(config.from_dict({"data": {"path": str(tiny_lf)}, "soft_labels": {"mode": "sparse"}}))
    finally:
        pm.unregister(name="test-blend")
    stages.preflight(cfg)


def test_dense_with_an_lbfgs_tolerance_needs_the_teacher_start():
    """From the centroid start, tol = 1e-2 stops dense L-BFGS after ~25 iterations (measured): that pairing is
    one error line naming the key and both fixes; configs/debtags.toml ships dense with the teacher start."""
    root = Path(__file__).resolve().parents[1]
    shipped = config.load(root / "configs/debtags.toml")
    assert shipped.soft_labels.mode == "dense" and shipped.soft_labels.dense_init == "teacher"
    assert shipped.trainer.tol == 1e-2
    with pytest.raises(config.ConfigError) as e:
        config.load(root / "configs/debtags.toml", {"soft_labels": {"dense_init": "centroids"}})
    assert "trainer.tol" in e.value.what and "dense_init=teacher" in e.value.fix and "trainer.tol = 0" in e.value.fix
    centroids_tol0 = {"soft_labels": {"dense_init": "centroids"}, "trainer": {"tol": 0.0}}
    ok = config.load(root / "configs/debtags.toml", centroids_tol0)
    assert ok.trainer.tol == 0.0
    assert config.load(root / "configs/debtags.toml", {"soft_labels": {"mode": "sparse"}}).trainer.tol == 1e-2


@pytest.mark.parametrize("calibration,lam", [("sigmoid", 0.5), ("sigmoid", 0.2), ("linear", 0.5)])
def test_student_init_starts_at_the_negatives_target(calibration, lam):
    """A student whose features are the teacher rows, with the init head, predicts (1 − λ)·p̂ — the target of
    every non-positive pair — written out here with numpy: exactly in the tail for sigmoid, to first order
    around cos = 0 for linear."""
    _, y, rows, labels = _problem(3, n=200, L=40, d=6)
    dt = DenseTargets(hard=y, rows=rows, labels=labels, lam=lam, calibration=calibration, a=20.0, c=-14.0)
    w, b = dt.student_init()
    assert w.shape == labels.shape and b.shape == (labels.shape[0],)
    cos = rows @ labels.T
    pred = 1.0 / (1.0 + np.exp(-(rows @ w.T + b)))
    if calibration == "sigmoid":
        target = (1 - lam) / (1.0 + np.exp(-(20.0 * cos - 14.0)))
        tail = target < 1e-3
        assert tail.sum() > 1000
        np.testing.assert_allclose(pred[tail], target[tail], rtol=2e-3)
    else:
        target = (1 - lam) * (1.0 + cos) / 2.0
        near = np.abs(cos) < 0.05
        assert near.sum() > 50
        np.testing.assert_allclose(pred[near], target[near], atol=2e-3)  # second order in cos
        far = np.abs(cos) > 0.5
        assert np.abs(pred[far] - target[far]).max() > 2e-3  # only a tangent: it is not exact elsewhere


@pytest.mark.parametrize("negatives,solver", [("full", "sgd"), ("shortlist", "sgd"), ("full", "lbfgs")])
def test_trainer_init_is_the_starting_point(negatives, solver, one_torch_thread):
    """Zero epochs (Adam) return the given head exactly; L-BFGS from the init reaches the same optimum
    as from zero (the objective is convex), so the start changes the path, not the answer."""
    from lever_plugins.errors import DataError
    from lever_plugins.trainer import ova

    x, y, rows, labels = _problem(4)
    dt = DenseTargets(hard=y, rows=rows, labels=labels, lam=0.5, calibration="sigmoid", a=5.0, c=-2.0)
    w0, b0 = dt.student_init()
    w0 = w0 + np.float32(0.01)  # differs from every other start the trainer could pick
    cfg = config.TrainerConfig(negatives=negatives, solver=solver, epochs=0, batch_size=16, lr=0.05, max_iter=300,
                               shortlist_size=4, weight_decay=0.0, l2=1e-2)
    m, _ = ova.train(rows, y, cfg, seed=1, progress=False, dense=dt, init=(w0, b0))
    if solver == "sgd":
        np.testing.assert_array_equal(m.weight, w0)
        np.testing.assert_array_equal(m.bias, b0)
        m0, _ = ova.train(rows, y, cfg, seed=1, progress=False, dense=dt)
        assert np.abs(m0.weight - w0).max() > 0.1  # without init: centroids
    else:
        m0, _ = ova.train(rows, y, cfg, seed=1, progress=False, dense=dt)
        assert np.abs(m.weight - w0).max() > 1e-2  # it moved
        np.testing.assert_allclose(m.weight, m0.weight, atol=2e-3)
        np.testing.assert_allclose(m.bias, m0.bias, atol=2e-3)
        cfg.max_iter = 1  # one iteration from each start: the init is where the path begins
        m1, _ = ova.train(rows, y, cfg, seed=1, progress=False, dense=dt, init=(w0, b0))
        m01, _ = ova.train(rows, y, cfg, seed=1, progress=False, dense=dt)
        assert np.abs(m1.weight - w0).max() < np.abs(m01.weight - w0).max()
    with pytest.raises(DataError, match="head init"):
        ova.train(rows, y, cfg, seed=1, progress=False, dense=dt, init=(w0[:, :3], b0))


def test_student_init_maps_other_features_by_least_squares():
    """Student features that are an invertible linear map of the teacher rows give the same logits as the
    exact init on the rows themselves (the least-squares map recovers the inverse); unrelated features do
    not, and a row-count mismatch is refused."""
    from lever_plugins.errors import DataError

    _, y, rows, labels = _problem(5, n=300, L=20, d=6)
    dt = DenseTargets(hard=y, rows=rows, labels=labels, lam=0.5, calibration="sigmoid", a=20.0, c=-14.0)
    w, b = dt.student_init()
    mix = np.random.default_rng(0).standard_normal((6, 9)).astype(np.float32)  # rank 6, into 9 dims
    x = rows @ mix
    wx, bx = dt.student_init(x)
    assert wx.shape == (20, 9)
    np.testing.assert_allclose(x @ wx.T + bx, rows @ w.T + b, atol=1e-2)
    noise = np.random.default_rng(1).standard_normal((300, 6)).astype(np.float32)
    wn, bn = dt.student_init(noise)
    assert np.abs(noise @ wn.T + bn - (rows @ w.T + b)).max() > 1.0
    with pytest.raises(DataError, match="teacher rows"):
        dt.student_init(x[:10])


def test_dense_init_key_wires_the_teacher_start(one_torch_thread):
    """`[soft_labels] dense_init = "teacher"` reaches the trainer (zero epochs give back the teacher head on
    the features it was given); a bad value is one config error; the "centroids" default and sparse mode
    keep the soft stage's old cache key."""
    from lever_plugins.trainer import ova

    _, y, rows, labels = _problem(6, n=120, L=12, d=5)
    x = rows @ np.random.default_rng(2).standard_normal((5, 7)).astype(np.float32)
    dt = DenseTargets(hard=y, rows=rows, labels=labels, lam=0.5, calibration="sigmoid", a=20.0, c=-14.0,
                      start="teacher")  # fmt: skip
    cfg = config.TrainerConfig(negatives="shortlist", epochs=0, shortlist_size=4)
    m, _ = ova.train(x, y, cfg, seed=0, progress=False, dense=dt)
    w, b = dt.student_init(x)
    np.testing.assert_array_equal(m.weight, w)
    np.testing.assert_array_equal(m.bias, b)
    with pytest.raises(config.ConfigError, match="dense_init"):
        config.load(None, {"soft_labels": {"mode": "dense", "dense_init": "zeros"}})
    old = config.SoftLabelConfig(mode="dense", dense_init="centroids")  # the start before the key existed
    assert "dense_init" not in config.soft_key(old)
    assert config.soft_key(config.SoftLabelConfig(mode="dense", dense_init="teacher"))["dense_init"] == "teacher"
    assert "dense_init" not in config.soft_key(config.SoftLabelConfig(mode="sparse"))  # sparse: unused


@pytest.mark.parametrize("truth", ["one", "blend"])
def test_dense_head_weights_the_teacher_by_label_frequency(truth):
    """With head = h, label l's targets are λ_l·y + (1 − λ_l)·p̂ with 1 − λ_l = (1 − λ)·min(1, h/n_l), n_l its
    positives — written out entry by entry; the init follows the same per-label weight."""
    _, y, rows, labels = _problem(7, n=120, L=15)
    y = y.tolil()
    y[:60, 3] = 1.0  # a head label
    y = y.tocsr()
    h, lam = 16.0, 0.4
    dt = DenseTargets(hard=y, rows=rows, labels=labels, lam=lam, truth=truth, head=h)
    yd = y.toarray()
    n = yd.sum(axis=0)
    assert n[3] > h and (n <= h).any()
    want = np.empty(yd.shape)
    for i in range(yd.shape[0]):
        for j in range(yd.shape[1]):
            q = (1 - lam) * min(1.0, h / n[j])
            t = (1 - q) * yd[i, j] + q * (1.0 + float(np.dot(rows[i], labels[j]))) / 2.0
            want[i, j] = max(t, yd[i, j]) if truth == "one" else t
    np.testing.assert_allclose(dt.block(slice(None)), want, atol=1e-6)
    c = np.array([3, 0, 9])
    np.testing.assert_allclose(dt.block(np.arange(5), c), want[:5][:, c], atol=1e-6)
    off = DenseTargets(hard=y, rows=rows, labels=labels, lam=lam, truth=truth)
    np.testing.assert_allclose(off.block(slice(None)), _materialised(off), atol=1e-6)  # head = 0: as before
    sig = DenseTargets(hard=y, rows=rows, labels=labels, lam=lam, calibration="sigmoid", a=20.0, c=-14.0, head=h)
    _, b = sig.student_init()
    np.testing.assert_allclose(b[3] - b[0], np.log(h / n[3]) - np.log(min(1.0, h / n[0])), atol=1e-5)
    with pytest.raises(config.ConfigError, match="dense_head"):
        config.load(None, {"soft_labels": {"mode": "dense", "dense_head": -1}})


def test_auto_calibration_follows_the_label_count():
    """calibration = "auto" (the default): linear for sparse soft labels and for dense targets on up to 3,000
    labels, σ(20·cos − 14) for dense targets on more; a named method is never changed. The kNN provider
    scores its pairs with the resolved map (checked against numpy on one side of the switch and the other),
    and the run header says what "auto" became."""
    from lever_plugins import stages
    from lever_plugins.report import header_lines
    from lever_plugins.soft_labels.calibrate import resolve
    from lever_plugins.soft_labels.provider import KnnProvider

    assert config.SoftLabelConfig().calibration == "auto"
    assert resolve("auto", 1.0, 0.0, 3000, dense=True) == ("linear", 1.0, 0.0)
    assert resolve("auto", 1.0, 0.0, 3001, dense=True) == ("sigmoid", 20.0, -14.0)
    assert resolve("auto", 1.0, 0.0, 10**6, dense=False) == ("linear", 1.0, 0.0)
    assert resolve("linear", 1.0, 0.0, 10**6, dense=True) == ("linear", 1.0, 0.0)
    assert resolve("sigmoid", 3.0, -1.0, 10, dense=True) == ("sigmoid", 3.0, -1.0)

    rng = np.random.default_rng(0)
    for n_labels, expect in ((40, "linear"), (3001, "sigmoid")):
        lbl = normalize(rng.standard_normal((n_labels, 3)).astype(np.float32))
        y = sp.csr_matrix((np.ones(n_labels), (np.arange(n_labels) % 5, np.arange(n_labels))), shape=(5, n_labels))
        soft_cfg = config.SoftLabelConfig(tau_l=3, threshold=0.0, k=4)
        out = KnnProvider(soft_cfg).build(y, None, lbl)
        c = sp.coo_matrix(out.soft)
        assert c.nnz > 0
        cos = np.clip(np.sum(lbl[c.row - 5] * lbl[c.col], axis=1).astype(np.float64), -1, 1)
        want = (1 + cos) / 2 if expect == "linear" else 1 / (1 + np.exp(-(20 * cos - 14)))
        np.testing.assert_allclose(c.data, want, atol=1e-5)
        cfg = config.load(None, {})
        head = " ".join(header_lines(cfg, "x", 5, 5, n_labels, None))
        assert ("auto: sigmoid (a = 20, c = -14) calibration" in head) == (expect == "sigmoid")
        assert ("auto: linear calibration" in head) == (expect == "linear")
        # a provider (a plugin's too) is built with the method named, never "auto"
        assert stages.make_provider(cfg, n_labels).config.calibration == expect


def test_truth_weight_loss_is_the_weighted_mean():
    """``weighted_loss`` of the mean BCE is Σ w_il·ℓ_il / entries with w = truth_weight on the ground-truth
    pairs (taken from the hard matrix here, not from the targets) and 1 elsewhere: value and gradient against
    numpy; a plugin loss that is not BCE (squared error) is weighted the same way."""
    import torch
    import torch.nn.functional as F

    _, y, rows, labels = _problem(8, n=40, L=12)
    w = 3.0
    dt = DenseTargets(hard=y, rows=rows, labels=labels, lam=0.3, truth_weight=w)
    t = dt.block(slice(None))
    z = np.random.default_rng(3).standard_normal(t.shape) * 3
    wt = np.where(y.toarray() == 1, w, 1.0)
    zt = torch.tensor(z, dtype=torch.float64, requires_grad=True)
    got = dt.weighted_loss(lambda a, b: F.binary_cross_entropy_with_logits(a, b, reduction="mean"))(
        zt, torch.tensor(t, dtype=torch.float64))
    got.backward()
    want = (wt * (np.logaddexp(0, z) - t * z)).sum() / z.size
    np.testing.assert_allclose(float(got.detach()), want, rtol=1e-10)
    np.testing.assert_allclose(zt.grad.numpy(), wt * (1 / (1 + np.exp(-z)) - t) / z.size, rtol=1e-8, atol=1e-14)
    sq = dt.weighted_loss(lambda a, b: ((a - b) ** 2).mean())(torch.tensor(z), torch.tensor(t, dtype=torch.float64))
    np.testing.assert_allclose(float(sq), (wt * (z - t) ** 2).sum() / z.size, rtol=1e-10)
    assert 0 < (wt > 1).mean() < 0.5  # both kinds of pair are present


def test_truth_weight_lbfgs_against_scipy(one_torch_thread):
    """The built-in trainer takes the weight from the dense targets: the full-batch L-BFGS head on dense
    targets with truth_weight 2.5 matches scipy's L-BFGS-B on the weighted objective written out in float64
    (targets from the entry-by-entry definition), and differs from the unweighted head."""
    from scipy.optimize import minimize

    from lever_plugins.trainer import ova

    x, y, rows, labels = _problem(9, n=90, L=6, d=5)
    M, d = x.shape
    L, w, l2 = y.shape[1], 2.5, 2e-2
    dt = DenseTargets(hard=y, rows=rows, labels=labels, lam=0.4, truth_weight=w)
    cfg = config.TrainerConfig(negatives="full", solver="lbfgs", max_iter=500, l2=l2)
    got, _ = ova.train(x, y, cfg, seed=0, progress=False, dense=dt)
    plain, _ = ova.train(x, y, cfg, seed=0, progress=False, dense=replace(dt, truth_weight=1.0))
    X, T = x.astype(np.float64), _materialised(dt)
    Wt = np.where(y.toarray() == 1, w, 1.0)

    def f(theta):
        W, b = theta[: L * d].reshape(L, d), theta[L * d :]
        z = X @ W.T + b
        obj = (Wt * (np.logaddexp(0, z) - T * z)).sum() / M + 0.5 * l2 * (W**2).sum()
        g = Wt * (1 / (1 + np.exp(-z)) - T) / M
        return obj, np.concatenate([(g.T @ X + l2 * W).ravel(), g.sum(0)])

    res = minimize(f, np.zeros(L * d + L), jac=True, method="L-BFGS-B", options={"maxiter": 5000, "gtol": 1e-10})
    np.testing.assert_allclose(got.weight, res.x[: L * d].reshape(L, d), atol=2e-3, rtol=1e-2)
    np.testing.assert_allclose(got.bias, res.x[L * d :], atol=2e-3, rtol=1e-2)
    assert np.abs(plain.weight - res.x[: L * d].reshape(L, d)).max() > 0.05


def test_truth_weight_config():
    """``[soft_labels] dense_truth_weight``: > 0; needs ground truth at 1 (``dense_truth = "one"``), one config
    error otherwise; the value 1 and sparse mode keep the soft stage's cache key; the run header names it."""
    with pytest.raises(config.ConfigError, match="dense_truth_weight"):
        config.load(None, {"soft_labels": {"mode": "dense", "dense_truth_weight": 0}})
    with pytest.raises(config.ConfigError, match="dense_truth = 'one'"):
        config.load(None, {"soft_labels": {"mode": "dense", "dense_truth": "blend", "dense_truth_weight": 2}})
    config.load(None, {"soft_labels": {"mode": "sparse", "dense_truth": "blend", "dense_truth_weight": 2}})  # unused
    assert "dense_truth_weight" not in config.soft_key(config.SoftLabelConfig(mode="dense"))
    assert "dense_truth_weight" not in config.soft_key(config.SoftLabelConfig(mode="sparse", dense_truth_weight=2))
    assert config.soft_key(config.SoftLabelConfig(mode="dense", dense_truth_weight=2))["dense_truth_weight"] == 2
    _, y, rows, labels = _problem(10)
    with pytest.raises(config.ConfigError, match="dense_truth_weight"):
        DenseTargets(hard=y, rows=rows, labels=labels, truth="blend", truth_weight=2.0)
    from lever_plugins.report import header_lines

    def head(w):  # the run header names a weight other than 1
        cfg = config.load(None, {"soft_labels": {"dense_truth_weight": w}})
        return " ".join(header_lines(cfg, "x", 5, 5, 40, None))

    assert "(ground truth: one, weight 2)" in head(2.0) and "(ground truth: one)" in head(1.0)

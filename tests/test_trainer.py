"""The built-in OvA trainer on small synthetic problems (seconds, CPU)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import arm_for

from lever_plugins.adapter import Adapter
from lever_plugins.config import TrainerConfig
from lever_plugins.errors import DataError, LeverError
from lever_plugins.stages import loss_fn
from lever_plugins.trainer import ova
from lever_plugins.trainer.adapter import BuiltinAdapter

torch = pytest.importorskip("torch")
faiss = pytest.importorskip("faiss")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # 2 shared cores: a second OpenMP thread spinning against other processes makes steps 20x slower.
    t, f = torch.get_num_threads(), faiss.omp_get_max_threads()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    yield
    torch.set_num_threads(t)
    faiss.omp_set_num_threads(f)


def make_problem(n: int = 2500, d: int = 32, L: int = 200, seed: int = 0, noise: float = 0.3):
    """Documents are noisy sums of 1-3 label prototypes: linearly separable up to the noise."""
    rng = np.random.default_rng(seed)
    proto = rng.standard_normal((L, d)).astype(np.float32)
    k = rng.integers(1, 4, n)
    rows = np.repeat(np.arange(n), k)
    cols = np.concatenate([rng.choice(L, kk, replace=False) for kk in k])
    y = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n, L))
    x = (y @ proto + noise * rng.standard_normal((n, d))).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, y


def top1(scores: sp.csr_matrix) -> np.ndarray:
    out = np.empty(scores.shape[0], np.int64)
    for i in range(scores.shape[0]):
        a, b = scores.indptr[i], scores.indptr[i + 1]
        out[i] = scores.indices[a + np.argmax(scores.data[a:b])]
    return out


def p_at_1(scores: sp.csr_matrix, truth: sp.csr_matrix) -> float:
    t = top1(scores)
    return float(np.mean([truth[i, t[i]] > 0 for i in range(len(t))]))


def cfg(**kw) -> TrainerConfig:
    base = dict(epochs=6, batch_size=128, lr=1e-2, shortlist_size=20, top_k=5, device="cpu")
    base.update(kw)
    return TrainerConfig(**base)


@pytest.fixture(scope="module")
def problem():
    x, y = make_problem()
    return x[:2000], y[:2000], x[2000:], y[2000:]


@pytest.fixture(scope="module")
def trained(problem):
    xtr, ytr, xte, yte = problem
    return {
        m: ova.train_predict(xtr, ytr, xte, cfg(negatives=m), seed=3, progress=False) for m in ("full", "shortlist")
    }


def test_both_modes_learn_a_separable_problem(problem, trained):
    _, _, xte, yte = problem
    p = {m: p_at_1(s, yte) for m, (s, _) in trained.items()}
    assert p["full"] > 0.9 and p["shortlist"] > 0.9, p
    assert abs(p["full"] - p["shortlist"]) <= 0.05, p
    for m, (s, stats) in trained.items():
        assert s.shape == (len(xte), 200) and np.all(np.diff(s.indptr) == 5)
        assert stats["epochs_run"] == 6 and len(stats["epoch_seconds"]) == 6 and stats["mode"] == m
    # the shortlist really trains on a subset of the 200 labels
    assert 0 < np.mean(trained["shortlist"][1]["mean_candidates"]) < 200


def test_shortlist_topk_is_exact_brute_force(problem):
    xtr, ytr, xte, _ = problem
    model, _ = ova.train(xtr, ytr, cfg(negatives="shortlist", epochs=3), seed=1, progress=False)
    brute = xte @ model.weight.T + model.bias  # independent oracle: numpy over the exposed weights
    k = 7
    want = np.sort(brute, axis=1)[:, ::-1][:, :k]
    for method in ("faiss", "torch"):
        got = model.topk(xte, k, method=method)
        vals = got.data.reshape(-1, k)
        np.testing.assert_allclose(np.sort(vals, axis=1)[:, ::-1], want, rtol=1e-5, atol=1e-5)
        # the returned indices carry the brute-force scores they claim
        np.testing.assert_allclose(vals, np.take_along_axis(brute, got.indices.reshape(-1, k), 1), rtol=1e-5, atol=1e-5)
    # train_predict (same seed) returns the same top-k as the model's weights give
    scores, _ = ova.train_predict(xtr, ytr, xte, cfg(negatives="shortlist", epochs=3, top_k=k), seed=1, progress=False)
    np.testing.assert_allclose(np.sort(scores.data.reshape(-1, k), 1)[:, ::-1], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["full", "shortlist"])
def test_soft_targets_order_the_scores(mode):
    """Labels 0 and 1 share the same documents; only their target values differ."""
    x, y = make_problem(n=1500, L=40, seed=5)
    y = y.tolil()
    rng = np.random.default_rng(0)
    group = rng.choice(1500, 300, replace=False)
    y[:, 0] = 0
    y[:, 1] = 0
    shift = np.zeros(x.shape[1], np.float32)
    shift[0] = 3.0  # the group's documents share a feature direction (both labels are learnable)
    x = x.copy()
    x[group] += shift
    x /= np.linalg.norm(x, axis=1, keepdims=True)

    def scores_for(a: float, b: float) -> np.ndarray:
        t = y.copy()
        t[group, 0] = a
        t[group, 1] = b
        model, _ = ova.train(x, sp.csr_matrix(t), cfg(negatives=mode, epochs=8), seed=0, progress=False)
        s = model.scores(x[group])
        return s[:, 0] - s[:, 1]

    assert np.all(scores_for(0.9, 0.1) > 0)
    assert np.all(scores_for(0.1, 0.9) < 0)  # swapped values, swapped order: not a column-order bias


@pytest.mark.parametrize("mode", ["full", "shortlist"])
def test_same_seed_same_scores(problem, trained, mode):
    xtr, ytr, xte, _ = problem
    again, _ = ova.train_predict(xtr, ytr, xte, cfg(negatives=mode), seed=3, progress=False)
    first = trained[mode][0]
    np.testing.assert_array_equal(again.indices, first.indices)
    np.testing.assert_array_equal(again.data, first.data)
    other, _ = ova.train_predict(xtr, ytr, xte, cfg(negatives=mode), seed=4, progress=False)
    assert not np.array_equal(other.data, first.data)  # the seed is actually used


class CountingLoss:
    """A throwaway plugin: answers lever_loss first, counting calls; ``flip`` trains on 1 - targets."""

    def __init__(self, flip: bool):
        self.flip = flip
        self.calls = 0
        self.shapes: list[tuple] = []
        self.configs: list = []

    from lever_plugins.hookspecs import hookimpl

    @hookimpl
    def lever_loss(self, logits, targets, config):
        self.calls += 1
        self.shapes.append((tuple(logits.shape), tuple(targets.shape)))
        self.configs.append(config)
        t = 1.0 - targets if self.flip else targets
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, t)


@pytest.fixture
def register_loss():
    from lever_plugins.plugins import get_plugin_manager

    pm = get_plugin_manager()
    added = []

    def add(plugin):
        pm.register(plugin, name=f"test-loss-{id(plugin)}")
        added.append(plugin)
        return plugin

    yield add
    for p in added:
        pm.unregister(p)


@pytest.mark.parametrize("mode", ["full", "shortlist"])
def test_lever_loss_hook_is_called_and_can_override(problem, trained, register_loss, mode):
    xtr, ytr, xte, yte = problem
    c = cfg(negatives=mode, epochs=2)
    plain = register_loss(CountingLoss(flip=False))
    adapter = BuiltinAdapter(progress=False)
    adapter.train_predict(arm_for(xtr, ytr, xte, 3), c, loss_fn(c))
    assert plain.calls == 2 * int(np.ceil(2000 / 128))  # once per batch
    assert all(a == b and a[0] <= 128 for a, b in plain.shapes)
    assert all(conf is c for conf in plain.configs)
    if mode == "full":
        assert all(a[1] == 200 for a, _ in plain.shapes)

    flipped = register_loss(CountingLoss(flip=True))  # registered last: pluggy calls it first
    c = cfg(negatives=mode)
    s, _ = adapter.train_predict(arm_for(xtr, ytr, xte, 3), c, loss_fn(c))
    assert flipped.calls > 0 and plain.calls == 2 * int(np.ceil(2000 / 128))  # firstresult: plain not reached
    assert p_at_1(s, yte) < p_at_1(trained[mode][0], yte) - 0.3  # trained against its targets


def test_ova_takes_its_loss_from_the_caller(problem, register_loss):
    """ova never reaches for the plugin manager: the loss it is given, else plain mean BCE (the built-in
    lever_loss answer), so the same call gives the same scores whatever plugins are registered."""
    xtr, ytr, xte, _ = problem
    before, _ = ova.train_predict(xtr, ytr, xte, cfg(epochs=1), seed=0, progress=False)
    hook = register_loss(CountingLoss(flip=True))
    calls = []

    def loss(logits, targets):
        calls.append(1)
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)

    explicit, _ = ova.train_predict(xtr, ytr, xte, cfg(epochs=1), seed=0, loss_fn=loss, progress=False)
    default, _ = ova.train_predict(xtr, ytr, xte, cfg(epochs=1), seed=0, progress=False)
    assert len(calls) == int(np.ceil(2000 / 128)) and hook.calls == 0
    np.testing.assert_array_equal(explicit.toarray(), before.toarray())
    np.testing.assert_array_equal(default.toarray(), before.toarray())


def test_early_stopping_keeps_the_best_epoch(problem):
    """A loss that scrambles the targets after two epochs: validation P@1 falls, training stops."""
    xtr, ytr, xte, yte = problem
    per_epoch = int(np.ceil(2000 / 128))
    n = [0]

    def loss(logits, targets):
        n[0] += 1
        t = targets if n[0] <= 2 * per_epoch else torch.roll(targets, 1, dims=1)
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, t)

    c = cfg(negatives="full", epochs=20, early_stopping=2)
    model, stats = ova.train(xtr, ytr, c, seed=0, loss_fn=loss, progress=False, x_valid=xte, y_valid=yte)
    best = stats["best_epoch"]
    assert best == int(np.argmax(stats["valid_p1"])) + 1 <= 3  # scrambling starts in epoch 3
    assert stats["epochs_run"] == best + 2 < 20  # stopped after 2 epochs without improvement
    assert stats["valid_p1"][-1] < max(stats["valid_p1"]) - 0.05
    # the returned weights are the best epoch's, not the last (scrambled) ones
    assert p_at_1(model.topk(xte, 1), yte) == pytest.approx(max(stats["valid_p1"]))


def test_ivf_mining_path(problem, monkeypatch):
    xtr, ytr, xte, yte = problem
    monkeypatch.setattr(ova, "IVF_MIN_LABELS", 50)
    s, stats = ova.train_predict(xtr, ytr, xte, cfg(negatives="shortlist"), seed=0, progress=False)
    assert stats["mining_index"].startswith("ivf")
    assert p_at_1(s, yte) > 0.9


def test_hidden_layer_and_save_load(problem, tmp_path):
    xtr, ytr, xte, yte = problem
    for mode in ("full", "shortlist"):
        model, stats = ova.train(xtr, ytr, cfg(negatives=mode), seed=0, progress=False, hidden=64)
        assert stats["hidden"] == 64 and np.abs(model.hidden["w2"]).sum() > 0  # the block did train
        assert p_at_1(model.topk(xte, 5), yte) > 0.9
        model.save(tmp_path / f"{mode}.npz")
        back = ova.OvAModel.load(tmp_path / f"{mode}.npz")
        np.testing.assert_array_equal(back.scores(xte), model.scores(xte))
        assert back.mode == mode


@pytest.mark.parametrize("mode", ["full", "shortlist"])
@pytest.mark.parametrize("hidden_lr", [None, 3e-3])
def test_hidden_layer_steps_at_its_own_rate(problem, mode, hidden_lr):
    # Adam's first step moves each weight with a non-zero gradient by lr·g/(|g| + eps) ≈ lr whatever g, and
    # only the residual's W2 has a gradient at the start (W2 = 0 blocks W1 and b1): after one full batch its
    # largest entry is the learning rate it was given, not the head's 1e-2
    xtr, ytr, _, _ = problem
    c = cfg(negatives=mode, epochs=1, batch_size=len(xtr), lr=1e-2)
    if hidden_lr is not None:
        c = dataclasses.replace(c, hidden_lr=hidden_lr)
    model, stats = ova.train(xtr, ytr, c, seed=0, progress=False, hidden=16)
    want = 1e-5 if hidden_lr is None else hidden_lr  # the default, 1,000× below the head's lr
    assert stats["hidden_lr"] == want
    np.testing.assert_allclose(np.abs(model.hidden["w2"]).max(), want, rtol=1e-3)
    assert np.abs(model.hidden["w1"]).max() > 0 and not model.hidden["b1"].any()


def test_hidden_lr_counts_in_the_cache_key_only_with_a_hidden_layer():
    from lever_plugins.config import trainer_key

    assert "hidden_lr" not in trainer_key(TrainerConfig())
    assert trainer_key(TrainerConfig(hidden=8))["hidden_lr"] == 1e-5
    assert trainer_key(TrainerConfig(hidden=8)) != trainer_key(TrainerConfig(hidden=8, hidden_lr=1e-3))


def test_bad_inputs_are_one_line_errors(problem):
    xtr, ytr, xte, _ = problem
    with pytest.raises(DataError, match="target rows"):
        ova.train_predict(xtr[:10], ytr, xte, cfg(), seed=0, progress=False)
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        ova.train_predict(xtr, ytr * 2.0, xte, cfg(), seed=0, progress=False)
    with pytest.raises(DataError, match="as wide"):
        ova.train_predict(xtr, ytr, xte[:, :5], cfg(), seed=0, progress=False)
    with pytest.raises(LeverError, match="negatives"):
        ova.train_predict(xtr, ytr, xte, dataclasses.replace(cfg(), negatives="half"), seed=0, progress=False)


def test_builtin_adapter(problem):
    from lever_plugins import plugins
    from lever_plugins.trainer.adapter import BuiltinAdapter

    adapter = plugins.adapters()["builtin"].factory(progress=False)
    assert isinstance(adapter, BuiltinAdapter) and isinstance(adapter, Adapter)
    assert adapter.name == "builtin" and adapter.upstream == ""
    assert adapter.needs_features and adapter.takes_loss_hook and adapter.supports_finetune and adapter.takes_sparse
    adapter.preflight(cfg())  # the sgd solver: nothing to refuse
    # What the adapter returns against an independent solver: with the convex L-BFGS head, its test scores
    # must be the logits of per-label L2 logistic regressions fitted by scikit-learn (loss from the
    # lever_loss hook, the config's l2 and top_k honoured), not merely what ova.train_predict returns.
    from test_lbfgs import cfg as lbfgs_cfg
    from test_lbfgs import problem as lbfgs_problem
    from test_lbfgs import sklearn_oracle

    x, xs, y = lbfgs_problem(n=200, L=5, seed=3, soft=True)
    x_te, xs_te, _ = lbfgs_problem(n=30, L=5, seed=4)
    c = lbfgs_cfg(top_k=3)
    scores, stats = adapter.train_predict(arm_for(x, y, x_te, 2, x_sparse=(xs, xs_te)), c, loss_fn(c))
    coef, icpt = sklearn_oracle(x, xs, y, l2=1e-2)
    logits = np.hstack([x_te, xs_te.toarray()]) @ coef.T + icpt
    top = np.argsort(-logits, axis=1)[:, :3]
    got = scores.toarray()
    assert scores.shape == (30, 5) and (np.diff(scores.indptr) == 3).all()
    assert stats["solver"] == "lbfgs"
    np.testing.assert_array_equal(np.sort(scores.indices.reshape(30, 3), axis=1), np.sort(top, axis=1))
    np.testing.assert_allclose(got[np.arange(30)[:, None], top], logits[np.arange(30)[:, None], top], atol=5e-3)


def test_package_import_is_light():
    code = "import sys, lever_plugins.trainer, lever_plugins.trainer.adapter; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_batch_order_depends_on_seed_and_rows_only(problem):
    """Full and shortlist runs of one size see the same batches in the same order (row sums as a witness)."""
    xtr, ytr, _, _ = problem
    ytr = ytr.multiply(np.random.default_rng(0).uniform(0.1, 1.0, ytr.shape[0])[:, None]).tocsr()  # rows differ
    seen: dict[str, list] = {"full": [], "shortlist": []}

    def record(mode):
        def loss(logits, targets):
            seen[mode].append(np.sort(targets.sum(1).numpy()))
            return torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)

        return loss

    for mode in seen:
        ova.train(xtr, ytr, cfg(negatives=mode, epochs=2), seed=7, loss_fn=record(mode), progress=False)
    assert len(seen["full"]) == len(seen["shortlist"]) == 2 * int(np.ceil(2000 / 128))
    for a, b in zip(seen["full"], seen["shortlist"], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    assert not np.allclose(seen["full"][0], seen["full"][16])  # epochs are reshuffled


@pytest.mark.parametrize("mode", ["full", "shortlist"])
def test_weight_decay_shrinks_the_weights(problem, mode):
    xtr, ytr, _, _ = problem
    norms = {}
    for wd in (0.0, 5.0):
        model, _ = ova.train(xtr, ytr, cfg(negatives=mode, epochs=2, weight_decay=wd), seed=0, progress=False)
        norms[wd] = np.linalg.norm(model.weight)
    assert norms[5.0] < 0.8 * norms[0.0], norms


# ---------------------------------------------------------------- sparse head and kNN fusion


def make_lexical_problem(n: int = 1200, L: int = 20, V: int = 300, seed: int = 0):
    """Labels are decided by sparse 'words' only; the dense features carry no information (one vector)."""
    rng = np.random.default_rng(seed)
    word_of = rng.choice(V, L, replace=False)  # one signature word per label
    lab = rng.integers(0, L, n)
    y = sp.csr_matrix((np.ones(n, np.float32), (np.arange(n), lab)), shape=(n, L))
    noise_words = rng.integers(0, V, (n, 1))
    rows = np.repeat(np.arange(n), 2)
    cols = np.column_stack([word_of[lab], noise_words]).ravel()
    xs = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n, V))
    xs.sum_duplicates()
    xs = sp.csr_matrix(xs.multiply(1.0 / np.sqrt(xs.multiply(xs).sum(axis=1))))
    x = np.tile(np.eye(1, 16, dtype=np.float32), (n, 1))
    return x, xs.astype(np.float32), y


def test_sparse_head_learns_what_dense_features_cannot():
    x, xs, y = make_lexical_problem()
    tr, te = slice(0, 1000), slice(1000, None)
    c = cfg(negatives="full", epochs=8, lr=3e-2)
    dense_only, _ = ova.train_predict(x[tr], y[tr], x[te], c, seed=1, progress=False)
    hybrid, stats = ova.train_predict(x[tr], y[tr], x[te], c, seed=1, progress=False, x_sparse=(xs[tr], xs[te]))
    assert stats["sparse_dim"] == xs.shape[1]
    assert p_at_1(dense_only, y[te]) < 0.2 < 0.8 < p_at_1(hybrid, y[te])


def test_sparse_head_scores_match_topk_and_survive_save(tmp_path):
    x, xs, y = make_lexical_problem(n=300, L=12, V=80)
    model, _ = ova.train(x, y, cfg(negatives="full", epochs=2), seed=0, progress=False, x_sparse=xs)
    dense = model.scores(x[:50], xs[:50])
    np.testing.assert_allclose(
        dense, x[:50] @ model.weight.T + model.bias + xs[:50].toarray() @ model.sparse_weight, rtol=1e-5, atol=1e-6
    )
    top = model.topk(x[:50], 3, x_sparse=xs[:50])
    expect = np.sort(dense, axis=1)[:, ::-1][:, :3]
    got = np.sort(top.data.reshape(50, 3), axis=1)[:, ::-1]
    np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-6)
    model.save(tmp_path / "m.npz")
    again = ova.OvAModel.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(again.sparse_weight, model.sparse_weight)
    with pytest.raises(DataError, match="sparse head"):
        model.topk(x[:5], 3)


def test_sparse_head_refuses_shortlist():
    x, xs, y = make_lexical_problem(n=100, L=8, V=40)
    with pytest.raises(LeverError, match="negatives = 'full'"):
        ova.train(x, y, cfg(negatives="shortlist"), seed=0, progress=False, x_sparse=xs)


def test_knn_prior_equals_brute_force():
    rng = np.random.default_rng(4)
    xtr = rng.standard_normal((60, 8)).astype(np.float32)
    xtr /= np.linalg.norm(xtr, axis=1, keepdims=True)
    xte = rng.standard_normal((15, 8)).astype(np.float32)
    xte /= np.linalg.norm(xte, axis=1, keepdims=True)
    t = sp.random(60, 10, density=0.2, random_state=1, format="csr", dtype=np.float32)
    got = ova.knn_prior(xtr, t, xte, k=5).toarray()
    sims = xte @ xtr.T
    expect = np.zeros((15, 10), np.float32)
    for i in range(15):
        nb = np.argsort(-sims[i], kind="stable")[:5]
        w = np.maximum(sims[i, nb], 0)
        expect[i] = (w[:, None] * t[nb].toarray()).sum(0) / max(w.sum(), 1e-12)
    np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-6)


def test_knn_fusion_ranks_by_fused_score():
    x, y = make_problem(n=600, d=16, L=30, seed=2)
    c = cfg(negatives="full", epochs=2, top_k=4, knn_alpha=0.4, knn_k=7)
    model, _ = ova.train(x[:500], y[:500], c, seed=0, progress=False)
    fused, _ = ova.train_predict(x[:500], y[:500], x[500:], c, seed=0, progress=False)
    prior = ova.knn_prior(x[:500], y[:500], x[500:], 7).toarray()
    full = 0.6 / (1 + np.exp(-model.scores(x[500:]))) + 0.4 * prior
    got = np.sort(fused.data.reshape(-1, 4), axis=1)[:, ::-1]
    np.testing.assert_allclose(got, np.sort(full, axis=1)[:, ::-1][:, :4], rtol=1e-5, atol=1e-6)


def test_hard_rank_cut_is_the_largest_prefix_within_the_cap():
    rng = np.random.default_rng(5)
    for _ in range(200):
        B, k, L = rng.integers(1, 9), rng.integers(1, 12), rng.integers(5, 60)
        hard = rng.integers(-1, L, (B, k))  # -1: a slot the index could not fill
        kept = rng.integers(0, L, rng.integers(0, 10))
        cap = int(rng.integers(1, L + 5))

        # brute force over every prefix, independent of the sort-and-count in the trainer
        unions = [len(set(kept.tolist()) | {int(v) for v in hard[:, :j].ravel() if v >= 0}) for j in range(k + 1)]
        fits = [j for j in range(k + 1) if unions[j] <= cap]
        assert ova._hard_ranks_within(hard, kept, cap) == (max(fits) if fits else 0)


def test_shortlist_cap_bounds_every_batch_and_keeps_the_positives(problem):
    xtr, ytr, xte, yte = problem
    capped, stats = ova.train_predict(xtr, ytr, xte, cfg(negatives="shortlist", shortlist_size=40,
                                                         shortlist_max=60), seed=3, progress=False)  # fmt: skip
    _, free = ova.train_predict(xtr, ytr, xte, cfg(negatives="shortlist", shortlist_size=40), seed=3,
                                progress=False)  # fmt: skip
    # batches of 128 rows hold ~250 positives over 200 labels, so positives alone exceed 60: the cap can
    # only drop hard negatives, and the union stays at least the positives'
    assert np.mean(free["mean_candidates"]) > np.mean(stats["mean_candidates"]) >= 0.9 * np.mean(
        [len(np.unique(ytr[s : s + 128].indices)) for s in range(0, len(xtr), 128)])
    assert p_at_1(capped, yte) > 0.85


def test_shortlist_cap_above_the_union_changes_nothing(problem):
    xtr, ytr, xte, _ = problem
    a, sa = ova.train_predict(xtr, ytr, xte, cfg(negatives="shortlist", epochs=2), seed=4, progress=False)
    b, sb = ova.train_predict(xtr, ytr, xte, cfg(negatives="shortlist", epochs=2, shortlist_max=10**6), seed=4,
                              progress=False)  # fmt: skip
    assert sa["mean_candidates"] == sb["mean_candidates"]
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_allclose(a.data, b.data, rtol=1e-6)


def test_shortlist_cap_limits_mined_columns(problem):
    xtr, ytr, xte, _ = problem
    y1 = sp.csr_matrix((np.ones(len(xtr), np.float32), (np.arange(len(xtr)), ytr.indices[ytr.indptr[:-1]])),
                       shape=ytr.shape)  # one positive per row: few enough that the cap binds on negatives
    _, free = ova.train_predict(xtr, y1, xte, cfg(negatives="shortlist", epochs=2, shortlist_size=50), seed=4,
                                progress=False)  # fmt: skip
    _, capped = ova.train_predict(xtr, y1, xte, cfg(negatives="shortlist", epochs=2, shortlist_size=50,
                                                    shortlist_max=130), seed=4, progress=False)  # fmt: skip
    assert min(free["mean_candidates"]) > 140  # positives and random negatives alone: ~115
    assert max(capped["mean_candidates"]) <= 130

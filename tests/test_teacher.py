"""Siamese teacher: losses against numpy oracles, balanced clustering, batching, training, resume."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lever_plugins.config import TeacherConfig
from lever_plugins.errors import ConfigError, DataError
from lever_plugins.teacher.clustering import balanced_clusters
from lever_plugins.teacher.encoder import Encoder
from lever_plugins.teacher.siamese import (
    CHECKPOINT,
    MODEL_DIR,
    SiameseTeacher,
    batch_targets,
    logistic_ohnm_loss,
    sample_positives,
    triplet_ohnm_loss,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------------------ oracles


def np_triplet(S: np.ndarray, Y: np.ndarray, margin: float, k: int) -> float:
    B, n = S.shape
    k = min(k, n)
    total = 0.0
    for i in range(B):
        negs = sorted(S[i][~Y[i]], reverse=True)[:k]
        total += sum(max(0.0, s - S[i, i] + margin) for s in negs)
    return total / (B * k)


def np_logistic(S: np.ndarray, Y: np.ndarray, k: int, scale: float) -> float:
    def bce(logit, target):  # -log sigmoid(logit) or -log(1 - sigmoid(logit))
        return np.log1p(np.exp(-logit)) if target else np.log1p(np.exp(logit))

    terms = []
    for i in range(S.shape[0]):
        terms.append(bce(scale * S[i, i], 1))
        for s in sorted(S[i][~Y[i]], reverse=True)[: min(k, S.shape[1])]:
            terms.append(bce(scale * s, 0))
    return float(np.mean(terms))


def random_batch(rng, B, density):
    S = rng.uniform(-1, 1, (B, B))
    Y = rng.random((B, B)) < density
    np.fill_diagonal(Y, True)
    return S, Y


@pytest.mark.parametrize("B,density,k,margin", [(12, 0.1, 4, 0.3), (7, 0.5, 10, 0.2), (20, 0.9, 3, 0.5)])
def test_triplet_loss_matches_bruteforce(B, density, k, margin):
    rng = np.random.default_rng(B)
    for _ in range(5):
        S, Y = random_batch(rng, B, density)
        got = triplet_ohnm_loss(torch.tensor(S), torch.tensor(Y), margin, k).item()
        assert got == pytest.approx(np_triplet(S, Y, margin, k), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("B,density,k", [(12, 0.1, 4), (7, 0.5, 10), (20, 0.9, 3)])
def test_logistic_loss_matches_bruteforce(B, density, k):
    rng = np.random.default_rng(B + 1)
    for _ in range(5):
        S, Y = random_batch(rng, B, density)
        got = logistic_ohnm_loss(torch.tensor(S), torch.tensor(Y), k, scale=7.0).item()
        assert got == pytest.approx(np_logistic(S, Y, k, 7.0), rel=1e-9)


def test_losses_have_no_nan_gradients_when_a_row_has_no_negatives():
    S = torch.tensor(np.random.default_rng(0).uniform(-1, 1, (4, 4)), requires_grad=True)
    Y = torch.ones(4, 4, dtype=torch.bool)
    Y[0, 1] = False
    for loss in (triplet_ohnm_loss(S, Y, 0.3, 3), logistic_ohnm_loss(S, Y, 3)):
        (g,) = torch.autograd.grad(loss, S)
        assert torch.isfinite(g).all()


# --------------------------------------------------------------------------------------- clustering


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 400), size=st.integers(1, 64), d=st.integers(2, 12), seed=st.integers(0, 2**32 - 1))
def test_balanced_clusters_sizes_and_partition(n, size, d, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    clusters = balanced_clusters(x, size, np.random.default_rng(seed + 1))
    flat = np.concatenate(clusters)
    assert np.array_equal(np.sort(flat), np.arange(n))  # every label exactly once
    sizes = np.array([len(c) for c in clusters])
    if n <= size:
        assert len(clusters) == 1
    else:
        # Exact halving gives floor/ceil(n / 2**levels): within [size/2, size] for even sizes (NGAME uses
        # powers of two), [floor(size/2), size] for odd ones.
        assert sizes.max() <= size and sizes.min() >= size // 2
        assert sizes.max() - sizes.min() <= 1
        if size >= 2:  # with size 1 a 3-point cluster splits into 2 + 1, leaving an empty leaf
            assert len(clusters) & (len(clusters) - 1) == 0  # a power of two


@pytest.mark.parametrize("seed", range(5))
def test_balanced_clusters_group_similar_points(seed):
    rng = np.random.default_rng(seed)
    centres = np.linalg.qr(rng.normal(size=(16, 4)))[0].T  # 4 orthonormal directions
    blob = np.repeat(np.arange(4), 32)
    x = centres[blob] + 0.02 * rng.normal(size=(128, 16))
    perm = rng.permutation(128)
    clusters = balanced_clusters(x[perm], 32, np.random.default_rng(seed))
    assert len(clusters) == 4
    for c in clusters:
        assert len(set(blob[perm[c]])) == 1


# ------------------------------------------------------------------------------------------ batches


def test_sampled_documents_are_uniform_positives():
    y = sp.csr_matrix(np.array([[1, 0], [1, 1], [0, 1], [1, 0], [1, 0]], dtype=np.float32))
    ycsc = y.tocsc()
    rng = np.random.default_rng(0)
    draws = np.concatenate([sample_positives(ycsc, np.array([0, 1]), rng) for _ in range(4000)])
    lbl0, lbl1 = draws[0::2], draws[1::2]
    assert set(lbl0) == {0, 1, 3, 4} and set(lbl1) == {1, 2}
    counts = np.bincount(lbl0, minlength=5)[[0, 1, 3, 4]]
    assert counts.min() > 850 and counts.max() < 1150  # 1000 expected each, sd ≈ 27


def test_batch_targets_match_dense_lookup():
    rng = np.random.default_rng(3)
    dense = (rng.random((30, 12)) < 0.3).astype(np.float32)
    dense[np.arange(12), np.arange(12)] = 1
    y = sp.csr_matrix(dense)
    lbls = rng.permutation(12)[:8]
    docs = sample_positives(y.tocsc(), lbls, rng)
    Y = batch_targets(y, docs, lbls)
    expect = np.array([[dense[docs[j], lbls[i]] > 0 for j in range(8)] for i in range(8)])
    assert np.array_equal(Y, expect)
    assert Y.diagonal().all()


# ------------------------------------------------------------------------------------------ training

WORDS = ("apple river music garden window doctor engine forest camera castle dragon planet violin rocket "
         "island bridge pencil tiger coffee winter summer silver market school theatre soccer pizza guitar "
         "ocean desert circus farmer hammer kitten ladder mirror needle pepper rabbit saddle").split()
FILLER = "the a of and with for in on".split()


def make_problem(n_docs: int = 80, n_labels: int = 40, seed: int = 0):
    """Documents mention their labels' words: learnable by a tiny encoder."""
    rng = np.random.default_rng(seed)
    rows, cols, texts = [], [], []
    for i in range(n_docs):
        labs = {i % n_labels, *rng.choice(n_labels, rng.integers(0, 3), replace=False).tolist()}
        rows += [i] * len(labs)
        cols += sorted(labs)
        words = [WORDS[lab] for lab in labs] + list(rng.choice(FILLER, 3))
        texts.append(" ".join(rng.permutation(words)))
    y = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n_docs, n_labels))
    return texts, [f"{w}" for w in WORDS[:n_labels]], y




@pytest.fixture(scope="module")
def problem():
    return make_problem()


def tiny_config(model: Path, **kw) -> TeacherConfig:
    base = TeacherConfig(model=str(model), train=True, max_len=16, epochs=2, batch_size=8, lr=2e-3, warmup_steps=2,
                         num_negatives=3, cluster_start=1, cluster_update=1, cluster_size=4,
                         cluster_growth=[1], amp=False, device="cpu")
    return replace(base, **kw)


def weights(t: SiameseTeacher) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in t.encoder.model.state_dict().items()}


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def no_tmp(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if ".tmp" in p.name or ".old" in p.name]


@pytest.fixture(scope="module")
def reference_run(tiny_model, problem, tmp_path_factory):
    """An uninterrupted 2-epoch run (epoch 2 uses clustered batches with a grown cluster size)."""
    wd = tmp_path_factory.mktemp("ref")
    t = SiameseTeacher(tiny_config(tiny_model), seed=5, progress=False)
    stats = t.fit(*problem, wd)
    return t, stats, weights(t), wd


def test_fit_writes_model_checkpoint_and_stats(reference_run, problem, tiny_model):
    t, stats, w, wd = reference_run
    assert stats["epochs"] == 2 and stats["epochs_run"] == 2 and stats["complete"]
    assert stats["steps"] == 2 * 5 and stats["docs_per_s"] > 0 and np.isfinite(stats["loss"])
    assert [h["cluster_size"] for h in stats["history"]] == [None, 8]
    assert (wd / CHECKPOINT).is_file() and (wd / "teacher_stats.json").is_file()
    assert no_tmp(wd)
    # The saved model is a plain HF folder that reproduces the teacher's embeddings.
    saved = Encoder(str(wd / MODEL_DIR), 16, device="cpu").encode(problem[1], progress=False)
    np.testing.assert_allclose(saved, t.embed(problem[1]), atol=1e-6)
    # Training changed the weights.
    init = Encoder(str(tiny_model), 16, device="cpu").model.state_dict()
    assert not same_weights({k: v for k, v in init.items()}, w)


def test_fit_is_deterministic(reference_run, tiny_model, problem, tmp_path):
    _, stats, w, _ = reference_run
    again = SiameseTeacher(tiny_config(tiny_model), seed=5, progress=False)
    stats2 = again.fit(*problem, tmp_path / "a")
    assert same_weights(w, weights(again))
    assert stats2["history"][-1]["loss"] == stats["history"][-1]["loss"]
    other = SiameseTeacher(tiny_config(tiny_model), seed=6, progress=False)
    other.fit(*problem, tmp_path / "b")
    assert not same_weights(w, weights(other))


def test_resume_after_stop_equals_uninterrupted_run(reference_run, tiny_model, problem, tmp_path):
    _, _, w, _ = reference_run
    first = SiameseTeacher(tiny_config(tiny_model), seed=5, progress=False)
    s1 = first.fit(*problem, tmp_path, stop_after_epochs=1)
    assert s1["epochs"] == 1 and not s1["complete"] and not (tmp_path / MODEL_DIR).exists()
    second = SiameseTeacher(tiny_config(tiny_model), seed=5, progress=False)
    s2 = second.fit(*problem, tmp_path)
    assert s2["resumed_from"] == 1 and s2["epochs_run"] == 1 and s2["epochs"] == 2
    assert same_weights(w, weights(second))
    assert (tmp_path / MODEL_DIR / "config.json").is_file() and no_tmp(tmp_path)
    # Already complete: a third call trains nothing and keeps the weights.
    third = SiameseTeacher(tiny_config(tiny_model), seed=5, progress=False)
    s3 = third.fit(*problem, tmp_path)
    assert s3["epochs_run"] == 0 and same_weights(w, weights(third))


def test_resume_after_crash_mid_epoch(reference_run, tiny_model, problem, tmp_path, monkeypatch):
    _, _, w, _ = reference_run
    calls = {"n": 0}
    orig = SiameseTeacher._loss

    def crashing(self, scores, pos):
        calls["n"] += 1
        if calls["n"] == 7:  # the second batch of epoch 2 (5 batches per epoch)
            raise KeyboardInterrupt
        return orig(self, scores, pos)

    monkeypatch.setattr(SiameseTeacher, "_loss", crashing)
    with pytest.raises(KeyboardInterrupt):
        SiameseTeacher(tiny_config(tiny_model), seed=5, progress=False).fit(*problem, tmp_path)
    monkeypatch.setattr(SiameseTeacher, "_loss", orig)
    assert torch.load(tmp_path / CHECKPOINT, weights_only=True)["epoch"] == 1
    assert no_tmp(tmp_path)
    resumed = SiameseTeacher(tiny_config(tiny_model), seed=5, progress=False)
    assert resumed.fit(*problem, tmp_path)["resumed_from"] == 1
    assert same_weights(w, weights(resumed))


def test_corrupted_checkpoint_is_not_resumed(reference_run, tiny_model, problem, tmp_path):
    """A flipped byte inside a checkpoint's tensor data still loads with torch.load; the digest saved with
    the checkpoint catches it, so training starts over (and still ends with the reference weights)."""
    _, _, w, _ = reference_run
    SiameseTeacher(tiny_config(tiny_model), seed=5, progress=False).fit(*problem, tmp_path, stop_after_epochs=1)
    path = tmp_path / CHECKPOINT
    raw = bytearray(path.read_bytes())
    at = raw.index(b"data/0")  # the first tensor's storage record in torch's zip archive
    at = raw.index(b"\x00" * 2, at)  # past its name, into the stored bytes
    raw[at + 64] ^= 0x10
    path.write_bytes(bytes(raw))
    loaded = torch.load(path, weights_only=True)  # torch does not notice
    assert loaded["epoch"] == 1
    resumed = SiameseTeacher(tiny_config(tiny_model), seed=5, progress=False)
    stats = resumed.fit(*problem, tmp_path)
    assert stats["resumed_from"] is None and stats["epochs_run"] == 2
    assert same_weights(w, weights(resumed))


def test_more_epochs_extend_a_finished_run(tiny_model, problem, tmp_path):
    one = SiameseTeacher(tiny_config(tiny_model, epochs=1), seed=5, progress=False)
    h1 = one.fit(*problem, tmp_path)["history"]
    two = SiameseTeacher(tiny_config(tiny_model, epochs=2), seed=5, progress=False)
    s = two.fit(*problem, tmp_path)
    assert s["resumed_from"] == 1 and s["epochs_run"] == 1 and s["history"][0] == h1[0]
    # Other settings (here the loss) do not resume from that checkpoint: training starts over.
    fresh = SiameseTeacher(tiny_config(tiny_model, epochs=1, loss="logistic"), seed=5, progress=False)
    s = fresh.fit(*problem, tmp_path)
    assert s["resumed_from"] is None and s["epochs_run"] == 1 and np.isfinite(s["loss"])


def _margin(t: SiameseTeacher, problem) -> float:
    """Mean cosine of positive (doc, label) pairs minus mean cosine of the negative pairs."""
    docs, lbls, y = problem
    s = t.embed(docs) @ t.embed(lbls).T
    mask = y.toarray() > 0
    return float(s[mask].mean() - s[~mask].mean())


def _precision_at_1(t: SiameseTeacher, problem) -> float:
    docs, lbls, y = problem
    top = (t.embed(docs) @ t.embed(lbls).T).argmax(1)
    return float(np.mean(y.toarray()[np.arange(len(docs)), top] > 0))


# The logistic loss first pulls every cosine of the random encoder down, so it needs more epochs.
@pytest.mark.parametrize("loss,epochs", [("triplet", 6), ("logistic", 12)])
def test_training_learns_a_tiny_problem(tiny_model, problem, tmp_path, loss, epochs):
    t = SiameseTeacher(tiny_config(tiny_model, epochs=epochs, loss=loss, lr=3e-3), seed=1, progress=False)
    margin0, p1_0 = _margin(t, problem), _precision_at_1(t, problem)
    stats = t.fit(*problem, tmp_path)
    losses = [h["loss"] for h in stats["history"]]
    assert losses[-1] < losses[0]
    assert _margin(t, problem) > margin0 + 0.05
    assert _precision_at_1(t, problem) > p1_0 + 0.3


def test_untrained_teacher_is_the_pretrained_encoder(tiny_model, problem, tmp_path):
    t = SiameseTeacher(tiny_config(tiny_model, train=False), progress=False)
    assert t.fit(*problem, tmp_path)["trained"] is False
    assert not (tmp_path / CHECKPOINT).exists()
    ref = Encoder(str(tiny_model), 16, device="cpu").encode(problem[1], progress=False)
    np.testing.assert_allclose(t.embed(problem[1]), ref, atol=1e-6)


def test_fit_accepts_a_dataset(tiny_model, problem, tmp_path):
    from lever_plugins.data.dataset import Dataset

    docs, lbls, y = problem
    ds = Dataset(name="toy", trn_texts=docs, tst_texts=[], lbl_texts=lbls, y_trn=y,
                 y_tst=sp.csr_matrix((0, y.shape[1]), dtype=np.float32))
    stats = SiameseTeacher(tiny_config(tiny_model, epochs=1), progress=False).fit(ds, tmp_path, True)
    assert stats["epochs"] == 1 and (tmp_path / MODEL_DIR).is_dir()


def test_bad_config_and_data_are_one_line_errors(tiny_model, problem, tmp_path):
    with pytest.raises(ConfigError):
        SiameseTeacher(tiny_config(tiny_model, loss="hinge"))
    with pytest.raises(ConfigError):
        SiameseTeacher(tiny_config(tiny_model, batch_size=1))
    docs, lbls, y = problem
    with pytest.raises(DataError) as e:
        SiameseTeacher(tiny_config(tiny_model), progress=False).fit(docs[:-1], lbls, y, tmp_path)
    assert "\n" not in str(e.value)


def test_package_import_is_light():
    import subprocess
    import sys

    code = ("import sys, lever_plugins.teacher as t; assert 'torch' not in sys.modules, 'torch imported'; "
            "assert callable(t.balanced_clusters)")
    subprocess.run([sys.executable, "-c", code], check=True)

"""Recall target of the kNN (exact when affordable, else an index tuned until a query sample reaches the
target), top-k with ties broken by id, and soft labels identical with 1 and 2 threads."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from lever_plugins.config import SoftLabelConfig
from lever_plugins.soft_labels import build_soft_labels
from lever_plugins.soft_labels.calibrate import calibrate, threshold_cosine
from lever_plugins.soft_labels.knn import knn_search
from lever_plugins.topk import topk_by_id


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _clustered(rng: np.random.Generator, n: int, d: int = 24, groups: int = 60) -> np.ndarray:
    centres = _unit(rng.standard_normal((groups, d)))
    return _unit(centres[rng.integers(0, groups, n)] + 0.6 * _unit(rng.standard_normal((n, d))))


def _oracle_topk(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Sort each row by (-value, id) with numpy's lexsort and take k: the definition itself."""
    ids = np.broadcast_to(np.arange(x.shape[1]), x.shape)
    order = np.lexsort((ids, -x), axis=-1)[:, :k]
    return np.take_along_axis(x, order, axis=1), order


def _recall(q, b, k, approx_ids, min_cos):
    """Share of the brute-force (float64) top-k neighbours with cosine >= min_cos that ``approx_ids`` holds."""
    s = q.astype(np.float64) @ b.astype(np.float64).T
    exact = np.argsort(-s, axis=1, kind="stable")[:, :k]
    strong = np.take_along_axis(s, exact, axis=1) >= min_cos
    hit = np.array([[e in set(a) for e in ex] for a, ex in zip(approx_ids, exact, strict=True)])
    return (hit & strong).sum() / strong.sum()


@pytest.mark.parametrize("k", [1, 3, 10])
def test_topk_by_id_equals_sorting_by_value_then_id(k: int):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 4, (200, 15)).astype(np.float32)  # many ties, also across the k-th place
    x[0] = 2.0  # a whole row tied
    v, i = topk_by_id(torch.from_numpy(x), k)
    ref_v, ref_i = _oracle_topk(x, k)
    np.testing.assert_array_equal(i, ref_i)
    np.testing.assert_array_equal(v, ref_v)
    assert list(i[0]) == list(range(k))


@pytest.mark.parametrize("index", ["ivf", "hnsw"])
def test_index_is_tuned_until_the_sample_reaches_the_target(index: str):
    rng = np.random.default_rng(1)
    b = _clustered(rng, 6000)
    q = _clustered(np.random.default_rng(2), 600)
    info: dict = {}
    # start far too low (nprobe 1, efSearch k): the untuned index misses most neighbours
    _, ids = knn_search(q, b, 10, index=index, nprobe=1, ef_search=1, hnsw_m=4, recall=0.95, recall_sample=300,
                        recall_min_score=0.5, info=info)
    assert info["method"] == index and info["reached"] and info["recall"] >= 0.95
    # the stop rule is the lower confidence bound, written out here from the sample's pair count
    lcb = info["recall"] - 1.645 * np.sqrt(info["recall"] * (1 - info["recall"]) / info["sample_pairs"])
    assert info["recall_lower_95"] == pytest.approx(lcb, abs=2e-4) and lcb >= 0.95 - 1e-4
    assert all(r - 1.645 * np.sqrt(r * (1 - r) / info["sample_pairs"]) < 0.95 for _, r in info["steps"][:-1])
    assert info["measured_on"] == "above_threshold" and info["sample_queries"] == 300
    param = "nprobe" if index == "ivf" else "ef_search"
    assert info["steps"][0][1] < 0.95 and info[param] > info["steps"][0][0]  # it had to raise the parameter
    # independent: all 600 queries (300 never seen by the tuning) against float64 brute force
    assert _recall(q, b, 10, ids, 0.5) >= 0.93
    _, untuned = knn_search(q, b, 10, index=index, nprobe=1, ef_search=1, hnsw_m=4)
    assert _recall(q, b, 10, untuned, 0.5) < 0.9


def test_auto_is_exact_when_affordable_else_a_tuned_index():
    rng = np.random.default_rng(3)
    b, q = _clustered(rng, 2000), _clustered(rng, 200)
    info: dict = {}
    s, ids = knn_search(q, b, 8, index="auto", recall=0.95, info=info)
    assert info["method"] == "exact" and info["recall"] == 1.0
    ref_s, ref_i = _oracle_topk((q.astype(np.float64) @ b.astype(np.float64).T).astype(np.float32), 8)
    np.testing.assert_array_equal(ids, ref_i)
    np.testing.assert_allclose(s, ref_s, atol=1e-6)
    info = {}
    knn_search(q, b, 8, index="auto", recall=0.9, exact_max_ops=1.0, info=info)
    assert info["method"] in ("hnsw", "ivf") and info["recall"] >= 0.9


def test_exact_faster_path_equals_faiss_flat():
    rng = np.random.default_rng(4)
    b, q = _clustered(rng, 3000), _clustered(rng, 300)
    s1, i1 = knn_search(q, b, 50)
    s2, i2 = knn_search(q, b, 50, exact_impl="faiss")
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(s1, s2, atol=1e-6)


def test_threshold_cosine_inverts_calibration():
    cos = np.linspace(-0.99, 0.99, 41, dtype=np.float32)
    for method, a, c in (("linear", 1.0, 0.0), ("sigmoid", 3.0, -0.5)):
        t = 0.7
        m = threshold_cosine(t, method, a, c)
        p = calibrate(cos, method, a, c)
        np.testing.assert_array_equal(p >= t - 1e-6, cos >= m - 1e-6)


def _duplicated(rng: np.random.Generator) -> tuple:
    """Labels with duplicate texts (equal embeddings, exact ties at every cut) and documents."""
    lbl = _clustered(rng, 300, d=16, groups=20)
    dup = rng.choice(300, 120, replace=False)
    lbl[dup[60:]] = lbl[dup[:60]]  # 60 labels copy 60 others exactly
    lbl[5:12] = lbl[4]  # a group of 8 equal labels: ties longer than tau_l and k
    doc = _clustered(np.random.default_rng(9), 900, d=16, groups=20)
    doc[100:140] = doc[99]
    y = (rng.random((900, 300)) < 0.004).astype(np.float32)
    import scipy.sparse as sp

    return sp.csr_matrix(y), doc, lbl


@pytest.mark.parametrize("index", ["flat", "hnsw"])
def test_soft_labels_identical_with_one_and_two_threads(index: str):
    import faiss

    y, doc, lbl = _duplicated(np.random.default_rng(5))
    cfg = dataclasses.replace(SoftLabelConfig(), index=index, k=6, tau_l=4, tau_d=8, threshold=0.75, chunk_size=50)
    runs = []
    saved = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            faiss.omp_set_num_threads(threads)
            sl = build_soft_labels(y, doc, lbl, cfg)
            runs.append(sl)
    finally:
        torch.set_num_threads(saved)
        faiss.omp_set_num_threads(saved)
    a, b = runs
    assert a.soft.nnz > 100
    for m1, m2 in ((a.soft, b.soft), (a.y_aug, b.y_aug)):
        np.testing.assert_array_equal(m1.indptr, m2.indptr)
        np.testing.assert_array_equal(m1.indices, m2.indices)
        np.testing.assert_array_equal(m1.data, m2.data)
    if index == "flat":
        # label 4's row: labels 5..11 tie with it (cos 1); the walk takes the lowest ids, 5, 6, 7
        n = y.shape[0]
        assert list(a.soft[n + 4].indices) == [5, 6, 7]
        assert list(a.soft[n + 11].indices) == [4, 5, 6]


def test_builder_reports_the_recall_reached():
    rng = np.random.default_rng(6)
    y, doc, lbl = _duplicated(rng)
    cfg = dataclasses.replace(SoftLabelConfig(), index="hnsw", k=6, tau_l=4, tau_d=8, threshold=0.75,
                              recall=0.97, recall_sample=200)
    st = build_soft_labels(y, doc, lbl, cfg).stats
    assert set(st["knn"]) == {"labels", "docs"}
    for info in st["knn"].values():
        assert info["method"] == "hnsw" and info["target"] == 0.97 and info["recall"] >= 0.97
    st = build_soft_labels(y, doc, lbl, dataclasses.replace(cfg, index="auto")).stats
    assert st["knn"]["labels"]["method"] == "exact" and st["knn"]["docs"]["recall"] == 1.0


def test_trainer_predict_topk_keeps_lowest_ids_among_ties_with_any_thread_count():
    from lever_plugins.trainer.ova import OvAModel

    rng = np.random.default_rng(7)
    w = rng.standard_normal((40, 8)).astype(np.float32)
    w[20:] = 0.0  # 20 labels never trained: equal logits (the bias) for every document
    b = np.zeros(40, np.float32)
    b[:20] = -50.0  # trained labels score below the untrained ones: the top-k is all ties
    x = rng.standard_normal((30, 8)).astype(np.float32)
    model = OvAModel(w, b)
    outs = []
    saved = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            outs.append(model.topk(x, 5))
    finally:
        torch.set_num_threads(saved)
    for out in outs:
        for r in range(30):
            assert list(out[r].indices) == [20, 21, 22, 23, 24]
    np.testing.assert_array_equal(outs[0].toarray(), outs[1].toarray())
    # the oracle on untied rows: sort the dense logits by (-value, id)
    model2 = OvAModel(rng.standard_normal((40, 8)).astype(np.float32), np.zeros(40, np.float32))
    ref_v, ref_i = _oracle_topk(model2.scores(x), 7)
    got = model2.topk(x, 7)
    for r in range(30):
        np.testing.assert_array_equal(np.sort(got[r].indices), np.sort(ref_i[r]))

"""faiss kNN against brute-force numpy: exact search, chunking, HNSW/IVF recall, padding, ties."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from lever_plugins.errors import ConfigError
from lever_plugins.soft_labels.knn import knn_search


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _brute(q: np.ndarray, b: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    s = _unit(q).astype(np.float64) @ _unit(b).astype(np.float64).T
    ids = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, ids, axis=1), ids


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((300, 16)).astype(np.float32), rng.standard_normal((1000, 16)).astype(np.float32)


def test_exact_matches_brute_force(data):
    q, b = data
    scores, ids = knn_search(q, b, k=10)
    ref_s, ref_i = _brute(q, b, 10)
    assert scores.dtype == np.float32 and ids.dtype == np.int64 and scores.shape == (300, 10)
    np.testing.assert_allclose(scores, ref_s, atol=1e-5)
    # ids must agree wherever the neighbouring scores are not (near-)tied
    gaps = np.diff(ref_s, axis=1)
    clear = np.ones_like(ref_i, dtype=bool)
    clear[:, 1:] &= -gaps > 1e-5
    clear[:, :-1] &= -gaps > 1e-5
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(ids[clear], ref_i[clear])


def test_unnormalised_inputs_give_cosine(data):
    q, b = data
    s1, i1 = knn_search(q, b, k=5)
    s2, i2 = knn_search(q * 7.5, b * np.arange(1, 1001, dtype=np.float32)[:, None], k=5)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(s1, s2, atol=1e-5)
    assert np.all(s1 <= 1 + 1e-5)


def test_chunked_equals_unchunked(data):
    q, b = data
    s_full, i_full = knn_search(q, b, k=10, chunk_size=4096)
    s_chunk, i_chunk = knn_search(q, b, k=10, chunk_size=37)
    np.testing.assert_array_equal(i_chunk, i_full)
    np.testing.assert_allclose(s_chunk, s_full, atol=1e-6)


def test_hnsw_recall_at_10():
    rng = np.random.default_rng(1)
    b = rng.standard_normal((3000, 32)).astype(np.float32)
    q = rng.standard_normal((200, 32)).astype(np.float32)
    _, exact = knn_search(q, b, k=10)
    _, approx = knn_search(q, b, k=10, index="hnsw", hnsw_m=16, ef_search=128)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact, strict=True)])
    assert recall >= 0.95, recall


def test_ivf_with_all_lists_probed_is_exact(data):
    q, b = data
    _, exact = knn_search(q, b, k=10)
    _, ivf = knn_search(q, b, k=10, index="ivf", ivf_nlist=8, nprobe=8)
    np.testing.assert_array_equal(ivf, exact)


def test_k_larger_than_base_is_padded():
    rng = np.random.default_rng(2)
    b = rng.standard_normal((3, 4)).astype(np.float32)
    q = rng.standard_normal((5, 4)).astype(np.float32)
    scores, ids = knn_search(q, b, k=6)
    ref_s, ref_i = _brute(q, b, 3)
    np.testing.assert_array_equal(ids[:, :3], ref_i)
    np.testing.assert_allclose(scores[:, :3], ref_s, atol=1e-5)
    assert np.all(ids[:, 3:] == -1) and np.all(np.isneginf(scores[:, 3:]))


def test_ties_ascending_id_and_smallest_ids_kept():
    rng = np.random.default_rng(3)
    distinct = rng.standard_normal((40, 8)).astype(np.float32)
    b = np.repeat(distinct, 4, axis=0)  # base ids 4j..4j+3 are identical
    q = distinct[:30]  # > 20 queries: faiss's BLAS path
    scores, ids = knn_search(q, b, k=6)
    for row, qi in zip(ids, range(30), strict=True):
        # the query's own 4 copies first in ascending id, then the 2 smallest ids of the next group
        assert list(row[:4]) == [4 * qi + j for j in range(4)]
        assert row[4] % 4 == 0 and row[5] == row[4] + 1
    for nq, chunk in ((3, 4096), (30, 7), (30, 4096)):  # faiss's non-BLAS path too
        _, i2 = knn_search(q[:nq], b, k=6, chunk_size=chunk)
        np.testing.assert_array_equal(i2, ids[:nq])
    # tie group much longer than k: 12 identical base rows, k = 3 keeps ids 0, 1, 2
    b12 = np.repeat(distinct[:1], 12, axis=0)
    _, i3 = knn_search(distinct[:25], np.vstack([b12, distinct[1:]]), k=3)
    np.testing.assert_array_equal(i3[0], [0, 1, 2])


def test_zero_vectors_score_zero():
    b = np.array([[1, 0], [0, 1]], dtype=np.float32)
    q = np.zeros((2, 2), dtype=np.float32)
    scores, ids = knn_search(q, b, k=2)
    assert np.all(scores == 0) and np.all(np.isfinite(scores))
    np.testing.assert_array_equal(ids, [[0, 1], [0, 1]])


def test_bad_arguments():
    b = np.eye(3, dtype=np.float32)
    with pytest.raises(ConfigError):
        knn_search(b, b, k=2, index="annoy")
    with pytest.raises(ConfigError):
        knn_search(b, np.eye(4, dtype=np.float32), k=2)
    with pytest.raises(ConfigError):
        knn_search(b, b, k=0)


def test_cuda_without_gpu_is_a_config_error():
    import faiss

    if faiss.get_num_gpus() > 0:
        pytest.skip("faiss has a GPU here")
    b = np.eye(3, dtype=np.float32)
    with pytest.raises(ConfigError, match="no GPU"):
        knn_search(b, b, k=2, device="cuda")


def test_package_import_does_not_load_faiss():
    code = "import sys, lever_plugins.soft_labels; print('faiss' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]

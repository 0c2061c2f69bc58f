"""Balanced clustering of label embeddings for hard in-batch negatives (NGAME-style).

Recursive balanced spherical 2-means: every cluster of a level is split exactly in half by the difference
of its points' similarities to two centroids, iterated until the objective stops improving. All clusters
of one level are split together with segment-wise numpy operations (no Python loop over clusters).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp

_CHUNK = 65536  # rows per block when gathering centroids: bounds the n×d temporaries


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _rowdot(x: np.ndarray, c: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """out[i] = x[i] · c[idx[i]], in blocks."""
    out = np.empty(len(x), dtype=np.float32)
    for s in range(0, len(x), _CHUNK):
        out[s : s + _CHUNK] = np.einsum("ij,ij->i", x[s : s + _CHUNK], c[idx[s : s + _CHUNK]])
    return out


def num_levels(n: int, cluster_size: int) -> int:
    """Splits needed so that 2**levels clusters have at most ``cluster_size`` points each."""
    if n <= cluster_size:
        return 0
    return math.ceil(math.log2(n / cluster_size))


def balanced_clusters(
    x: np.ndarray,
    cluster_size: int,
    rng: np.random.Generator,
    max_iter: int = 10,
    tol: float = 1e-4,
) -> list[np.ndarray]:
    """Partition the rows of ``x`` into 2**ceil(log2(n/cluster_size)) clusters of equal size (±1).

    Sizes lie in [floor(n/2**levels), ceil(n/2**levels)], hence within [cluster_size/2, cluster_size] for
    an even cluster_size (floor(cluster_size/2) for an odd one) when n > cluster_size. Returns index arrays
    (each row exactly once), similar rows together.
    """
    n = len(x)
    if n == 0:
        return []
    cluster_size = max(int(cluster_size), 1)
    x = _normalize(np.asarray(x, dtype=np.float32))
    seg = np.zeros(n, dtype=np.int64)
    arange = np.arange(n)
    for lev in range(num_levels(n, cluster_size)):
        k = 1 << lev
        counts = np.bincount(seg, minlength=k)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        # Two distinct random seeds per cluster: sort by (cluster, random key), take its first two members.
        perm = np.lexsort((rng.random(n), seg))
        second = starts + np.minimum(1, counts - 1)
        c0, c1 = x[perm[starts]], x[perm[second]]
        half = (counts + 1) // 2  # the first half (rounded up) goes to child 0
        prev = -np.inf
        child = 2 * seg
        for _ in range(max_iter):
            d = _rowdot(x, c0 - c1, seg)
            order = np.lexsort((-d, seg))  # per cluster, most child-0-like first
            rank = np.empty(n, dtype=np.int64)
            rank[order] = arange - starts[seg[order]]
            child = 2 * seg + (rank >= half[seg])
            member = sp.csr_matrix((np.ones(n, dtype=np.float32), (child, arange)), shape=(2 * k, n))
            cent = _normalize(np.asarray(member @ x))
            obj = float(_rowdot(x, cent, child).sum())
            c0, c1 = cent[0::2], cent[1::2]
            if obj - prev <= tol * abs(obj):
                break
            prev = obj
        seg = child
    order = np.argsort(seg, kind="stable")
    bounds = np.cumsum(np.bincount(seg))[:-1]
    return [c for c in np.split(order, bounds) if len(c)]

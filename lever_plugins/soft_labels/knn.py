"""Chunked cosine kNN with faiss: exact (IndexFlatIP), HNSW or IVF, on GPU when faiss has one.

Tie handling (deterministic): every returned row is ordered by score descending, then id ascending.
For the exact "flat" index the result is exactly "sort all base rows by (-score, id), take k": faiss
itself does not say which of several base rows tied at the k-th place it keeps (its BLAS and non-BLAS
paths differ, we checked), so each chunk is searched with k + 1 and the rows whose k-th and (k+1)-th
scores tie (duplicate embeddings, e.g. identical label texts) are searched again with a doubled k until
the tie group is complete, then cut at k. HNSW/IVF are approximate and get no such guarantee at the
k-th place; their within-row order is still (-score, id).

Multi-process (``distributed=True`` under torchrun): every rank builds the index over the whole base and
searches every K-th query chunk (rank r takes chunks r, r + K, ...); after each round the K chunks are
gathered in order, so every rank sees exactly the one-process sequence of chunks. With CUDA each rank
puts its faiss index on its own GPU (``LOCAL_RANK``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from lever_plugins import distributed as dist
from lever_plugins.errors import ConfigError

INDEX_KINDS = ("flat", "hnsw", "ivf")


def _normalized(x: np.ndarray, name: str) -> np.ndarray:
    """float32, C-contiguous, unit rows; zero rows stay zero (they score 0 against everything).

    Skips the copy when the input already qualifies: teacher embeddings come normalised, and a
    second copy of a 10^6 × 768 base would double peak memory.
    """
    if x.ndim != 2:
        raise ConfigError(f"{name} must be a 2-D array, got shape {x.shape}", where="knn_search")
    x32 = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", x32, x32, dtype=np.float64))
    ok = (np.abs(norms - 1.0) <= 1e-6) | (norms == 0.0)
    if ok.all():
        return x32
    scale = np.where(norms > 0, 1.0 / np.where(norms > 0, norms, 1.0), 0.0).astype(np.float32)
    return x32 * scale[:, None]


def _use_gpu(device: str) -> bool:
    import faiss

    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"device {device!r} is not one of auto, cpu, cuda", where="knn_search")
    has_gpu = hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0
    if device == "cuda" and not has_gpu:
        raise ConfigError(
            "device 'cuda' requested but faiss sees no GPU",
            where="knn_search",
            fix="install faiss-gpu on a CUDA machine or use device 'auto'/'cpu'",
        )
    return device != "cpu" and has_gpu


def _build_index(
    base: np.ndarray,
    index: str,
    gpu: bool,
    hnsw_m: int,
    ef_search: int,
    k: int,
    ivf_nlist: int | None,
    nprobe: int,
    ivf_points_per_list: int = 256,
) -> Any:
    import faiss

    n, d = base.shape
    if index == "flat":
        idx: Any = faiss.IndexFlatIP(d)
    elif index == "hnsw":
        # HNSW has no faiss GPU implementation: it always runs on the CPU.
        idx = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        idx.hnsw.efConstruction = max(40, 2 * hnsw_m)
        idx.hnsw.efSearch = max(ef_search, k)  # efSearch < k would silently return fewer neighbours
        idx.add(base)
        return idx
    elif index == "ivf":
        nlist = ivf_nlist or max(1, int(4 * math.sqrt(n)))
        nlist = max(1, min(nlist, n))
        quantizer = faiss.IndexFlatIP(d)
        idx = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        # k-means on at most this many points per list (faiss subsamples; 256 is its default)
        idx.cp.max_points_per_centroid = max(int(ivf_points_per_list), 1)
        idx.train(base)
        idx.nprobe = max(1, min(nprobe, nlist))
    else:
        raise ConfigError(f"index {index!r} is not one of {', '.join(INDEX_KINDS)}", where="soft_labels.index")
    if gpu:
        res = faiss.StandardGpuResources()
        gpu_id = int(os.environ.get("LOCAL_RANK", "0")) % faiss.get_num_gpus()  # one GPU per torchrun rank
        idx = faiss.index_cpu_to_gpu(res, gpu_id, idx)
        idx._lever_res = res  # keep the resources alive as long as the index
        if index == "ivf":
            idx.nprobe = max(1, min(nprobe, nlist))
    idx.add(base)
    return idx


def _sort_rows(scores: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order each row by (score desc, id asc); padding (-1, -inf) goes last."""
    # faiss already returns scores in descending order: only rows holding a tie need sorting.
    # Exact and approximate indices alike: check that, and fall back to a full sort if not.
    if scores.shape[1] < 2 or (
        np.all(scores[:, 1:] < scores[:, :-1]) and np.all(ids[:, -1] >= 0)
    ):  # strictly decreasing, no padding: the order is already (-score, id)
        return scores, ids
    rows = np.flatnonzero(np.any(scores[:, 1:] >= scores[:, :-1], axis=1) | np.any(ids < 0, axis=1))
    scores, ids = scores.copy(), ids.copy()
    # lexsort's last key is primary: -score first, then id; -1 padding has score -inf so sorts last.
    order = np.lexsort((ids[rows], -scores[rows]), axis=-1)
    scores[rows] = np.take_along_axis(scores[rows], order, axis=1)
    ids[rows] = np.take_along_axis(ids[rows], order, axis=1)
    return scores, ids


def iter_knn(
    queries: np.ndarray,
    base: np.ndarray,
    k: int,
    index: str = "flat",
    chunk_size: int = 4096,
    device: str = "auto",
    hnsw_m: int = 32,
    ef_search: int = 128,
    ivf_nlist: int | None = None,
    nprobe: int = 16,
    distributed: bool = False,
    ivf_points_per_list: int = 256,
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Like :func:`knn_search`, but yields ``(start, scores, ids)`` for each chunk of ``chunk_size``
    query rows, so a caller that reduces each chunk (the soft-label builder) never holds all n × k.

    The index is built once, before the first chunk. ``distributed``: under torchrun, every rank must
    call this; the chunks are searched round-robin over the ranks and gathered (module doc).
    """
    if k < 1:
        raise ConfigError(f"k = {k} must be >= 1", where="soft_labels.k")
    if chunk_size < 1:
        raise ConfigError(f"chunk_size = {chunk_size} must be >= 1", where="soft_labels.chunk_size")
    if index not in INDEX_KINDS:
        raise ConfigError(f"index {index!r} is not one of {', '.join(INDEX_KINDS)}", where="soft_labels.index")
    q = _normalized(queries, "queries")
    b = _normalized(base, "base")
    if q.shape[1] != b.shape[1]:
        raise ConfigError(f"queries have dimension {q.shape[1]} but base has {b.shape[1]}", where="knn_search")
    n = q.shape[0]
    kk = min(k, b.shape[0])
    if n == 0:
        return
    idx = None
    if kk > 0:
        idx = _build_index(b, index, _use_gpu(device), hnsw_m, ef_search, kk, ivf_nlist, nprobe, ivf_points_per_list)

    def chunk(s: int, e: int) -> tuple[np.ndarray, np.ndarray]:
        scores = np.full((e - s, k), -np.inf, dtype=np.float32)
        ids = np.full((e - s, k), -1, dtype=np.int64)
        if idx is not None and e > s:
            if index == "flat":
                scores[:, :kk], ids[:, :kk] = _search_exact(idx, q[s:e], kk, b.shape[0])
            else:
                scores[:, :kk], ids[:, :kk] = _sort_rows(*_search(idx, q[s:e], kk))
        return scores, ids

    starts = list(range(0, n, chunk_size))
    if not (distributed and dist.active()):
        for s in starts:
            yield s, *chunk(s, min(n, s + chunk_size))
        return
    world, me = dist.world_size(), dist.rank()
    for r0 in range(0, len(starts), world):
        group = starts[r0 : r0 + world]
        lo = group[me] if me < len(group) else n  # no chunk left for this rank in the last round
        sc, ii = chunk(lo, min(n, lo + chunk_size))
        all_sc, all_ii = dist.gather_rows(sc), dist.gather_rows(ii)
        off = 0
        for s in group:
            m = min(n, s + chunk_size) - s
            yield s, all_sc[off : off + m], all_ii[off : off + m]
            off += m


def _search(idx: Any, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    d_, i_ = idx.search(q, k)
    i_ = i_.astype(np.int64, copy=False)
    # faiss pads missing results (HNSW/IVF with too few candidates) with id -1 and -FLT_MAX
    return np.where(i_ < 0, -np.inf, d_).astype(np.float32, copy=False), i_


def _search_exact(idx: Any, q: np.ndarray, k: int, n_base: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by (-score, id), also when base rows tie at the k-th place (module doc)."""
    kq = min(k + 1, n_base)
    d_, i_ = _sort_rows(*_search(idx, q, kq))
    if kq == k:  # the whole base was returned: nothing beyond the k-th place
        return d_, i_
    out_d, out_i = d_[:, :k].copy(), i_[:, :k].copy()
    rows = np.flatnonzero(d_[:, k] == d_[:, k - 1])
    while rows.size:
        kq = min(2 * kq, n_base)
        d2, i2 = _sort_rows(*_search(idx, q[rows], kq))
        out_d[rows], out_i[rows] = d2[:, :k], i2[:, :k]
        if kq == n_base:
            break
        rows = rows[d2[:, -1] == d2[:, k - 1]]  # the tie group may reach further still
    return out_d, out_i


def knn_search(
    queries: np.ndarray,
    base: np.ndarray,
    k: int,
    index: str = "flat",
    chunk_size: int = 4096,
    device: str = "auto",
    hnsw_m: int = 32,
    ef_search: int = 128,
    ivf_nlist: int | None = None,
    nprobe: int = 16,
    distributed: bool = False,
    ivf_points_per_list: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` cosine neighbours of every query row among the base rows.

    Both inputs are L2-normalised (float32), so the inner product is the cosine. Queries go to faiss
    ``chunk_size`` rows at a time, so besides the index only the n × k outputs grow with n.
    If ``k`` exceeds the base size, the missing places are padded with id -1 and score -inf.
    ``index``: "flat" (exact IndexFlatIP), "hnsw" (IndexHNSWFlat, inner product, CPU only) or "ivf"
    (IndexIVFFlat, ``ivf_nlist`` lists, default 4·sqrt(n_base), k-means on at most ``ivf_points_per_list``
    sampled points per list); a faiss GPU index is used when
    faiss sees a GPU and ``device`` is "auto" or "cuda". ``distributed``: under torchrun, each rank
    searches a share of the query chunks and every rank returns the whole result (module doc).

    Returns ``(scores float32 [n, k], ids int64 [n, k])``, rows ordered as the module doc says.
    """
    n = np.shape(queries)[0]
    scores = np.full((n, k), -np.inf, dtype=np.float32)
    ids = np.full((n, k), -1, dtype=np.int64)
    for s, sc, ii in iter_knn(queries, base, k, index, chunk_size, device, hnsw_m, ef_search, ivf_nlist, nprobe,
                              distributed=distributed, ivf_points_per_list=ivf_points_per_list):
        scores[s : s + len(sc)] = sc
        ids[s : s + len(sc)] = ii
    return scores, ids

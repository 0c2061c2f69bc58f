"""Chunked cosine kNN: exact search (GEMM + top-k, torch on CPU or CUDA), or faiss IVF/HNSW tuned to a recall target.

Index choice (``index``): "flat" is exact search; "ivf" (faiss IndexIVFFlat, CPU or GPU) and "hnsw"
(faiss IndexHNSWFlat, CPU only) are approximate; "auto" is exact while the search costs at most
``exact_max_ops`` multiply-adds (queries × base × dim), otherwise approximate (HNSW on CPU, IVF when
faiss has a GPU).

Recall target (``recall`` > 0): an approximate index is not used with a fixed nprobe/efSearch. A sample
of ``recall_sample`` queries is searched exactly and with the index; nprobe (IVF) or efSearch (HNSW) is
doubled until a one-sided 95 % lower bound of the share of the sample's exact neighbours the index finds
reaches ``recall`` (the point estimate alone stopped at 0.9509 and gave 0.943 on other queries), counting
the neighbours whose score reaches
``recall_min_score`` (the neighbours that can become soft labels; all exact top-k neighbours when the
sample has too few of those). What was chosen and the recall reached go into ``info``.

Exact search: the query chunk times the base (one GEMM, torch: MKL/OpenBLAS on CPU, cuBLAS with CUDA),
then :func:`lever_plugins.topk.topk_by_id`. Faiss' IndexFlatIP keeps a heap per query, which costs up
to several times the GEMM at k = 100 (benchmarks/knn.py); ``exact_impl="faiss"`` keeps it for comparison.

Tie handling (deterministic): every returned row is ordered by score descending, then id ascending, and
for exact search the result is exactly "sort all base rows by (-score, id), take k". Equal embeddings
(duplicate label texts) must score equally however the GEMM tiles the base across threads: rows whose
top-k + 1 scores hold a near-tie (closer than ``TIE_TOL``, which GEMM rounding can create between equal
vectors in different tiles) are re-scored from the embeddings, one dot product per candidate in float64
(the same arithmetic for every position), and re-selected. HNSW/IVF are approximate and get no such
guarantee at the k-th place; their within-row order is still (-score, id).

Multi-process (``distributed=True`` under torchrun): every rank builds the index over the whole base and
searches every K-th query chunk (rank r takes chunks r, r + K, ...); after each round the K chunks are
gathered in order, so every rank sees exactly the one-process sequence of chunks. With CUDA each rank
uses its own GPU (``LOCAL_RANK``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from lever_plugins import distributed as dist
from lever_plugins.errors import ConfigError

INDEX_KINDS = ("auto", "flat", "hnsw", "ivf")
TIE_TOL = 1e-6  # score gap under which neighbours are re-scored exactly: GEMM rounding of equal vectors is below
EXACT_MAX_OPS_CPU = 2e11  # exact search "auto" accepts on CPU: ~10-30 s on 2 idle cores
EXACT_MAX_OPS_CUDA = 2e14  # ~ seconds on one GPU
GEMM_BYTES_CPU = 1 << 27  # score block (query rows × base) per GEMM: 128 MiB on CPU
GEMM_BYTES_CUDA = 1 << 31  # 2 GiB on a GPU


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


def _torch_device(device: str) -> str:
    """Where exact search runs: CUDA when torch sees a GPU and ``device`` allows it (one per torchrun rank)."""
    import torch

    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"device {device!r} is not one of auto, cpu, cuda", where="knn_search")
    if device == "cpu" or not torch.cuda.is_available():
        if device == "cuda":
            raise ConfigError("device 'cuda' requested but torch sees no GPU", where="knn_search",
                              fix="use device 'auto' or 'cpu', or install the CUDA build of torch")
        return "cpu"
    return f"cuda:{int(os.environ.get('LOCAL_RANK', '0')) % torch.cuda.device_count()}"


class ExactSearch:
    """Exact top-k by (-score, id) against a fixed base: GEMM per query block + :func:`topk_by_id`,
    near-ties re-scored exactly (module doc). The base goes to the device once."""

    def __init__(self, base: np.ndarray, device: str = "auto", block_bytes: int | None = None):
        import torch

        self.base = base
        self.device = _torch_device(device)
        self.b = torch.from_numpy(base).to(self.device)  # CPU: shares the numpy memory
        cuda = self.device.startswith("cuda")
        budget = block_bytes or (GEMM_BYTES_CUDA if cuda else GEMM_BYTES_CPU)
        self.rows = max(1, budget // (4 * max(base.shape[0], 1)))

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        import torch

        from lever_plugins.topk import topk_by_id

        n, kk = q.shape[0], min(k, self.base.shape[0])
        scores = np.empty((n, kk), np.float32)
        ids = np.empty((n, kk), np.int64)
        with torch.inference_mode():
            for s in range(0, n, self.rows):
                e = min(n, s + self.rows)
                block = torch.from_numpy(q[s:e]).to(self.device) @ self.b.T
                v, i = topk_by_id(block, kk + 1 if kk < self.base.shape[0] else kk)
                near = np.flatnonzero(np.any(v[:, :-1] - v[:, 1:] <= TIE_TOL, axis=1)) if v.shape[1] > 1 else []
                for r in near:  # a near-tie: re-score the candidates exactly and re-select (module doc)
                    v_r, i_r = self._rescore(q[s + r], block[r], float(v[r, kk - 1]), kk)
                    v[r, :kk], i[r, :kk] = v_r, i_r
                scores[s:e], ids[s:e] = v[:, :kk], i[:, :kk]
        return scores, ids

    def _rescore(self, q: np.ndarray, row: Any, kth: float, k: int) -> tuple[np.ndarray, np.ndarray]:
        import torch

        cand = torch.nonzero(row >= kth - 2 * TIE_TOL).flatten().cpu().numpy()  # ascending ids
        exact = self.base[cand].astype(np.float64) @ q.astype(np.float64)
        order = np.lexsort((cand, -exact))[:k]
        return exact[order].astype(np.float32), cand[order].astype(np.int64)


def _approx_kind(index: str, n_q: int, n_b: int, d: int, device: str, exact_max_ops: float) -> str:
    """The index "auto" resolves to: exact while affordable, else HNSW (CPU) or IVF (faiss sees a GPU)."""
    if index != "auto":
        return index
    gpu = device != "cpu" and _faiss_gpus() > 0
    budget = exact_max_ops or (EXACT_MAX_OPS_CUDA if gpu or _torch_device(device) != "cpu" else EXACT_MAX_OPS_CPU)
    if float(n_q) * n_b * d <= budget:
        return "flat"
    return "ivf" if gpu else "hnsw"


def _faiss_gpus() -> int:
    import faiss

    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


LCB_Z = 1.645  # one-sided 95 % normal quantile for the recall's lower bound


def tune_recall(idx: Any, kind: str, q: np.ndarray, exact: ExactSearch, k: int, target: float,
                min_score: float | None, sample: int, max_param: int) -> dict[str, Any]:
    """Raise nprobe (IVF) or efSearch (HNSW) by doubling until the index reaches ``target`` recall of
    the exact neighbours of a sample of queries (module doc). Returns what was chosen and measured."""
    rng = np.random.default_rng(0)
    pick = np.sort(rng.choice(q.shape[0], min(sample, q.shape[0]), replace=False))
    qs = q[pick]
    e_sc, e_id = exact.search(qs, k)
    relevant = e_id >= 0
    measured_on = "top_k"
    if min_score is not None:
        strong = relevant & (e_sc >= np.float32(min_score))
        if strong.sum() >= 50:  # fewer pairs than that make a noisy estimate: fall back to all top-k
            relevant, measured_on = strong, "above_threshold"

    n_rel = relevant.sum(1)
    # the lowest relevant exact score per query; an approximate result scoring at least that much (within
    # GEMM rounding) is one of the relevant neighbours or ties with one: counting scores, not ids, keeps
    # duplicate embeddings (which the index may return under other ids) from reading as misses
    floor = np.where(relevant, e_sc, np.inf).min(1)[:, None] - 10 * TIE_TOL

    def recall() -> float:
        a_sc, _ = _search(idx, qs, k)
        found = np.minimum((a_sc >= floor).sum(1), n_rel)
        return float(found.sum() / n_rel.sum()) if n_rel.sum() else 1.0

    pairs = max(int(n_rel.sum()), 1)

    def lower(r: float) -> float:
        # one-sided 95 % lower bound of the recall: a sample that just reaches the target (0.9509 measured)
        # was seen to give 0.943 on other queries, so the bound, not the point estimate, must reach it
        return r - LCB_Z * float(np.sqrt(max(r * (1.0 - r), 0.0) / pairs))

    name = "nprobe" if kind == "ivf" else "ef_search"
    get = (lambda: int(idx.nprobe)) if kind == "ivf" else (lambda: int(idx.hnsw.efSearch))

    def put(v: int) -> None:
        if kind == "ivf":
            idx.nprobe = v
        else:
            idx.hnsw.efSearch = v

    steps = []
    while True:
        r = recall()
        steps.append([get(), round(r, 4)])
        if lower(r) >= target or get() >= max_param:
            break
        put(min(2 * get(), max_param))
    return {"method": kind, name: get(), "recall": round(r, 4), "recall_lower_95": round(lower(r), 4),
            "target": target, "reached": lower(r) >= target,
            "sample_queries": int(len(pick)), "sample_pairs": int(n_rel.sum()), "measured_on": measured_on,
            "steps": steps}


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
    *,
    recall: float = 0.0,
    recall_sample: int = 1000,
    recall_min_score: float | None = None,
    exact_max_ops: float = 0.0,
    exact_impl: str = "torch",
    info: dict[str, Any] | None = None,
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Like :func:`knn_search`, but yields ``(start, scores, ids)`` for each chunk of ``chunk_size``
    query rows, so a caller that reduces each chunk (the soft-label builder) never holds all n × k.

    The index is built (and tuned to ``recall``) once, before the first chunk; ``info`` (a dict, if
    given) receives the method used, its search parameter and the recall measured. ``distributed``:
    under torchrun, every rank must call this; the chunks are searched round-robin over the ranks and
    gathered (module doc).
    """
    if k < 1:
        raise ConfigError(f"k = {k} must be >= 1", where="soft_labels.k")
    if chunk_size < 1:
        raise ConfigError(f"chunk_size = {chunk_size} must be >= 1", where="soft_labels.chunk_size")
    if index not in INDEX_KINDS:
        raise ConfigError(f"index {index!r} is not one of {', '.join(INDEX_KINDS)}", where="soft_labels.index")
    if not 0.0 <= recall <= 1.0:
        raise ConfigError(f"recall = {recall} must be in [0, 1]", where="soft_labels.recall")
    q = _normalized(queries, "queries")
    b = _normalized(base, "base")
    if q.shape[1] != b.shape[1]:
        raise ConfigError(f"queries have dimension {q.shape[1]} but base has {b.shape[1]}", where="knn_search")
    n = q.shape[0]
    kk = min(k, b.shape[0])
    info = info if info is not None else {}
    if n == 0:
        return
    kind = _approx_kind(index, n, b.shape[0], b.shape[1], device, exact_max_ops)
    idx: Any = None
    exact: ExactSearch | None = None
    if kk > 0:
        if kind == "flat" and exact_impl == "faiss":
            idx = _build_index(b, "flat", _use_gpu(device), hnsw_m, ef_search, kk, ivf_nlist, nprobe,
                               ivf_points_per_list)
            info.update(method="exact", impl="faiss", recall=1.0)
        elif kind == "flat":
            exact = ExactSearch(b, device)
            info.update(method="exact", impl="torch", device=exact.device, recall=1.0)
        else:
            idx = _build_index(b, kind, _use_gpu(device), hnsw_m, ef_search, kk, ivf_nlist, nprobe,
                               ivf_points_per_list)
            if recall > 0:
                cap = int(idx.nlist) if kind == "ivf" else max(4096, kk)
                info.update(tune_recall(idx, kind, q, ExactSearch(b, device), kk, recall, recall_min_score,
                                        recall_sample, cap))
            else:
                info.update(method=kind, **({"nprobe": int(idx.nprobe)} if kind == "ivf"
                                            else {"ef_search": int(idx.hnsw.efSearch)}), recall=None)

    def chunk(s: int, e: int) -> tuple[np.ndarray, np.ndarray]:
        scores = np.full((e - s, k), -np.inf, dtype=np.float32)
        ids = np.full((e - s, k), -1, dtype=np.int64)
        if e > s and exact is not None:
            scores[:, :kk], ids[:, :kk] = exact.search(q[s:e], kk)
        elif e > s and idx is not None:
            if kind == "flat":
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
    **options: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` cosine neighbours of every query row among the base rows.

    Both inputs are L2-normalised (float32), so the inner product is the cosine. Queries are searched
    ``chunk_size`` rows at a time, so besides the index only the n × k outputs grow with n.
    If ``k`` exceeds the base size, the missing places are padded with id -1 and score -inf.
    ``index``: "flat" (exact: GEMM + top-k, on CUDA when torch sees a GPU), "hnsw" (faiss IndexHNSWFlat,
    inner product, CPU only), "ivf" (IndexIVFFlat, ``ivf_nlist`` lists, default 4·sqrt(n_base), k-means on
    at most ``ivf_points_per_list`` sampled points per list; a faiss GPU index when faiss sees a GPU and
    ``device`` is "auto" or "cuda") or "auto" (module doc). ``options``: the keyword-only arguments of
    :func:`iter_knn` (``recall``, ``recall_sample``, ``recall_min_score``, ``exact_max_ops``,
    ``exact_impl``, ``info``). ``distributed``: under torchrun, each rank searches a share of the query
    chunks and every rank returns the whole result (module doc).

    Returns ``(scores float32 [n, k], ids int64 [n, k])``, rows ordered as the module doc says.
    """
    n = np.shape(queries)[0]
    scores = np.full((n, k), -np.inf, dtype=np.float32)
    ids = np.full((n, k), -1, dtype=np.int64)
    for s, sc, ii in iter_knn(queries, base, k, index, chunk_size, device, hnsw_m, ef_search, ivf_nlist, nprobe,
                              distributed=distributed, ivf_points_per_list=ivf_points_per_list, **options):
        scores[s : s + len(sc)] = sc
        ids[s : s + len(sc)] = ii
    return scores, ids

"""Soft labels at scale: time and peak memory of the chunked, incrementally written builder.

For L in {10^4, 10^5, 10^6} (up to ``--max-labels``) and N = 2·L documents, synthetic teacher embeddings
(d = 64, unit rows) are generated and ``write_soft_labels`` writes y_aug / soft / targets (.npz, CSR) in
row buckets. Each size runs in its own child process, and its peak RSS is that child's ``ru_maxrss``
from ``os.wait4`` (data generation, faiss index, kNN and writing all included).

The kNN runs as the soft-label stage runs it (``--index auto``, ``--recall 0.95``): exact search while it
costs at most ``exact_max_ops`` multiply-adds (2·10^11 on CPU), otherwise an approximate faiss index
(HNSW on CPU) whose efSearch (or nprobe, IVF) the builder raises until a sample of 1,000 queries reaches
the recall target against exact search. The benchmark then measures the recall itself, independently:
on another random sample of labels, the approximate search with the parameters the builder chose against
exact brute force (faiss), for both searches (label → labels, label → documents), counting the exact
neighbours whose calibrated score reaches the threshold (those that become soft labels).

Synthetic data: labels form groups of ~8 siblings (group centre + noise, cosine ≈ 0.8 to a sibling);
label popularity is Zipf (exponent 0.9) over a random order; each document has 1-3 labels and is the
normalised sum of their embeddings plus noise. Defaults: tau_l = 4, tau_d = 5, k = 16, threshold 0.8;
IVF (``--index ivf``) with 4·sqrt(n) lists, k-means on 40 sampled points per list.

    python benchmarks/scale.py [--max-labels 1000000] [--min-labels 10000] [--recall 0.95] [--threads 2]

The last line is JSON with keys labels, docs, seconds, peak_rss_mb for the largest size.
Writes benchmarks/results/scale.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SIZES = (10_000, 100_000, 1_000_000)
D = 64


def _normalize_rows(x: np.ndarray) -> np.ndarray:
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x


def make_data(n_lbl: int, n_doc: int, seed: int = 0, block: int = 1 << 18):
    """Label and document embeddings (float32, unit rows) and the N×L train matrix; built in row blocks so
    that no float64 or full-size temporary exists."""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    groups = max(n_lbl // 8, 1)
    centres = _normalize_rows(rng.standard_normal((groups, D), dtype=np.float32))
    grp = rng.integers(0, groups, n_lbl)
    lbl = np.empty((n_lbl, D), dtype=np.float32)
    for lo in range(0, n_lbl, block):
        hi = min(n_lbl, lo + block)
        noise = _normalize_rows(rng.standard_normal((hi - lo, D), dtype=np.float32))
        lbl[lo:hi] = _normalize_rows(centres[grp[lo:hi]] + 0.5 * noise)
    del centres, grp
    popularity = 1.0 / np.arange(1, n_lbl + 1) ** 0.9
    cdf = np.cumsum(popularity / popularity.sum())
    rank_to_label = rng.permutation(n_lbl)
    per_doc = rng.integers(1, 4, n_doc)
    rows = np.repeat(np.arange(n_doc, dtype=np.int64), per_doc)
    cols = rank_to_label[np.minimum(np.searchsorted(cdf, rng.random(rows.size)), n_lbl - 1)]
    del cdf, popularity, rank_to_label, per_doc
    y = sp.csr_matrix((np.ones(rows.size, np.float32), (rows, cols)), shape=(n_doc, n_lbl))
    del rows, cols
    y.sum_duplicates()
    y.data[:] = 1.0
    doc = np.empty((n_doc, D), dtype=np.float32)
    for lo in range(0, n_doc, block):
        hi = min(n_doc, lo + block)
        x = np.asarray(y[lo:hi] @ lbl, dtype=np.float32)
        noise = _normalize_rows(rng.standard_normal((hi - lo, D), dtype=np.float32))
        doc[lo:hi] = _normalize_rows(_normalize_rows(x) + 0.4 * noise)
    return y, doc, lbl


def recall_at_k(queries: np.ndarray, base: np.ndarray, k: int, approx_ids: np.ndarray,
                min_cos: float) -> tuple[float, float]:
    """(recall@k, recall of the exact top-k neighbours with cosine >= ``min_cos``): the share of exact
    neighbours the approximate search also returned. The second counts only the neighbours that can
    become soft labels (calibrated score >= threshold). Exact = faiss brute force (blocked BLAS)."""
    import faiss

    cos, exact = faiss.knn(np.ascontiguousarray(queries), base, k, metric=faiss.METRIC_INNER_PRODUCT)
    hits = hits_t = n_t = 0
    for a, e, c in zip(approx_ids, exact, cos, strict=True):
        found = set(a[a >= 0].tolist())
        hits += len(found & set(e.tolist()))
        strong = set(e[c >= min_cos].tolist())
        hits_t += len(found & strong)
        n_t += len(strong)
    return hits / exact.size, (hits_t / n_t if n_t else float("nan"))


def child(args: argparse.Namespace) -> None:
    import dataclasses

    import faiss

    from lever_plugins.config import SoftLabelConfig
    from lever_plugins.soft_labels.knn import knn_search
    from lever_plugins.soft_labels.stream import write_soft_labels

    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    L = args.child
    N = int(args.docs_per_label * L)
    t0 = time.perf_counter()
    y, doc, lbl = make_data(L, N, seed=args.seed)
    t_gen = time.perf_counter() - t0
    cfg = dataclasses.replace(SoftLabelConfig(), index=args.index, k=args.k, tau_l=args.tau_l, tau_d=args.tau_d,
                              threshold=args.threshold, chunk_size=args.chunk_size, recall=args.recall)
    # IVF: faiss' default here, 4·sqrt(n) lists per index (labels: n = L, documents: n = N)
    opts: dict = {"ivf_points_per_list": args.ivf_points_per_list}
    if args.nprobe:
        opts["nprobe"] = args.nprobe
    with tempfile.TemporaryDirectory(dir=args.workdir) as out:
        t1 = time.perf_counter()
        stats = write_soft_labels(out, y, doc, lbl, cfg, knn_options=opts, bucket_rows=args.bucket_rows)
        seconds = time.perf_counter() - t1
        sizes = {p.name: p.stat().st_size for p in Path(out).iterdir()}
        with np.load(Path(out) / "soft.npz") as z:
            shape = [int(v) for v in z["shape"]]
        leftovers = sorted(p.name for p in Path(out).iterdir() if p.name not in sizes or p.suffix != ".npz")
    peak_build_mb = _self_maxrss_mb()
    # recall against exact brute force, measured here on another sample of queries (seed 1; the builder
    # tuned on seed 0) with the method and search parameter the builder chose for each search
    rec: dict[str, float] = {}
    rng = np.random.default_rng(1)
    q = lbl[np.sort(rng.choice(L, min(args.recall_sample, L), replace=False))]
    min_cos = 2 * args.threshold - 1  # linear calibration: p = (1 + cos) / 2
    for name, base in (("labels", lbl), ("docs", doc)):
        chosen = stats["knn"].get(name, {})
        method = "flat" if chosen.get("method", "exact") == "exact" else chosen["method"]
        params = {key: chosen[key] for key in ("nprobe", "ef_search") if key in chosen}
        _, approx = knn_search(q, base, args.k, index=method, chunk_size=args.chunk_size, recall=0.0,
                               **{**opts, **params})
        r_all, r_strong = recall_at_k(q, base, args.k, approx, min_cos)
        rec[name] = round(r_all, 4)
        rec[f"{name}_above_threshold"] = round(r_strong, 4)
    print(json.dumps({
        "labels": L, "docs": N, "seconds": round(seconds, 2), "seconds_generate": round(t_gen, 2),
        "seconds_knn": stats["seconds_neighbours"], "seconds_write": stats["seconds_write"],
        "pairs_label_rows": stats["pairs_label_rows"], "pairs_doc_topup": stats["pairs_doc_topup"],
        "labels_below_tau_d": stats["labels_below_tau_d"], "train_nnz": int(y.nnz), "buckets": stats["buckets"],
        "soft_shape": shape, "output_bytes": sizes, "leftover_files": leftovers,
        "peak_rss_mb_after_build_self": peak_build_mb, "recall_at_k": rec, "knn": stats["knn"],
    }))


def _self_maxrss_mb() -> float:
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: KiB


def run_size(L: int, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", str(L)] + _forward(args)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads or os.cpu_count() or 1)}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    t0 = time.perf_counter()
    out, err = proc.stdout.read(), proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"size {L} failed (exit {proc.returncode}):\n{err[-3000:]}")
    res = json.loads(out.strip().splitlines()[-1])
    res["peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)  # this child alone (os.wait4), KiB on Linux
    res["child_wall_s"] = round(wall, 1)
    res["child_cpu_s"] = round(usage.ru_utime + usage.ru_stime, 1)
    return res


def _forward(args: argparse.Namespace) -> list[str]:
    out = []
    for key in ("index", "recall", "k", "tau_l", "tau_d", "threshold", "chunk_size", "nprobe", "ivf_points_per_list",
                "docs_per_label", "seed", "recall_sample", "threads", "bucket_rows", "workdir"):
        v = getattr(args, key)
        if v is not None:
            out += [f"--{key.replace('_', '-')}", str(v)]
    return out


def _method(info: dict) -> str:
    if info.get("method") in ("ivf", "hnsw"):
        key = "nprobe" if info["method"] == "ivf" else "ef_search"
        return f"{info['method']} {key} {info[key]} (tuned recall {info['recall']})"
    return info.get("method", "-")


def slope(xs: list[float], ys: list[float]) -> float | None:
    if len(xs) < 2:
        return None
    return round(float(np.polyfit(np.log(xs), np.log(ys), 1)[0]), 3)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-labels", type=float, default=1e6)
    ap.add_argument("--docs-per-label", type=float, default=2.0)
    ap.add_argument("--min-labels", type=float, default=1e4)
    ap.add_argument("--index", default="auto", choices=["auto", "flat", "ivf", "hnsw"])
    ap.add_argument("--recall", type=float, default=0.95, help="the builder's recall target (0: no tuning)")
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--tau-l", type=int, default=4)
    ap.add_argument("--tau-d", type=int, default=5)
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--chunk-size", type=int, default=16384)
    ap.add_argument("--nprobe", type=int, default=None, help="IVF start value (the builder raises it)")
    ap.add_argument("--ivf-points-per-list", type=int, default=40, help="k-means sample per IVF list")
    ap.add_argument("--bucket-rows", type=int, default=1 << 20)
    ap.add_argument("--recall-sample", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default=None, help="where the outputs are written (a temp folder inside)")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "scale.json"))
    args = ap.parse_args(argv)
    if args.child:
        child(args)
        return 0
    sizes = [s for s in SIZES if args.min_labels <= s <= args.max_labels] or [int(args.max_labels)]
    results = []
    print(f"soft labels, synthetic d={D}, N = {args.docs_per_label:g}·L, index {args.index}, recall target "
          f"{args.recall} (IVF: nlist 4·sqrt(n), k-means on {args.ivf_points_per_list} points per list), "
          f"k {args.k}, tau_l {args.tau_l}, tau_d {args.tau_d}, {args.threads} threads")
    hdr = (f"{'labels':>9}{'docs':>10}{'build s':>9}{'kNN s':>8}{'write s':>8}{'pairs':>10}{'peak MB':>9}"
           f"{'recall lbl':>11}{'recall doc':>11}{'rec lbl p>=t':>13}{'rec doc p>=t':>13}  method lbl / doc")
    print(hdr, flush=True)
    nan = float("nan")
    for L in sizes:
        r = run_size(L, args)
        results.append(r)
        rec = r["recall_at_k"]
        print(f"{r['labels']:>9}{r['docs']:>10}{r['seconds']:>9.1f}{r['seconds_knn']:>8.1f}{r['seconds_write']:>8.1f}"
              f"{r['pairs_label_rows'] + r['pairs_doc_topup']:>10}{r['peak_rss_mb']:>9.0f}"
              f"{rec.get('labels', nan):>11.3f}{rec.get('docs', nan):>11.3f}"
              f"{rec.get('labels_above_threshold', nan):>13.3f}{rec.get('docs_above_threshold', nan):>13.3f}"
              f"  {_method(r['knn'].get('labels', {}))} / {_method(r['knn'].get('docs', {}))}", flush=True)
    xs = [r["labels"] for r in results]
    growth = {"seconds": slope(xs, [r["seconds"] for r in results]),
              "peak_rss_mb": slope(xs, [r["peak_rss_mb"] for r in results])}
    pairwise = [round(math.log(b["seconds"] / a["seconds"]) / math.log(b["labels"] / a["labels"]), 3)
                for a, b in zip(results, results[1:], strict=False)]
    print(f"growth exponent (log-log fit over L): time {growth['seconds']}, peak memory {growth['peak_rss_mb']}; "
          f"time exponent between consecutive sizes: {pairwise}")
    print(f"recall@{args.k} vs exact brute force on {args.recall_sample} sampled label queries ('p>=t': of the exact "
          f"neighbours whose calibrated score reaches the threshold {args.threshold}, i.e. those that can become "
          f"soft labels); method: what the builder chose, with its tuned search parameter")
    from lever_plugins.runs import write_json

    write_json(args.out, {"what": "chunked soft labels (write_soft_labels), synthetic embeddings", "d": D,
                          "index": args.index, "recall_target": args.recall, "k": args.k, "tau_l": args.tau_l,
                          "tau_d": args.tau_d, "threshold": args.threshold, "chunk_size": args.chunk_size,
                          "threads": args.threads, "machine": platform.processor() or platform.machine(),
                          "cpu_count": os.cpu_count(), "load_average": os.getloadavg(), "sizes": results,
                          "growth_exponent": growth, "growth_exponent_pairwise": pairwise})
    print(f"wrote {args.out}")
    big = results[-1]
    print(json.dumps({"labels": big["labels"], "docs": big["docs"], "seconds": big["seconds"],
                      "peak_rss_mb": big["peak_rss_mb"], "index": args.index, "recall_at_k": big["recall_at_k"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""I/O benchmark: XC sparse text read/write (lever_plugins.data) against scipy's .npz.

Generates a synthetic label matrix (default 1M rows, 500K labels, ~5 labels a row), writes it as XC
text and .npz in a temp dir, then times each operation in a fresh spawned process so its peak RSS
(resource.getrusage) is its own. Prints a table and writes benchmarks/results/io.json atomically.

    .venv/bin/python benchmarks/io.py               # full size
    .venv/bin/python benchmarks/io.py --rows 100000 # quick
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

RESULTS = Path(__file__).resolve().parent / "results" / "io.json"


def rss_mb() -> float:
    """Peak RSS of this process so far (Linux reports KiB).

    Linux starts a child's ru_maxrss at its parent's RSS when it forks, so the parent here stays
    small (it never holds the matrix) and every result also gives the growth over the child's own
    level after imports.
    """
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def make_matrix(rows: int, labels: int, avg: float, soft: bool, seed: int) -> sp.csr_matrix:
    """Long-tailed synthetic labels: per-row counts 1 + Poisson(avg - 1), label ids Zipf-like."""
    rng = np.random.default_rng(seed)
    counts = 1 + rng.poisson(avg - 1, rows)
    r = np.repeat(np.arange(rows), counts)
    # inverse-CDF sampling of a power law over label ranks, then a fixed permutation of ids
    u = rng.random(r.size)
    c = np.minimum((labels * u**2.0).astype(np.int64), labels - 1)
    c = rng.permutation(labels)[c]
    m = sp.csr_matrix((np.ones(r.size, np.float32), (r, c)), shape=(rows, labels))
    m.sum_duplicates()
    m.data = rng.random(m.nnz).astype(np.float32) if soft else np.ones(m.nnz, np.float32)
    return m


def _generate(args: dict, q: mp.Queue) -> None:
    """Runs in a spawned child: make the matrix and its files (untimed)."""
    from lever_plugins.data import write_sparse

    m = make_matrix(args["rows"], args["labels"], args["avg"], args["soft"], args["seed"])
    write_sparse(args["txt"], m)
    sp.save_npz(args["npz"], m, compressed=True)
    sp.save_npz(args["npz_raw"], m, compressed=False)
    q.put({"nnz": int(m.nnz)})


def _job(task: str, args: dict, q: mp.Queue) -> None:
    """Runs in a spawned child: load inputs untimed, then time one operation."""
    from lever_plugins.data import read_sparse, write_npz, write_sparse

    src = args["npz_raw"]
    m = sp.load_npz(src) if task in ("write_sparse", "write_npz") else None
    base = rss_mb()
    c0 = cpu_s()
    t = time.perf_counter()
    if task == "read_sparse":
        out = read_sparse(args["txt"])
    elif task == "write_sparse":
        write_sparse(args["txt_out"], m)
    elif task == "load_npz_compressed":
        out = sp.load_npz(args["npz"])
    elif task == "load_npz_raw":
        out = sp.load_npz(args["npz_raw"])
    elif task == "write_npz":
        write_npz(args["npz_out"], m)
    else:
        raise ValueError(task)
    secs = time.perf_counter() - t
    cpu = cpu_s() - c0
    peak = rss_mb()
    ok = True
    if task.startswith(("read", "load")):
        ref = sp.load_npz(src)
        out = out.tocsr()
        ok = bool(
            out.shape == ref.shape
            and np.array_equal(out.indptr, ref.indptr)
            and np.array_equal(out.indices, ref.indices)
            and np.array_equal(out.data, ref.data)
        )
    if task == "write_sparse":
        ok = Path(args["txt_out"]).read_bytes() == Path(args["txt"]).read_bytes()
    q.put({"seconds": secs, "cpu_seconds": cpu, "peak_rss_mb": peak, "rss_before_mb": base, "ok": ok})


def run_job(task: str, args: dict, target=_job) -> dict:
    ctx = mp.get_context("spawn")  # a fresh process: its peak RSS is this operation's alone
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(task, args, q) if target is _job else (args, q))
    p.start()
    res = q.get()
    p.join()
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--labels", type=int, default=500_000)
    ap.add_argument("--avg", type=float, default=5.0, help="average labels per row")
    ap.add_argument("--values", choices=["binary", "soft", "both"], default="both")
    ap.add_argument("--repeat", type=int, default=1, help="runs per operation; the best time is kept")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS)
    a = ap.parse_args(argv)

    from lever_plugins.runs import write_json

    kinds = ["binary", "soft"] if a.values == "both" else [a.values]
    results: dict = {
        "config": {k: v for k, v in vars(a).items() if k != "out"},
        "machine": {"python": sys.version.split()[0], "cpus": os.cpu_count(), "platform": platform.platform()},
        "load_avg_at_start": os.getloadavg()[0],
        "runs": [],
    }
    tasks = ["read_sparse", "write_sparse", "load_npz_compressed", "load_npz_raw", "write_npz"]
    with tempfile.TemporaryDirectory(prefix="lever-io-bench-") as tmp:
        for kind in kinds:
            paths = {
                "txt": f"{tmp}/y_{kind}.txt",
                "txt_out": f"{tmp}/y_{kind}_out.txt",
                "npz": f"{tmp}/y_{kind}.npz",
                "npz_raw": f"{tmp}/y_{kind}_raw.npz",
                "npz_out": f"{tmp}/y_{kind}_out.npz",
            }
            gen = dict(paths, rows=a.rows, labels=a.labels, avg=a.avg, soft=kind == "soft", seed=a.seed)
            nnz = run_job("generate", gen, target=_generate)["nnz"]
            sizes = {k: os.path.getsize(p) for k, p in paths.items() if os.path.exists(p)}
            for task in tasks:
                best = None
                for _ in range(a.repeat):
                    r = run_job(task, paths)
                    best = r if best is None or r["seconds"] < best["seconds"] else best
                assert best is not None
                size = {
                    "read_sparse": sizes["txt"],
                    "write_sparse": sizes["txt"],
                    "load_npz_compressed": sizes["npz"],
                    "load_npz_raw": sizes["npz_raw"],
                    "write_npz": sizes["npz"],
                }[task]
                results["runs"].append(
                    {
                        "values": kind,
                        "op": task,
                        "rows": a.rows,
                        "labels": a.labels,
                        "nnz": nnz,
                        "file_mb": round(size / 1e6, 2),
                        "seconds": round(best["seconds"], 3),
                        "cpu_seconds": round(best["cpu_seconds"], 3),
                        "mb_per_s": round(size / 1e6 / best["seconds"], 1),
                        "mb_per_cpu_s": round(size / 1e6 / max(best["cpu_seconds"], 1e-9), 1),
                        "mnnz_per_s": round(nnz / 1e6 / best["seconds"], 2),
                        "peak_rss_mb": round(best["peak_rss_mb"], 1),
                        "rss_growth_mb": round(best["peak_rss_mb"] - best["rss_before_mb"], 1),
                        "ok": best["ok"],
                    }
                )
                row = results["runs"][-1]
                print(
                    f"{kind:6s} {task:20s} {row['file_mb']:7.1f} MB {row['seconds']:7.2f} s "
                    f"(cpu {row['cpu_seconds']:6.2f} s) {row['mb_per_s']:7.1f} MB/s "
                    f"({row['mb_per_cpu_s']:7.1f} per cpu-s) {row['mnnz_per_s']:6.2f} Mnnz/s "
                    f"peak {row['peak_rss_mb']:7.1f} MB (+{row['rss_growth_mb']:.1f}) ok={row['ok']}",
                    flush=True,
                )
    results["load_avg_at_end"] = os.getloadavg()[0]
    write_json(a.out, results)
    print(f"load average {results['load_avg_at_start']:.1f} -> {results['load_avg_at_end']:.1f}; wrote {a.out}")
    return 0 if all(r["ok"] for r in results["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Epoch time and peak memory of the built-in OvA trainer: base (N rows, binary) vs +LEVER (N+L rows, soft).

The bar: +LEVER epoch time ≤ 1.05 × (N+L)/N × base epoch time, i.e. a training row costs the same with
or without soft labels (the only extra work LEVER may add is the extra rows).

Synthetic data: label frequencies follow a Zipf law, each document has 1-9 labels (≈5), its feature is
the normalised sum of its labels' prototypes plus noise (d = 384, as MiniLM). +LEVER appends one row
per label (its prototype) with target 1 on itself and 3 soft entries (0.4-0.5) on other labels, and
blends the document rows' targets as 0.5·y + 0.5·p on their own labels.

Each (case, arm) runs in its own process so that peak RSS (ru_maxrss) belongs to that run alone.

    python benchmarks/trainer.py [--quick] [--epochs 2] [--out benchmarks/results/trainer.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]

FULL_CASES = [  # (name, N, L, negatives)
    ("L200K-shortlist", 50_000, 200_000, "shortlist"),
    ("L17K-shortlist", 50_000, 17_000, "shortlist"),
    ("L17K-full", 50_000, 17_000, "full"),
]
QUICK_CASES = [
    ("L2K-full", 5_000, 2_000, "full"),
    ("L2K-shortlist", 5_000, 2_000, "shortlist"),
    ("L50K-shortlist", 5_000, 50_000, "shortlist"),
]
D = 384


def make_data(n: int, L: int, lever: bool, seed: int = 0) -> tuple[np.ndarray, sp.csr_matrix]:
    rng = np.random.default_rng(seed)
    proto = rng.standard_normal((L, D)).astype(np.float32)
    proto /= np.linalg.norm(proto, axis=1, keepdims=True)
    freq = 1.0 / np.arange(1, L + 1) ** 0.8
    freq /= freq.sum()
    k = rng.integers(1, 10, n)
    rows = np.repeat(np.arange(n), k)
    cols = rng.choice(L, size=len(rows), p=freq)
    y = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n, L))
    y.sum_duplicates()
    y.data[:] = 1.0
    x = np.asarray(y @ proto) + 0.3 * rng.standard_normal((n, D)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    if not lever:
        return np.ascontiguousarray(x, dtype=np.float32), y
    y_doc = y.copy()
    y_doc.data = 0.5 + 0.5 * rng.uniform(0.8, 1.0, y_doc.nnz).astype(np.float32)  # blended ground truth
    lr = np.repeat(np.arange(L), 4)
    lc = np.concatenate([np.arange(L)[:, None], rng.integers(0, L, (L, 3))], axis=1).ravel()
    lv = np.tile(np.array([1.0, 0.5, 0.45, 0.4], np.float32), L)
    y_lbl = sp.csr_matrix((lv, (lr, lc)), shape=(L, L))
    y_lbl.sum_duplicates()
    y_lbl.data = np.minimum(y_lbl.data, 1.0)
    x_aug = np.vstack([x, proto]).astype(np.float32)
    return x_aug, sp.vstack([y_doc, y_lbl]).tocsr().astype(np.float32)


def run_one(name: str, n: int, L: int, negatives: str, lever: bool, epochs: int, threads: int) -> dict:
    import faiss
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
        faiss.omp_set_num_threads(threads)

    from lever_plugins.config import TrainerConfig
    from lever_plugins.trainer import ova

    t0 = time.perf_counter()
    x, y = make_data(n, L, lever)
    data_s = time.perf_counter() - t0
    cfg = TrainerConfig(epochs=epochs, negatives=negatives, device="cpu")
    model, stats = ova.train(x, y, cfg, seed=0, progress=False)
    t0 = time.perf_counter()
    model.topk(x[:1000], cfg.top_k)
    predict_s = time.perf_counter() - t0
    return {
        "case": name,
        "arm": "lever" if lever else "base",
        "rows": x.shape[0],
        "labels": L,
        "nnz": int(y.nnz),
        "negatives": negatives,
        "epoch_seconds": stats["epoch_seconds"],
        "epoch_cpu_seconds": stats["epoch_cpu_seconds"],
        "mean_candidates": stats["mean_candidates"],
        "mining_index": stats["mining_index"],
        "data_seconds": round(data_s, 2),
        "predict_1000_seconds": round(predict_s, 3),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "torch_threads": torch.get_num_threads(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (about a minute)")
    ap.add_argument("--epochs", type=int, default=2, help="epochs per run; the table uses the fastest")
    ap.add_argument(
        "--threads", type=int, default=1, help="torch/faiss threads (0: library default); 1 on a shared machine"
    )
    ap.add_argument("--wall", action="store_true", help="compare wall time instead of process CPU time")
    ap.add_argument("--cases", default="", help="comma-separated case names to run (default: all)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "trainer.json"))
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: one run, JSON on stdout
    args = ap.parse_args()
    if args.one:
        name, n, L, neg, lever = args.one.split(":")
        print(json.dumps(run_one(name, int(n), int(L), neg, lever == "1", args.epochs, args.threads)))
        return

    from lever_plugins.runs import write_json

    results: list[dict] = []

    def save() -> None:
        write_json(
            args.out,
            {
                "quick": args.quick,
                "epochs": args.epochs,
                "threads": args.threads,
                "timing": "wall" if args.wall else "process cpu",
                "dim": D,
                "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
                "results": results,
            },
        )

    cases = QUICK_CASES if args.quick else FULL_CASES
    if args.cases:
        wanted = set(args.cases.split(","))
        cases = [c for c in cases if c[0] in wanted]
    for name, n, L, neg in cases:
        pair = {}
        for lever in (False, True):
            spec = f"{name}:{n}:{L}:{neg}:{int(lever)}"
            out = subprocess.run(
                [sys.executable, __file__, "--one", spec, "--epochs", str(args.epochs), "--threads", str(args.threads)],
                capture_output=True,
                text=True,
                check=True,
            )
            rec = json.loads(out.stdout.strip().splitlines()[-1])
            pair[rec["arm"]] = rec
            print(
                f"  {name} {rec['arm']}: epochs wall {rec['epoch_seconds']} s, cpu {rec['epoch_cpu_seconds']} s, "
                f"rss {rec['peak_rss_mb']:.0f} MB",
                flush=True,
            )
        # The least-disturbed epoch, in CPU seconds of the process by default: on a shared machine wall
        # time measures the neighbours too (both are kept in the JSON).
        key = "epoch_seconds" if args.wall else "epoch_cpu_seconds"
        base_s = min(pair["base"][key])
        lever_s = min(pair["lever"][key])
        row_ratio = pair["lever"]["rows"] / pair["base"]["rows"]
        results.append(
            {
                "case": name,
                "N": n,
                "L": L,
                "negatives": neg,
                "base": pair["base"],
                "lever": pair["lever"],
                "base_epoch_s": base_s,
                "lever_epoch_s": lever_s,
                "time_ratio": lever_s / base_s,
                "row_ratio": row_ratio,
                "bar": 1.05 * row_ratio,
                "per_row_ratio": (lever_s / pair["lever"]["rows"]) / (base_s / pair["base"]["rows"]),
                "meets_bar": lever_s <= 1.05 * row_ratio * base_s,
            }
        )
        save()

    hdr = (
        f"{'case':<16} {'N':>6} {'L':>7} {'base s/ep':>9} {'LEVER s/ep':>10} {'ratio':>6} {'bar':>6} "
        f"{'per-row':>7} {'ok':>3} {'RSS base/LEVER MB':>18}"
    )
    print(hdr)
    for r in results:
        rss = f"{r['base']['peak_rss_mb']:.0f}/{r['lever']['peak_rss_mb']:.0f}"
        print(
            f"{r['case']:<16} {r['N']:>6} {r['L']:>7} {r['base_epoch_s']:>9.2f} "
            f"{r['lever_epoch_s']:>10.2f} {r['time_ratio']:>6.2f} {r['bar']:>6.2f} "
            f"{r['per_row_ratio']:>7.2f} {'yes' if r['meets_bar'] else 'NO':>3} {rss:>18}"
        )
    save()  # written after every case too: a long run that is stopped keeps what it measured
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

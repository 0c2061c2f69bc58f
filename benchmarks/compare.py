"""One run, side by side: every speed ratio the project promises, from the benchmark scripts beside this one.

Runs, one after another in child processes (each writes its own JSON), then prints one table of ratios:

* ``knn.py``: our exact kNN (faiss, chunked, k = 100) vs a bare BLAS matmul of the same shapes (bar ≤ 1.5×),
  and vs hnswlib (the official LEVER code's kNN) at equal recall (and our faiss HNSW vs hnswlib);
* ``teacher.py``: our teacher training step vs sentence-transformers' fit loop on the same pairs (bar ≥ 1.0×);
* ``trainer.py``: the built-in OvA trainer's +LEVER / base epoch time (bar 1.05 × (N + L)/N).

    python benchmarks/compare.py [--quick] [--threads 2]

Writes benchmarks/results/compare.json (the ratios plus each script's own JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def run(script: str, args: list[str], out: Path, reuse: bool = False) -> dict[str, Any]:
    if reuse and out.is_file():
        print(f"reusing {out}", flush=True)
        return json.loads(out.read_text())
    cmd = [sys.executable, str(ROOT / "benchmarks" / script), *args, "--out", str(out)]
    print(f"$ {' '.join(cmd[1:])}", flush=True)
    t = time.perf_counter()
    r = subprocess.run(cmd, text=True, capture_output=True)
    if r.returncode != 0:
        print(r.stdout[-2000:], r.stderr[-4000:], sep="\n", file=sys.stderr)
        raise SystemExit(f"{script} failed (exit {r.returncode})")
    tail = "\n".join(r.stdout.strip().splitlines()[-12:])
    print(f"{tail}\n  ({time.perf_counter() - t:.0f} s)\n", flush=True)
    return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small shapes (a few minutes in all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--knn-shapes", default="", help="passed to knn.py --shapes (default: 8000x30000x384)")
    ap.add_argument("--reuse", default="", help="comma-separated parts (knn, teacher, trainer) to take from "
                    "their last JSON instead of running again")
    ap.add_argument("--out", default=str(RESULTS / "compare.json"))
    args = ap.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    shapes = args.knn_shapes or ("2000x8000x128" if args.quick else "8000x30000x384")
    knn = run("knn.py", ["--shapes", shapes, "--repeat", "1" if args.quick else "2", "--threads", str(args.threads)],
              RESULTS / "compare_knn.json", "knn" in args.reuse)
    teacher = run("teacher.py", ["--steps", "8" if args.quick else "16", "--repeats", "2", "--encode-n",
                                 "100" if args.quick else "300", "--threads", str(args.threads)],
                  RESULTS / "compare_teacher.json", "teacher" in args.reuse)
    trainer = run("trainer.py", ["--quick", "--epochs", "1" if args.quick else "2", "--threads", "1",
                                 "--cases", "L2K-full,L2K-shortlist" if args.quick else ""],
                  RESULTS / "compare_trainer.json", "trainer" in args.reuse)

    rows: list[tuple[str, float | None, str, bool | None]] = []
    for r in knn["results"]:
        shape = f"{r['queries']}x{r['base']}x{r['dim']} k{r['k']}"
        ratio = r["ratio_faiss_vs_numpy_matmul"]
        rows.append((f"exact kNN / numpy matmul, {shape}", ratio, "<= 1.5", ratio <= 1.5))
        rows.append((f"exact kNN / numpy matmul+top-k, {shape}", r["ratio_faiss_vs_numpy_matmul_topk"], "", None))
        for t in (r.get("equal_recall") or {}).get("targets", []):
            if t.get("ratio_exact_vs_hnswlib") is not None:
                rows.append((f"exact kNN (recall 1) / hnswlib at recall >= {t['target_recall']} "
                             f"(ef {t['hnswlib']['ef']})", t["ratio_exact_vs_hnswlib"], "", None))
            if t.get("ratio_faiss_hnsw_vs_hnswlib") is not None:
                rows.append((f"our faiss HNSW / hnswlib, both at recall >= {t['target_recall']}",
                             t["ratio_faiss_hnsw_vs_hnswlib"], "", None))
            elif t.get("hnswlib") is None:
                rows.append((f"hnswlib did not reach recall {t['target_recall']} (ef <= 1024)", None, "", None))
    sp = teacher["speedup"]
    rows.append((f"teacher step: ours / sentence-transformers fit (docs/s, batch {teacher['batch_size']})", sp,
                 ">= 1.0", sp >= 1.0))
    for r in trainer["results"]:
        rows.append((f"trainer epoch +LEVER / base, {r['case']} (N {r['N']}, L {r['L']})", round(r["time_ratio"], 3),
                     f"<= {r['bar']:.2f}", bool(r["meets_bar"])))

    print(f"{'comparison':<78}{'ratio':>8}{'bar':>10}{'ok':>5}")
    for name, ratio, bar, ok in rows:
        print(f"{name:<78}{'-' if ratio is None else f'{ratio:.2f}':>8}{bar:>10}"
              f"{'' if ok is None else ('yes' if ok else 'NO'):>5}")
    from lever_plugins.runs import write_json

    write_json(args.out, {
        "quick": args.quick, "threads": args.threads, "seconds": round(time.perf_counter() - t0, 1),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_average": os.getloadavg()},
        "ratios": [{"comparison": n, "ratio": r, "bar": b, "meets_bar": ok} for n, r, b, ok in rows],
        "knn": knn, "teacher": teacher, "trainer": trainer,
    })
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

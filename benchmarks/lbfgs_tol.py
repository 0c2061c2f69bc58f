"""How early can the L-BFGS head stop? Hold-out metrics against iterations, for both A/B arms.

Runs the configured L-BFGS head (``[trainer] solver = "lbfgs"``) on a train hold-out (``--holdout``,
default 10 %; the test split is never read), with ``tol = 0`` and ``max_iter`` iterations, pausing
every ``--every`` iterations to score the hold-out. Prints, per arm, the objective and metrics at each
checkpoint, and for each candidate tolerance the iteration where ``tol`` would stop the solver (the end of
the first 10-iteration window whose objective drop is below ``tol`` × the decrease achieved so far) with
the metrics there minus the final ones.
Writes the table to ``--out`` (JSON). The checkpoints leave the solver's path unchanged.

    python benchmarks/lbfgs_tol.py --data data/debtags-bookworm --config configs/debtags.toml \\
        --out runs/bench-lbfgs-tol.json
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--holdout", type=float, default=0.1)
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--arms", default="base,lever")
    ap.add_argument("--tols", default="2e-2,1e-2,5e-3,1e-3,1e-4")
    ap.add_argument("--run-dir", default="", help="where the teacher/soft-label stages are cached")
    args = ap.parse_args()

    from lever_plugins import config as cfgmod
    from lever_plugins import stages as pl
    from lever_plugins.metrics import evaluate
    from lever_plugins.runs import Run
    from lever_plugins.trainer import ova
    from lever_plugins.trainer.lbfgs import train_lbfgs

    cfg = cfgmod.load(args.config, {"data": {"path": args.data, "holdout": args.holdout}, "trainer": {"tol": 0.0}})
    ds = pl.load_data(cfg)
    sig = pl.data_signature(ds)
    feats = pl.features(ds, cfg)
    ek = pl.eval_kwargs(ds, cfg)
    keys = ("P@1", "P@3", "P@5", "PSP@1", "PSP@5", "C@5")
    tols = [float(t) for t in args.tols.split(",")]
    report: dict = {"config": args.config, "holdout": args.holdout, "every": args.every, "arms": {}}
    run_dir = Path(args.run_dir or Path(args.out).with_suffix(".run"))
    with Run(run_dir) as run:
        for arm in args.arms.split(","):
            x, y, _ = pl.arm_inputs(run, ds, cfg, sig, feats, arm == "lever")
            xs = pl.arm_sparse(feats, y.shape[0])
            xs_trn = sp.csr_matrix(xs[0], dtype=np.float32) if xs else None
            xs_tst = xs[1] if xs else None
            y = sp.csr_matrix(y, dtype=np.float32)
            _, b0 = ova._init_head(np.asarray(x, np.float32), y)
            points: list[dict] = []
            t0 = time.perf_counter()

            def on_checkpoint(it: int, arrays: dict, points: list = points, arm: str = arm, t0: float = t0,
                              xs_tst: Any = xs_tst) -> None:
                model = ova.OvAModel(arrays["weight"], arrays["bias"], None, "full", arrays["sparse_weight"])
                s = model.topk(feats["tst"], cfg.trainer.top_k, x_sparse=xs_tst)
                m = evaluate(s, ds.y_tst, name=ds.name, **ek)
                points.append({"iteration": it, "seconds": round(time.perf_counter() - t0, 1),
                               **{k: 100 * m[k] for k in keys}})  # fmt: skip
                print(f"[{arm}] it {it:4d}  {time.perf_counter() - t0:7.1f}s  "
                      + "  ".join(f"{k} {100 * m[k]:.2f}" for k in keys), flush=True)  # fmt: skip

            tcfg = replace(cfg.trainer, tol=0.0)
            trace: list[float] = []
            c0 = time.process_time()
            _, stats = train_lbfgs(np.asarray(x, np.float32), y, tcfg, ova._default_loss(tcfg), b0, x_sparse=xs_trn,
                                   checkpoint_every=args.every, on_checkpoint=on_checkpoint, trace=trace)  # fmt: skip
            stats["cpu_seconds_total"] = round(time.process_time() - c0, 1)
            final = points[-1]
            # Where would tol stop? The solver's rule (lbfgs.TOL_WINDOW): after each window of iterations, stop
            # when the window lowered the best objective by less than tol × the decrease achieved so far.
            # Iterations are mapped to evaluations at the run's mean evaluations per iteration (line-search
            # trial points are in the trace), so a stop is placed to within a few evaluations.
            from lever_plugins.trainer.lbfgs import TOL_WINDOW

            per_it = len(trace) / max(stats["iterations"], 1)
            stops = {}
            for tol in tols:
                prev, stop_it = float("inf"), stats["iterations"]
                for it in range(TOL_WINDOW, stats["iterations"] + 1, TOL_WINDOW):
                    best = min(trace[: max(1, int(round(it * per_it)))])
                    if prev - best < tol * (trace[0] - best):
                        stop_it = it
                        break
                    prev = best
                near = min((p for p in points if p["iteration"] >= stop_it), key=lambda p: p["iteration"],
                           default=final)  # fmt: skip
                stops[str(tol)] = {"iteration": stop_it, "checkpoint": near["iteration"],
                                   "delta": {k: round(near[k] - final[k], 3) for k in keys}}  # fmt: skip
                print(f"[{arm}] tol {tol:g}: stops at iteration {stop_it}; at checkpoint "
                      f"{near['iteration']}: " + "  ".join(f"{k} {near[k] - final[k]:+.2f}" for k in keys))
            report["arms"][arm] = {"points": points, "stats": stats, "trace": trace, "stops": stops}
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

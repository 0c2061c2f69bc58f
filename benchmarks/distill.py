"""Cost of dense distillation and of the head teacher (issue bar: +LEVER training ≤ 2× the base's; the
head teacher ≤ the time of encoding the texts once).

On a slice of the bundled debtags set (frozen MiniLM features from the embedding cache), for each trainer
setting: seconds to train the base (N binary rows), +LEVER sparse (N + L rows, kNN soft labels) and +LEVER
dense (N + L rows, the teacher's score on every pair); then the head teacher's fit (all folds) against
the measured time to encode the same texts once. Prints a table and writes JSON.

    python benchmarks/distill.py [--max-train 4000] [--folds 5] [--out benchmarks/results/distill.json]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT / "data" / "debtags-bookworm"))
    ap.add_argument("--max-train", type=int, default=4000)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--encode-sample", type=int, default=256, help="texts encoded (uncached) to time encoding")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "distill.json"))
    a = ap.parse_args()

    import torch

    from lever_plugins import config as cfgmod
    from lever_plugins import stages
    from lever_plugins.runs import write_json
    from lever_plugins.soft_labels.augment import build_soft_labels
    from lever_plugins.soft_labels.blend import blend
    from lever_plugins.soft_labels.dense import DenseTargets
    from lever_plugins.teacher.encoder import Encoder
    from lever_plugins.teacher.head import HeadTeacher, normalize
    from lever_plugins.trainer import ova

    cfg = cfgmod.load(None, {"data": {"path": a.data, "max_train": a.max_train}, "encoder": {"max_len": 64},
                             "teacher": {"train": False, "max_len": 64}})  # fmt: skip
    ds = stages.load_data(cfg)  # load_data applies the hold-out and slices (once)
    feats = stages.features(ds, cfg)
    y = ds.binary_train()
    N, L = y.shape
    x = np.vstack([feats["trn"], feats["lbl"]])
    lbl = normalize(feats["lbl"])
    sl = build_soft_labels(y, normalize(feats["trn"]), lbl, cfg.soft_labels)
    sparse_t = blend(sl.y_aug, sl.soft, 0.5)
    dense = DenseTargets(hard=sl.y_aug, rows=normalize(x), labels=lbl, lam=0.5)
    rows = []
    settings = {
        "lbfgs full": {"negatives": "full", "solver": "lbfgs", "max_iter": 100},
        "adam full": {"negatives": "full", "epochs": 10},
        "adam shortlist": {"negatives": "shortlist", "epochs": 10},
    }
    for name, over in settings.items():
        tc = cfgmod.TrainerConfig(**over)
        secs = {}
        for arm, (xx, tt, dd) in {"base": (feats["trn"], y, None), "lever sparse": (x, sparse_t, None),
                                  "lever dense": (x, sl.y_aug, dense)}.items():  # fmt: skip
            t0 = time.perf_counter()
            ova.train(xx, sp.csr_matrix(tt, dtype=np.float32), tc, 13, progress=False, dense=dd)
            secs[arm] = time.perf_counter() - t0
        rows.append({"trainer": name, **{k: round(v, 2) for k, v in secs.items()},
                     "dense / base": round(secs["lever dense"] / secs["base"], 2)})  # fmt: skip

    enc = Encoder(cfg.encoder.model, 64, device="cpu")
    sample = [f"{t} {i}" for i, t in enumerate(ds.trn_texts[: a.encode_sample])]  # uncached variants
    t0 = time.perf_counter()
    enc.encode(sample, batch_size=64, progress=False)
    per_text = (time.perf_counter() - t0) / len(sample)
    encode_all = per_text * (N + L)
    t0 = time.perf_counter()
    head = HeadTeacher(cfg.teacher, seed=13, progress=False, folds=a.folds, epochs=a.epochs)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        head.fit(ds.trn_texts, ds.lbl_texts, y, tmp, resume=False)
    head_s = time.perf_counter() - t0
    result = {
        "data": Path(a.data).name, "rows": N, "labels": L, "torch_threads": torch.get_num_threads(),
        "trainers": rows,
        "head": {"folds": a.folds, "epochs": a.epochs, "seconds": round(head_s, 2),
                 "encode_once_seconds": round(encode_all, 2), "ratio": round(head_s / encode_all, 3)},
    }  # fmt: skip
    print(f"{N} documents, {L} labels, {torch.get_num_threads()} threads")
    print("| trainer | base s | +LEVER sparse s | +LEVER dense s | dense / base |\n|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['trainer']} | {r['base']} | {r['lever sparse']} | {r['lever dense']} | {r['dense / base']} |")
    h = result["head"]
    print(f"\nhead teacher ({a.folds} folds + 1, {a.epochs} epochs): {h['seconds']} s; encoding the "
          f"{N + L} texts once: {h['encode_once_seconds']} s; ratio {h['ratio']}")  # fmt: skip
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    write_json(a.out, result)


if __name__ == "__main__":
    main()

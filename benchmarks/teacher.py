"""Benchmark: the Siamese teacher's training steps against sentence-transformers' own fit loop.

Same model, batch size, sequence length, device and the SAME (label, document) pairs in the same batch
order: our fit runs first and records the documents it samples for each label batch; sentence-transformers'
``SentenceTransformer.old_fit`` (its own pre-v3 training loop, which needs no ``datasets`` package) then
trains on exactly those pairs with MultipleNegativesRankingLoss (in-batch negatives, the comparable loss).

Step throughput (docs/s) = batch size / median step time, warm-up steps excluded:
* ours: the time of each optimiser step (sampling, tensors, forward, loss, backward, AdamW, bank update);
* theirs: the time between the starts of consecutive loss forwards (collate, forward, backward, clip, AdamW).
Wall time of the whole call is reported too (ours includes tokenising the corpus, clustering, a checkpoint
per epoch and the final save_pretrained).

Also measures encoding speed (texts/s) at max_len 32 and 64: our Encoder vs SentenceTransformer.encode.

Usage: ``python benchmarks/teacher.py [--steps 24] [--batch-size 32] [--max-len 32] [--threads N]``.
Writes benchmarks/results/teacher.json.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "debtags-bookworm"


def load_debtags() -> tuple[list[str], list[str], Any]:
    try:
        from lever_plugins.data import load_dataset
    except ImportError:  # the data package not there yet: read the json.gz directly
        load_dataset = None
    if load_dataset is not None:
        ds = load_dataset(DATA, text="title+content")
        return ds.trn_texts, ds.lbl_texts, ds.y_trn
    import gzip
    import json

    import numpy as np
    import scipy.sparse as sp

    def rows(name: str) -> list[dict]:
        with gzip.open(DATA / name, "rt", encoding="utf-8") as fh:
            return [json.loads(line) for line in fh]

    trn, lbl = rows("trn.json.gz"), rows("lbl.json.gz")
    texts = [f"{r['title']} {r.get('content', '')}".strip() for r in trn]
    lbls = [f"{r['title']} {r.get('content', '')}".strip() for r in lbl]
    ind = [r["target_ind"] for r in trn]
    indptr = np.cumsum([0] + [len(i) for i in ind])
    y = sp.csr_matrix((np.ones(indptr[-1], np.float32), np.concatenate(ind), indptr), shape=(len(trn), len(lbl)))
    return texts, lbls, y


def steady(step_times: list[float], batch: int, warmup: int) -> dict[str, float]:
    t = step_times[warmup:] or step_times
    med = statistics.median(t)
    return {"steps_timed": len(t), "median_step_s": round(med, 4), "mean_step_s": round(statistics.fmean(t), 4),
            "min_step_s": round(min(t), 4), "docs_per_s": round(batch / med, 2),
            "docs_per_s_best_step": round(batch / min(t), 2)}


def run_ours(docs, lbls, y, args, workdir: Path) -> tuple[dict[str, Any], list[tuple[int, int]]]:
    import numpy as np

    from lever_plugins.config import TeacherConfig
    from lever_plugins.teacher import siamese

    n_items = int((np.diff(y.tocsc().indptr) > 0).sum())
    per_epoch = max(1, min(args.steps, n_items // args.batch_size))
    epochs = math.ceil(args.steps / per_epoch)
    # Keep per_epoch full batches of labels: each epoch is exactly per_epoch steps.
    keep = np.flatnonzero(np.diff(y.tocsc().indptr) > 0)[: per_epoch * args.batch_size]
    y_sub = y.tocsc()[:, keep].tocsr()
    lbl_sub = [lbls[i] for i in keep]
    cfg = TeacherConfig(model=args.model, max_len=args.max_len, epochs=epochs, batch_size=args.batch_size,
                        lr=args.lr, warmup_steps=args.warmup, loss="triplet", cluster_start=1,
                        cluster_size=8, amp=True, device=args.device)
    pairs: list[tuple[int, int]] = []
    orig = siamese.sample_positives

    def recording(ycsc, lb, rng):
        d = orig(ycsc, lb, rng)
        pairs.extend(zip(lb.tolist(), d.tolist(), strict=True))
        return d

    siamese.sample_positives = recording
    try:
        t = siamese.SiameseTeacher(cfg, seed=13, progress=False)
        _ = t.encoder  # load outside the timed call, as theirs is loaded outside fit
        t0 = time.perf_counter()
        stats = t.fit(docs, lbl_sub, y_sub, workdir, resume=False)
        wall = time.perf_counter() - t0
    finally:
        siamese.sample_positives = orig
    res = steady(t.step_times, args.batch_size, args.warmup_steps_excluded)
    res.update(steps=stats["steps"], wall_s=round(wall, 2), final_loss=stats["loss"],
               device=str(t.encoder.device))
    return res, [(keep[l], d) for l, d in pairs]


def run_theirs(docs, lbls, pairs, args) -> dict[str, Any]:
    from sentence_transformers import InputExample, SentenceTransformer, losses
    from torch.utils.data import DataLoader

    from lever_plugins.teacher.encoder import resolve_device, resolve_model

    dev = resolve_device(args.device)
    model = SentenceTransformer(resolve_model(args.model), device=str(dev))
    model.max_seq_length = args.max_len
    examples = [InputExample(texts=[lbls[l], docs[d]]) for l, d in pairs]
    loader = DataLoader(examples, batch_size=args.batch_size, shuffle=False)
    starts: list[float] = []

    class TimedMNRL(losses.MultipleNegativesRankingLoss):
        def forward(self, *a, **k):
            starts.append(time.perf_counter())
            return super().forward(*a, **k)

    loss = TimedMNRL(model)
    t0 = time.perf_counter()
    model.old_fit(train_objectives=[(loader, loss)], epochs=1, warmup_steps=args.warmup,
                  optimizer_params={"lr": args.lr}, show_progress_bar=False, use_amp=dev.type == "cuda")
    end = time.perf_counter()
    wall = end - t0
    step_times = [b - a for a, b in zip(starts, starts[1:] + [end], strict=True)]
    res = steady(step_times, args.batch_size, args.warmup_steps_excluded)
    res.update(steps=len(starts), wall_s=round(wall, 2), device=str(dev))
    return res


def encode_speed(texts: list[str], max_len: int, args) -> dict[str, Any]:
    from sentence_transformers import SentenceTransformer

    from lever_plugins.teacher.encoder import Encoder, resolve_model

    enc = Encoder(args.model, max_len, device=args.device)
    enc.encode(texts[:64], progress=False)  # warm-up
    t0 = time.perf_counter()
    ours = enc.encode(texts, batch_size=128, progress=False)
    t_ours = time.perf_counter() - t0
    st = SentenceTransformer(resolve_model(args.model), device=str(enc.device))
    st.max_seq_length = max_len
    st.encode(texts[:64], batch_size=128)
    t0 = time.perf_counter()
    theirs = st.encode(texts, batch_size=128, normalize_embeddings=True, convert_to_numpy=True)
    t_theirs = time.perf_counter() - t0
    diff = float(abs(ours - theirs).max())
    return {"max_len": max_len, "texts": len(texts), "ours_texts_per_s": round(len(texts) / t_ours, 1),
            "st_texts_per_s": round(len(texts) / t_theirs, 1), "max_abs_diff": diff}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-len", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--warmup-steps-excluded", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2, help="alternate ours/theirs this many times; best kept")
    ap.add_argument("--encode-n", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "teacher.json"))
    args = ap.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from lever_plugins.runs import write_json

    docs, lbls, y = load_debtags()
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            ours, pairs = run_ours(docs, lbls, y, args, Path(tmp) / f"ours{r}")
            theirs = run_theirs(docs, lbls, pairs, args)
            rounds.append({"ours": ours, "theirs": theirs})
            print(f"round {r + 1}: ours {ours['docs_per_s']} docs/s (best step {ours['docs_per_s_best_step']}), "
                  f"theirs {theirs['docs_per_s']} docs/s (best step {theirs['docs_per_s_best_step']})",
                  file=sys.stderr)
    best_ours = max((x["ours"] for x in rounds), key=lambda d: d["docs_per_s"])
    best_theirs = max((x["theirs"] for x in rounds), key=lambda d: d["docs_per_s"])
    speed = [encode_speed(docs[: args.encode_n], m, args) for m in (32, 64)]
    result = {
        "what": "teacher training step throughput, ours vs sentence-transformers old_fit + MNRL",
        "model": args.model, "batch_size": args.batch_size, "max_len": args.max_len, "steps": args.steps,
        "lr": args.lr, "threads": torch.get_num_threads(), "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "data": "debtags-bookworm train (title+content)", "rounds": rounds,
        "ours": best_ours, "theirs": best_theirs,
        "speedup": round(best_ours["docs_per_s"] / best_theirs["docs_per_s"], 3),
        "encode": speed,
    }
    write_json(args.out, result)
    print(f"\nteacher training, {args.model}, batch {args.batch_size}, max_len {args.max_len}, "
          f"device {best_ours['device']}, {result['threads']} threads")
    print(f"{'':24}{'docs/s':>10}{'median step s':>15}{'steps':>7}{'wall s':>9}")
    for name, r in (("ours (SiameseTeacher)", best_ours), ("sentence-transformers", best_theirs)):
        print(f"{name:24}{r['docs_per_s']:>10}{r['median_step_s']:>15}{r['steps']:>7}{r['wall_s']:>9}")
    print(f"speed-up ours/theirs: {result['speedup']}x")
    print(f"\n{'encode':10}{'ours texts/s':>14}{'ST texts/s':>12}{'max |diff|':>12}")
    for s in speed:
        print(f"max_len {s['max_len']:<3}{s['ours_texts_per_s']:>13}{s['st_texts_per_s']:>12}"
              f"{s['max_abs_diff']:>12.2e}")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

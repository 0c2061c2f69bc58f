"""One prepared check of every CUDA path (issue 19, item 4); ``benchmarks/gpu_check.sh`` installs and calls it.

Steps, each timed, each failure caught and recorded (the next step still runs), results written to one
JSON after every step (so a run stopped at its time limit still reports what it did):

1. ``env``            — torch / CUDA / package versions, the GPU's name and memory.
2. ``teacher_amp``    — the teacher: ``Encoder.encode`` throughput (docs/s) on the device with AMP against
                        the same model on the CPU (the "CPU figure", measured in the same run), and one
                        epoch of ``SiameseTeacher.fit`` (AMP on CUDA) on a debtags slice (docs/s).
3. ``knn_exact``      — exact kNN (``knn_search``, index "flat": GEMM + top-k) at N × N, d = 384
                        (N = 10^5 on a GPU) against a bare torch matmul of the same shapes on the device.
4. ``trainer_*``      — ``lever ab`` with the built-in trainer: L-BFGS (full), SGD with shortlist negatives,
                        and one epoch of encoder fine-tuning (bf16 autocast on CUDA); time, device, metrics.
5. ``renee_backward`` — the Renée patch's backward (``tests/renee_checks.soft_backward``) against autograd
                        on the device, fp32 and fp16 (``--fp16xfc``): relative errors of loss and gradients.
6. ``elias_ab``, ``cascadexml_ab`` — ``lever ab --adapter`` on a debtags slice, base vs +LEVER, one epoch,
                        on the real upstream from ``.gpu/upstream/<name>`` (the stand-in when absent, said
                        so in the result), ``LEVER_PROBE_DIR`` set: the check passes only when every +LEVER
                        rank fed soft (0 < t < 1) targets to its loss on the device and base ranks binary.

``--cpu``: the same steps at toy sizes on the CPU (stand-ins for the upstreams), so the script is tested
before device time is spent. Exit code 0 when every step that ran passed, 1 otherwise.

    python benchmarks/gpu_check.py [--cpu] [--out FILE] [--only step,step] [--budget 450]
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEBTAGS = ROOT / "data" / "debtags-bookworm"
GPU_DIR = ROOT / ".gpu"  # git-ignored: upstream checkouts, wheels, tokenizer (benchmarks/gpu_prepare.sh)
STANDINS = ROOT / "tests" / "standins"

SIZES = {
    # name: (gpu, cpu)
    "encode_docs": (20000, 300),
    "encode_cpu_docs": (2000, 300),
    "teacher_docs": (4000, 120),
    "knn_n": (100_000, 3000),
    "ab_train": (2000, 80),
    "ab_test": (500, 30),
    "ab_labels": (256, 40),
    "upstream_train": (800, 60),
    "upstream_test": (200, 20),
    "upstream_labels": (128, 112),  # ELIAS: beam 8 x (labels / 8 clusters) >= its eval_topk 100
}


class Ctx:
    def __init__(self, cpu: bool, work: Path, budget: float):
        self.cpu = cpu
        self.work = work
        self.t0 = time.perf_counter()
        self.budget = budget

    def size(self, name: str) -> int:
        gpu, cpu = SIZES[name]
        return cpu if self.cpu else gpu

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.t0)

    @property
    def device(self) -> str:
        return "cpu" if self.cpu else "cuda"


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------------------ data


def debtags_slice(dst: Path, n_trn: int, n_tst: int, n_lbl: int) -> Path:
    """The first debtags documents restricted to the ``n_lbl`` most frequent labels (renumbered)."""

    def read(name: str, n: int | None = None) -> list[dict]:
        with gzip.open(DEBTAGS / name, "rt", encoding="utf-8") as fh:
            return [json.loads(line) for _, line in zip(range(n or 10**9), fh, strict=False)]

    trn, tst, lbl = read("trn.json.gz", 4 * n_trn), read("tst.json.gz", 4 * n_tst), read("lbl.json.gz")
    keep = sorted(j for j, _ in Counter(j for r in trn for j in r["target_ind"]).most_common(n_lbl))
    new = {j: i for i, j in enumerate(keep)}

    def remap(rows: list[dict], n: int) -> list[dict]:
        out = []
        for r in rows:
            pairs = [(new[j], v) for j, v in zip(r["target_ind"], r["target_rel"], strict=True) if j in new]
            if pairs:
                out.append({**r, "target_ind": [j for j, _ in pairs], "target_rel": [v for _, v in pairs]})
        return out[:n]

    dst.mkdir(parents=True, exist_ok=True)
    for name, rows in (("trn.json.gz", remap(trn, n_trn)), ("tst.json.gz", remap(tst, n_tst)),
                       ("lbl.json.gz", [lbl[j] for j in keep])):  # fmt: skip
        with gzip.open(dst / name, "wt", encoding="utf-8") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in rows)
    return dst


def texts(n: int) -> list[str]:
    out: list[str] = []
    with gzip.open(DEBTAGS / "trn.json.gz", "rt", encoding="utf-8") as fh:
        for line in fh:
            r = json.loads(line)
            out.append(f"{r.get('title', '')} {r.get('content', '')}")
            if len(out) >= n:
                break
    while len(out) < n:
        out += out[: n - len(out)]
    return out


def tokenizer_dir() -> str:
    """The MiniLM (BERT-uncased) tokenizer: ``.gpu/tok`` (carried) or the installed default model."""
    if (GPU_DIR / "tok" / "tokenizer_config.json").is_file():
        return str(GPU_DIR / "tok")
    from lever_plugins.teacher.encoder import resolve_model

    return resolve_model("default")


def random_bert(path: Path, hidden: int, layers: int, heads: int, inter: int, max_pos: int = 128) -> Path:
    """A random BERT with the MiniLM tokenizer (the device machine has no model weights and no network;
    throughput does not depend on the weights' values)."""
    if (path / "config.json").is_file():
        return path
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    tok = AutoTokenizer.from_pretrained(tokenizer_dir())
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                     intermediate_size=inter, max_position_embeddings=max_pos)  # fmt: skip
    BertModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def minilm(ctx: Ctx) -> Path:
    """MiniLM-L6's shape (384 wide, 6 layers) on a GPU; a 2-layer 32-wide model in --cpu mode."""
    if ctx.cpu:
        return random_bert(ctx.work / "bert-toy", 32, 2, 2, 64)
    return random_bert(ctx.work / "bert-minilm", 384, 6, 12, 1536)


def lever_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    full = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            **(env or {})}  # fmt: skip
    return subprocess.run([sys.executable, "-m", "lever_cli", *args], capture_output=True, text=True, env=full,
                          timeout=max(10.0, timeout))  # fmt: skip


def _tail(r: subprocess.CompletedProcess, n: int = 1500) -> str:
    return (r.stderr or "")[-n:] + (r.stdout or "")[-300:]


def _metrics(run: Path) -> dict[str, Any]:
    out = {}
    for arm in ("base", "lever"):
        p = run / arm / "metrics.json"
        if p.is_file():
            m = json.loads(p.read_text())
            out[arm] = {k: round(float(m[k]), 4) for k in ("P@1", "P@5", "PSP@1", "PSP@5") if k in m}
    return out


# ----------------------------------------------------------------------------------------- steps


def step_env(ctx: Ctx) -> dict[str, Any]:
    import importlib.metadata as md

    import torch

    out: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                           "cuda_available": torch.cuda.is_available()}  # fmt: skip
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        out.update(gpu=p.name, gpu_memory_gb=round(p.total_memory / 2**30, 1), cuda=torch.version.cuda,
                   bf16=torch.cuda.is_bf16_supported())  # fmt: skip
    elif not ctx.cpu:
        raise RuntimeError("no CUDA device visible to torch (run with --cpu for the CPU rehearsal)")
    for pkg in ("transformers", "accelerate", "sentence-transformers", "faiss-cpu", "faiss-gpu-cu12", "scipy",
                "numpy", "lever-plugins", "lever-elias", "lever-cascadexml", "lever-renee", "pyxclib", "nltk"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[pkg] = md.version(pkg)
    try:
        import faiss

        out["faiss_gpus"] = int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0
    except ImportError:
        out["faiss"] = "missing"
    return out


def step_teacher_amp(ctx: Ctx) -> dict[str, Any]:
    import torch

    from lever_plugins.config import TeacherConfig
    from lever_plugins.teacher.encoder import Encoder
    from lever_plugins.teacher.siamese import SiameseTeacher

    model = str(minilm(ctx))
    out: dict[str, Any] = {"model": "random BERT, MiniLM-L6 shape" if not ctx.cpu else "random toy BERT"}
    docs = texts(ctx.size("encode_docs"))
    enc = Encoder(model, 32, device=ctx.device)
    enc.encode(docs[:256], batch_size=256, progress=False)  # warm-up
    _sync()
    t = time.perf_counter()
    enc.encode(docs, batch_size=256, progress=False)
    _sync()
    out["encode_docs_per_s"] = round(len(docs) / (time.perf_counter() - t), 1)
    out["encode_device"] = str(enc.device) if hasattr(enc, "device") else ctx.device
    cpu_docs = docs[: ctx.size("encode_cpu_docs")]
    threads = torch.get_num_threads()
    enc_cpu = Encoder(model, 32, device="cpu")
    enc_cpu.encode(cpu_docs[:64], batch_size=256, progress=False)
    t = time.perf_counter()
    enc_cpu.encode(cpu_docs, batch_size=256, progress=False)
    out["encode_cpu_docs_per_s"] = round(len(cpu_docs) / (time.perf_counter() - t), 1)
    out["encode_cpu_threads"] = threads
    out["encode_speedup"] = round(out["encode_docs_per_s"] / out["encode_cpu_docs_per_s"], 2)

    n = ctx.size("teacher_docs")
    data = debtags_slice(ctx.work / "teacher-data", n, 10, 256 if not ctx.cpu else 40)
    from lever_plugins.data import load_dataset

    ds = load_dataset(data)
    cfg = TeacherConfig(model=model, epochs=1, batch_size=128 if not ctx.cpu else 16, max_len=32, amp=True,
                        device=ctx.device, warmup_steps=10, cluster_start=5)  # fmt: skip
    teacher = SiameseTeacher(cfg, seed=1, progress=False)
    _sync()
    t = time.perf_counter()
    stats = teacher.fit(ds.trn_texts, ds.lbl_texts, ds.y_trn, workdir=ctx.work / "teacher-run", resume=False)
    _sync()
    sec = time.perf_counter() - t
    out.update(teacher_epoch_seconds=round(sec, 2), teacher_docs=len(ds.trn_texts),
               teacher_docs_per_s=round(len(ds.trn_texts) / sec, 1),
               teacher_amp=bool(cfg.amp and ctx.device == "cuda"),
               teacher_stats={k: v for k, v in (stats or {}).items() if isinstance(v, (int, float, str))})  # fmt: skip
    return out


def step_knn_exact(ctx: Ctx) -> dict[str, Any]:
    import torch

    from lever_plugins.soft_labels.knn import knn_search

    n, d, k = ctx.size("knn_n"), 384, 100
    rng = np.random.default_rng(0)
    q = rng.standard_normal((n, d), dtype=np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    b = q[rng.permutation(n)].copy()
    dev = ctx.device

    def bare() -> float:
        qt, bt = torch.from_numpy(q).to(dev), torch.from_numpy(b).to(dev)
        _sync()
        t = time.perf_counter()
        step = 8192
        for s in range(0, n, step):
            (qt[s : s + step] @ bt.T).max()  # the GEMM, its result touched (no top-k)
        _sync()
        return time.perf_counter() - t

    bare()  # warm-up (CUDA context, cuBLAS)
    t_bare = bare()
    knn_search(q[:1000], b, k, index="flat", device="auto")  # warm-up
    _sync()
    t = time.perf_counter()
    res = knn_search(q, b, k, index="flat", device="auto")
    _sync()
    t_knn = time.perf_counter() - t
    ids = res[1] if isinstance(res, tuple) else res
    sample = rng.choice(n, 50, replace=False)
    truth = np.argsort(-(q[sample] @ b.T), axis=1)[:, :k]
    hits = np.mean([len(set(truth[i]) & set(np.asarray(ids)[s])) / k for i, s in enumerate(sample)])
    return {"n_queries": n, "n_base": n, "dim": d, "k": k, "knn_seconds": round(t_knn, 3),
            "bare_matmul_seconds": round(t_bare, 3), "ratio_to_bare_matmul": round(t_knn / t_bare, 2),
            "recall_vs_numpy": round(float(hits), 4)}  # fmt: skip


def _ab_config(path: Path, model: Path, extra: str) -> Path:
    path.write_text(
        f'[encoder]\nmodel = "{model}"\nmax_len = 32\n'
        f'[teacher]\nmodel = "{model}"\ntrain = false\nmax_len = 32\n'
        "[soft_labels]\ntau_l = 3\ntau_d = 4\nthreshold = 0.5\n[eval]\nbootstrap = 20\n" + extra
    )
    return path


def _trainer_step(ctx: Ctx, name: str, extra: str) -> dict[str, Any]:
    model = minilm(ctx)
    data = debtags_slice(ctx.work / "ab-data", ctx.size("ab_train"), ctx.size("ab_test"), ctx.size("ab_labels"))
    cfg = _ab_config(ctx.work / f"{name}.toml", model, extra)
    run = ctx.work / f"run-{name}"
    t = time.perf_counter()
    r = lever_cli("ab", "--data", str(data), "--out", str(run), "--config", str(cfg),
                  env={"LEVER_CACHE_DIR": str(ctx.work / "cache")}, timeout=min(240, ctx.left()))  # fmt: skip
    out = {"seconds": round(time.perf_counter() - t, 1), "returncode": r.returncode, "metrics": _metrics(run)}
    if r.returncode != 0:
        raise RuntimeError(f"lever ab exited {r.returncode}: {_tail(r)}")
    manifest = run / "manifest.json"
    if manifest.is_file():
        stages = json.loads(manifest.read_text()).get("stages", {})
        out["stages"] = {k: {kk: v[kk] for kk in ("seconds", "device", "solver", "amp", "amp_dtype") if kk in v}
                         for k, v in stages.items() if isinstance(v, dict)}  # fmt: skip
    return out


def step_trainer_lbfgs(ctx: Ctx) -> dict[str, Any]:
    return _trainer_step(ctx, "lbfgs", '[trainer]\nsolver = "lbfgs"\nnegatives = "full"\nmax_iter = 50\n')


def step_trainer_shortlist(ctx: Ctx) -> dict[str, Any]:
    return _trainer_step(ctx, "shortlist", '[trainer]\nnegatives = "shortlist"\nepochs = 5\nshortlist_size = 50\n')


def step_trainer_finetune_bf16(ctx: Ctx) -> dict[str, Any]:
    return _trainer_step(ctx, "finetune", "[trainer]\nfinetune = true\nepochs = 1\nbatch_size = 64\n")


def step_renee_backward(ctx: Ctx) -> dict[str, Any]:
    import torch

    sys.path.insert(0, str(ROOT / "tests"))
    import renee_checks as rc

    from lever_plugins.wrap import patched

    real = GPU_DIR / "upstream" / "renee"
    use_real = (real / "dl_base.py").is_file() and not ctx.cpu  # --cpu: the stand-in, as for ELIAS/CascadeXML
    paths = [real, STANDINS / "pyxclib"] if use_real else [rc.STANDIN_RENEE, rc.STANDIN_XCLIB]
    out: dict[str, Any] = {"upstream": "real" if paths[0] == real else "standin", "device": ctx.device}

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        a, b = a.detach().float().cpu(), b.detach().float().cpu()
        return float((a - b).abs().max() / max(float(b.abs().max()), 1e-30))

    with rc.upstream_modules(*paths, stub_apex=True) as dl_base:
        for fp16 in (False, True):
            with patched(rc.loss_patches()):
                r = rc.soft_backward(dl_base, ctx.work / "renee", 2, False, fp16=fp16, device=ctx.device)
            scale = r["scale"] if fp16 else 1.0
            key = "fp16" if fp16 else "fp32"
            out[key] = {"loss_rel_err": abs(r["loss"] - r["ref_loss"]) / abs(r["ref_loss"]),
                        "grad_input_rel_err": rel(r["grad_input"], r["ref_grad_input"] * scale),
                        "grad_w_rel_err": rel(r["grad_w"], r["ref_grad_w"]),
                        "grad_w_dtype": str(r["grad_dtype"]), "in_place": len(set(r["grad_ptrs"])) == 1,
                        "amp_scale": scale, "tensor_device": str(r["grad_w"].device)}  # fmt: skip
    tol = {"fp32": 1e-4, "fp16": 3e-2}
    bad = [f"{k} {m} {out[k][m]:.2e}" for k in tol for m in ("loss_rel_err", "grad_input_rel_err", "grad_w_rel_err")
           if out[k][m] > tol[k]]  # fmt: skip
    if not ctx.cpu and not all(out[k]["tensor_device"].startswith("cuda") for k in tol):
        bad.append("the patched backward did not run on the GPU")
    if bad:
        raise AssertionError("Renée patched backward differs from autograd: " + "; ".join(bad))
    return out


def _probe_summary(folder: Path) -> dict[str, Any]:
    from lever_plugins.wrap import probe

    recs = probe.read(folder) if folder.is_dir() else []
    keys = ("world_size", "device", "calls", "nonbinary_calls", "nonbinary_values", "example")
    return {f"{r['arm']}.rank{r['rank']}": {k: r[k] for k in keys} for r in recs}


def _upstream_step(ctx: Ctx, name: str, options: str, extra_env: dict[str, str]) -> dict[str, Any]:
    real = GPU_DIR / "upstream" / name
    use_real = real.is_dir() and not ctx.cpu
    upstream = real if use_real else STANDINS / name
    n_lbl = ctx.size("upstream_labels")
    data = debtags_slice(ctx.work / f"{name}-data", ctx.size("upstream_train"), ctx.size("upstream_test"), n_lbl)
    model = minilm(ctx)
    cfg = ctx.work / f"{name}.toml"
    cfg.write_text(
        f'[teacher]\nmodel = "{model}"\ntrain = false\nmax_len = 32\n'
        "[soft_labels]\ntau_l = 3\ntau_d = 4\nthreshold = 0.5\n[eval]\nbootstrap = 20\n"
        f'[trainer]\nadapter = "{name}"\n{options}'
    )
    probe_dir = ctx.work / f"probe-{name}"
    run = ctx.work / f"run-{name}"
    env = {"LEVER_CACHE_DIR": str(ctx.work / "cache"), "LEVER_PROBE_DIR": str(probe_dir), "WANDB_MODE": "disabled",
           **extra_env}  # fmt: skip
    t = time.perf_counter()
    r = lever_cli("ab", "--data", str(data), "--out", str(run), "--config", str(cfg), "--upstream", str(upstream),
                  env=env, timeout=min(300, ctx.left()))  # fmt: skip
    out: dict[str, Any] = {"upstream": "real" if use_real else "standin", "seconds": round(time.perf_counter() - t, 1),
                           "returncode": r.returncode, "metrics": _metrics(run), "probe": _probe_summary(probe_dir)}
    if r.returncode != 0:
        raise RuntimeError(f"lever ab --adapter {name} exited {r.returncode}: {_tail(r)}")
    probes = out["probe"]
    lever_ranks = {k: v for k, v in probes.items() if k.startswith("lever.")}
    base_ranks = {k: v for k, v in probes.items() if k.startswith("base.")}
    problems = []
    if not lever_ranks:
        problems.append("no +LEVER probe: the patched loss never ran")
    for k, v in lever_ranks.items():
        if v["nonbinary_values"] <= 0:
            problems.append(f"{k}: no soft target reached the loss")
        if not ctx.cpu and not str(v["device"]).startswith("cuda"):
            problems.append(f"{k}: the loss ran on {v['device']}, not the GPU")
    for k, v in base_ranks.items():
        if v["nonbinary_values"] != 0:
            problems.append(f"{k}: the baseline saw soft targets")
    if problems:
        raise AssertionError("; ".join(problems))
    return out


def step_elias_ab(ctx: Ctx) -> dict[str, Any]:
    tok = tokenizer_dir() if ctx.cpu else str(_elias_encoder(ctx))
    epochs = 1 if not ctx.cpu else 2
    options = (f'[trainer.options]\ntf = "{_nobert(ctx, tok)}"\ntf_max_len = 32\nnum_val_points = 10\n'
               f"[trainer.options.elias]\nmax_leaf = {ctx.size('upstream_labels') // 8}\nbeam_size = 8\n"
               f"num_epochs = {epochs}\nbsz = 32\n")  # fmt: skip
    stubs = str(GPU_DIR / "stubs")
    env = {} if ctx.cpu else {"PYTHONPATH": os.pathsep.join(p for p in (os.environ.get("PYTHONPATH", ""), stubs) if p)}
    return _upstream_step(ctx, "elias", options, env)


def _nobert(ctx: Ctx, path: str) -> str:
    """ELIAS swaps in bert-base-uncased's tokenizer for any path containing 'bert': copy to a plain name."""
    if "bert" not in path.lower():
        return path
    import shutil

    dst = ctx.work / "elias-enc"
    if not dst.is_dir():
        shutil.copytree(path, dst)
    return str(dst)


def _elias_encoder(ctx: Ctx) -> Path:
    """ELIAS pools 768-d features: a 2-layer random BERT of that width (GPU run)."""
    return random_bert(ctx.work / "enc768", 768, 2, 12, 1024)


def step_cascadexml_ab(ctx: Ctx) -> dict[str, Any]:
    enc = random_bert(ctx.work / "bert12", 32 if ctx.cpu else 128, 12, 2, 64 if ctx.cpu else 256)
    epochs = 1 if ctx.cpu else 2  # the real upstream's three-phase LR schedule needs more than one epoch
    options = (f'[trainer.options]\nencoder = "{enc}"\nepochs = {epochs}\nbatch_size = {16 if ctx.cpu else 32}\n'
               "max_len = 32\n")  # fmt: skip
    return _upstream_step(ctx, "cascadexml", options, {})


STEPS = [
    ("env", step_env),
    ("teacher_amp", step_teacher_amp),
    ("knn_exact", step_knn_exact),
    ("trainer_lbfgs", step_trainer_lbfgs),
    ("trainer_shortlist", step_trainer_shortlist),
    ("trainer_finetune_bf16", step_trainer_finetune_bf16),
    ("renee_backward", step_renee_backward),
    ("elias_ab", step_elias_ab),
    ("cascadexml_ab", step_cascadexml_ab),
]


def _write(path: Path, obj: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu", action="store_true", help="toy sizes on the CPU (rehearsal)")
    ap.add_argument("--out", default="", help="results JSON (default benchmarks/results/gpu_check[-cpu].json)")
    ap.add_argument("--only", default="", help="comma-separated step names")
    ap.add_argument("--budget", type=float, default=450.0, help="seconds; steps are skipped once it is spent")
    ap.add_argument("--workdir", default="")
    args = ap.parse_args(argv)
    out_path = Path(args.out or ROOT / "benchmarks" / "results" / f"gpu_check{'-cpu' if args.cpu else ''}.json")
    only = {s for s in args.only.split(",") if s}
    unknown = only - {n for n, _ in STEPS}
    if unknown:
        ap.error(f"unknown steps: {', '.join(sorted(unknown))}")
    with contextlib.ExitStack() as stack:
        work = Path(args.workdir) if args.workdir else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        work.mkdir(parents=True, exist_ok=True)
        ctx = Ctx(args.cpu, work, args.budget)
        results: dict[str, Any] = {"mode": "cpu" if args.cpu else "gpu", "host": platform.node(),
                                   "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "steps": {}}
        for name, fn in STEPS:
            if only and name not in only:
                continue
            if ctx.left() < 20:
                results["steps"][name] = {"status": "skipped", "why": "time budget spent"}
                continue
            t = time.perf_counter()
            print(f"[gpu_check] {name} ...", flush=True)
            try:
                res = fn(ctx)
                results["steps"][name] = {"status": "ok", "seconds": round(time.perf_counter() - t, 1), **res}
            except Exception as exc:  # noqa: BLE001 (every failure is recorded; the next step runs)
                results["steps"][name] = {
                    "status": "fail", "seconds": round(time.perf_counter() - t, 1),
                    "error": f"{type(exc).__name__}: {str(exc)[:3000]}",
                    "traceback": traceback.format_exc()[-3000:],
                }  # fmt: skip
            st = results["steps"][name]
            print(f"[gpu_check] {name}: {st['status']} ({st.get('seconds', 0)} s)"
                  + (f" {st['error'][:400]}" if st["status"] == "fail" else ""), flush=True)  # fmt: skip
            results["total_seconds"] = round(time.perf_counter() - ctx.t0, 1)
            _write(out_path, results)
        _write(out_path, results)
    print(json.dumps({k: v.get("status") for k, v in results["steps"].items()}))
    print(f"wrote {out_path}")
    return 0 if all(v.get("status") in ("ok", "skipped") for v in results["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())

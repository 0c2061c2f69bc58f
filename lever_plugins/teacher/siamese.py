"""Siamese teacher: one shared encoder for documents and labels, label-wise mini-batches, hard negatives.

Training follows the LEVER/NGAME recipe (see notes/upstream-lever_official.md §2):

* items are labels with >= 1 training positive; each label in a batch gets one positive document drawn
  uniformly; Y[i, j] = 1 when the document drawn for label j is a positive of label i;
* scores S = label_emb @ doc_emb.T (cosines); loss on the diagonal positives against the hardest
  in-batch negatives (in-batch positives masked out);
* from epoch ``cluster_start`` labels are grouped by balanced clustering of an embedding bank (each
  label's latest training embedding), so a batch holds several clusters of similar labels;
* AdamW, linear warm-up then linear decay to 0, AMP on CUDA, an atomic checkpoint every epoch.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from lever_plugins import distributed as dist
from lever_plugins import events
from lever_plugins.config import TeacherConfig, config_hash, to_dict
from lever_plugins.errors import ConfigError, DataError
from lever_plugins.faults import crash_point
from lever_plugins.progress import progress as progress_bar
from lever_plugins.runs import atomic_path, write_json
from lever_plugins.teacher.clustering import balanced_clusters
from lever_plugins.teacher.encoder import Encoder
from lever_plugins.teacher.training import deterministic, linear_warmup_decay, save_model_dir

CHECKPOINT = "checkpoint.pt"
MODEL_DIR = "model"
STATS = "teacher_stats.json"
# Cosines live in [-1, 1]; the logistic loss needs a wider logit range to reach confident probabilities.
LOGISTIC_SCALE = 10.0


# ------------------------------------------------------------------------------------------- losses


def _hard_negatives(scores: torch.Tensor, pos_mask: torch.Tensor, k: int) -> torch.Tensor:
    """Top-k scores per row with positives excluded (-inf where a row has fewer than k negatives)."""
    k = min(k, scores.shape[1])
    return scores.masked_fill(pos_mask, float("-inf")).topk(k, dim=1).values


def triplet_ohnm_loss(scores: torch.Tensor, pos_mask: torch.Tensor, margin: float, k: int) -> torch.Tensor:
    """Triplet loss with online hard negatives.

    Row i: s_p = S[i, i]; s_n = the k largest S[i, j] with Y[i, j] = 0; loss = mean over all B·k
    entries of max(0, s_n − s_p + margin) (rows with fewer than k negatives contribute zeros).
    """
    neg = _hard_negatives(scores, pos_mask, k)
    pos = scores.diagonal().unsqueeze(1)
    return F.relu(neg - pos + margin).mean()


def logistic_ohnm_loss(
    scores: torch.Tensor, pos_mask: torch.Tensor, k: int, scale: float = LOGISTIC_SCALE
) -> torch.Tensor:
    """Logistic (binary cross-entropy) loss on scaled cosines, over the positive and hard negatives.

    Row i contributes the pairs (label i, its sampled document) with target 1 and (label i, each of its
    k hardest in-batch negatives) with target 0; the logit of a pair is ``scale · s``. The loss is the
    mean BCE over all these pairs: [Σ_i softplus(−scale·s_p,i) + Σ_i Σ_n softplus(scale·s_n)] / #pairs.
    """
    neg = _hard_negatives(scores, pos_mask, k)
    valid = torch.isfinite(neg)
    pos_term = F.softplus(-scale * scores.diagonal())
    neg_term = torch.where(valid, F.softplus(scale * neg.masked_fill(~valid, 0.0)), 0.0)
    return (pos_term.sum() + neg_term.sum()) / (pos_term.numel() + valid.sum())


# -------------------------------------------------------------------------------------------- batches


def sample_positives(ycsc: sp.csc_matrix, lbls: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One positive document per label, uniformly among the label's positives (labels need >= 1)."""
    lo = ycsc.indptr[lbls]
    return ycsc.indices[lo + rng.integers(0, ycsc.indptr[lbls + 1] - lo)]


def batch_targets(y: sp.csr_matrix, docs: np.ndarray, lbls: np.ndarray) -> np.ndarray:
    """Boolean B×B: [i, j] is True when ``docs[j]`` is a positive of ``lbls[i]``, i.e. y[docs[j], lbls[i]].

    These are kept out of label i's negatives: a shared positive is never pushed away.
    """
    return y[docs][:, lbls].T.toarray() > 0


# -------------------------------------------------------------------------------------------- helpers


def _binary_csr(y: sp.spmatrix) -> sp.csr_matrix:
    y = sp.csr_matrix(y, copy=True)
    y.data = (y.data > 0).astype(np.float32)
    y.eliminate_zeros()
    y.sort_indices()
    return y


def _fingerprint(doc_texts: Sequence[str], lbl_texts: Sequence[str], y: sp.csr_matrix) -> str:
    h = hashlib.sha256()
    for texts in (doc_texts, lbl_texts):
        h.update(str(len(texts)).encode())
        for t in texts:
            h.update(hashlib.sha256(t.encode("utf-8")).digest())
    h.update(np.ascontiguousarray(y.indptr, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(y.indices, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


class SiameseTeacher:
    """LEVER's tail-robust teacher: a shared mean-pooling encoder trained with label-wise batches."""

    def __init__(self, config: TeacherConfig, seed: int = 13, progress: bool = True):
        _check_config(config)
        self.config = config
        self.seed = int(config.seed or seed)
        self.progress = progress
        self._encoder: Encoder | None = None
        self._pristine = True  # the loaded encoder still holds the pre-trained weights
        self.stats: dict[str, Any] = {}
        self.step_times: list[float] = []  # seconds per optimiser step in the last fit (benchmarks)

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            c = self.config
            self._encoder = Encoder(c.model, c.max_len, device=c.device)
            self._pristine = True
        return self._encoder

    def preflight(self) -> None:
        """Before any stage: the teacher's model resolves to a local folder whose files load, and its
        device exists."""
        from lever_plugins.errors import LeverError
        from lever_plugins.teacher.encoder import check_teacher_model, resolve_device

        check_teacher_model(self.config.model)
        try:
            resolve_device(self.config.device)
        except LeverError as exc:
            raise LeverError(exc.what, where="teacher.device", fix=exc.fix) from None

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised float32 embeddings with the trained (or, if not trained, pre-trained) encoder.

        Not trained (``train = false``): the pre-trained encoder's embeddings come from the shared embedding
        cache, so every run with the same model and texts reuses them. Under torchrun each rank encodes a
        contiguous slice and the slices are gathered in order.
        """
        if not self.config.train:
            from lever_plugins.teacher.encoder import embed_cached, shared_cache_dir

            c = self.config
            return embed_cached(texts, c.model, c.max_len, shared_cache_dir() / "embeddings", device=c.device,
                                progress=self.progress, amp=c.amp)  # fmt: skip
        enc, bs = self.encoder, max(self.config.batch_size, 128)
        return dist.encode_sharded(
            lambda part: enc.encode(list(part), batch_size=bs, progress=self.progress and dist.is_main()),
            list(texts))

    # -- training
    def fit(
        self,
        doc_texts: Any,
        lbl_texts: Any = None,
        y: Any = None,
        workdir: str | Path | None = None,
        resume: bool = True,
        *,
        stop_after_epochs: int | None = None,
    ) -> dict[str, Any]:
        """Train on (documents, labels, N×L train matrix y); checkpoints and the final model go to ``workdir``.

        Also accepts the hook-spec form ``fit(dataset, workdir, resume)`` with a ``Dataset``.
        ``resume``: continue from ``workdir/checkpoint.pt`` when it was written for the same config (but
        ``epochs``), seed and data. ``stop_after_epochs``: return after that many epochs in this call,
        leaving the checkpoint to resume from (time-sliced jobs). Returns the training statistics.
        """
        if hasattr(doc_texts, "trn_texts"):  # fit(dataset, workdir, resume), as in hookspecs
            ds = doc_texts
            workdir = workdir if workdir is not None else lbl_texts
            resume = y if isinstance(y, bool) else resume
            doc_texts, lbl_texts, y = ds.trn_texts, ds.lbl_texts, ds.y_trn
        if workdir is None:
            raise ConfigError("SiameseTeacher.fit needs a work directory", where="teacher")
        workdir = Path(workdir)
        c = self.config
        if not c.train:
            self.stats = {"epochs": 0, "steps": 0, "seconds": 0.0, "docs_per_s": 0.0, "loss": None,
                          "trained": False}
            return self.stats
        y = _binary_csr(y)
        if y.shape != (len(doc_texts), len(lbl_texts)):
            raise DataError(
                f"train matrix is {y.shape[0]}×{y.shape[1]} but there are {len(doc_texts)} documents "
                f"and {len(lbl_texts)} labels",
                where="teacher.fit",
                fix="pass the train matrix of these texts",
            )
        t0 = time.perf_counter()
        dev = torch.device("cuda") if self.encoder.device.type == "cuda" else torch.device("cpu")
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []), deterministic(dev.type == "cpu"):
            stats = self._fit(list(doc_texts), list(lbl_texts), y, workdir, resume, stop_after_epochs)
        stats["seconds"] = round(time.perf_counter() - t0, 3)
        self.stats = stats
        if dist.is_main():
            write_json(workdir / STATS, stats)
        dist.barrier()
        return stats

    def _fit(self, doc_texts: list[str], lbl_texts: list[str], y: sp.csr_matrix, workdir: Path,
             resume: bool, stop_after: int | None) -> dict[str, Any]:
        c = self.config
        key = config_hash({k: v for k, v in to_dict(c).items() if k not in ("epochs", "device")},
                          self.seed, _fingerprint(doc_texts, lbl_texts, y))
        ckpt_path = workdir / CHECKPOINT
        ckpt = _load_checkpoint(ckpt_path) if resume and ckpt_path.exists() else None
        if ckpt is not None and ckpt.get("key") != key:
            ckpt = None  # written for other data or settings: start over (it is overwritten below)
        if not self._pristine and ckpt is None:
            self._encoder = None  # a fresh run starts from the pre-trained weights
        enc = self.encoder
        model, dev = enc.model, enc.device
        self._pristine = False
        world, rank = dist.world_size(), dist.rank()
        main = rank == 0
        show = self.progress and main

        ycsc = y.tocsc()
        ycsc.sort_indices()
        items = np.flatnonzero(np.diff(ycsc.indptr) > 0)  # labels with at least one positive
        n_items, bsz = len(items), c.batch_size
        n_batches = n_items // bsz + (1 if n_items % bsz >= 2 else 0)  # a 1-label batch has no negatives
        total_steps = max(c.epochs * n_batches, 1)

        # Tokenise once: only documents that are some item's positive, and the items themselves.
        used_docs = np.flatnonzero(np.diff(y.indptr) > 0)
        doc_row = np.full(y.shape[0], -1, dtype=np.int64)
        doc_row[used_docs] = np.arange(len(used_docs))
        doc_ids, doc_lens = enc.tokenize([doc_texts[i] for i in used_docs])
        lbl_ids, lbl_lens = enc.tokenize([lbl_texts[i] for i in items])

        # weight_decay on every parameter as in the reference trainer; eps as NGAME/LEVER.
        # fused: one kernel per step instead of a Python loop over ~100 parameter tensors (CPU and CUDA).
        opt = torch.optim.AdamW(model.parameters(), lr=c.lr, weight_decay=c.weight_decay, eps=1e-6,
                                fused=dev.type in ("cpu", "cuda"))
        warm = max(int(c.warmup_steps), 0)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: linear_warmup_decay(s, warm, total_steps))
        amp = bool(c.amp) and dev.type == "cuda"
        scaler = torch.amp.GradScaler("cuda") if amp else None

        dim = model.config.hidden_size
        rng = np.random.default_rng(self.seed)
        torch.manual_seed(self.seed)
        bank = np.zeros((n_items, dim), dtype=np.float32)
        filled = np.zeros(n_items, dtype=bool)
        clusters: list[np.ndarray] | None = None
        clustered_size = 0
        start_epoch, step, history = 0, 0, []
        if ckpt is not None:
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
            sched.load_state_dict(ckpt["scheduler"])
            if scaler is not None and ckpt.get("scaler"):
                scaler.load_state_dict(ckpt["scaler"])
            torch.set_rng_state(ckpt["torch_rng"])
            if dev.type == "cuda" and ckpt.get("cuda_rng") is not None:
                torch.cuda.set_rng_state_all(ckpt["cuda_rng"])
            rng.bit_generator.state = ckpt["np_rng"]
            bank = ckpt["bank"].numpy().copy()
            filled = ckpt["filled"].numpy().copy()
            if ckpt["clusters"] is not None:
                flat, sizes = (t.numpy() for t in ckpt["clusters"])
                clusters = np.split(flat, np.cumsum(sizes)[:-1])
            clustered_size = int(ckpt["clustered_size"])
            start_epoch, step, history = int(ckpt["epoch"]), int(ckpt["step"]), list(ckpt["history"])
        # One module whose forward encodes labels and documents: DDP needs one forward per backward.
        net: torch.nn.Module = _PairForward(enc)
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel

            # Parameters outside the mean-pooled path (BERT's pooler) get no gradient: let DDP skip them.
            net = DistributedDataParallel(net, device_ids=[dev.index] if dev.type == "cuda" else None,
                                          find_unused_parameters=True)

        self.step_times = []
        train_seconds, docs_seen, epochs_run = 0.0, 0, 0
        for epoch in range(start_epoch, c.epochs):
            if stop_after is not None and epochs_run >= stop_after:
                break
            if world > 1:  # independent dropout masks per rank, reproducible and resumable per epoch
                torch.manual_seed(self.seed * 1_000_003 + epoch * 1_009 + rank)
            # ---- batch order: random before cluster_start, then shuffled balanced clusters
            size = self.cluster_size_at(epoch)
            if epoch >= c.cluster_start:
                due = (epoch - c.cluster_start) % max(c.cluster_update, 1) == 0
                if clusters is None or due or size != clustered_size:
                    # Rank 0 clusters; the other ranks take its clusters and its RNG state (clustering
                    # draws from the same generator that orders the batches).
                    todo = np.flatnonzero(~filled)
                    if main:
                        if todo.size:  # e.g. cluster_start = 0: no training embeddings yet
                            bank[todo] = enc.encode_ids(lbl_ids[todo], lbl_lens[todo], progress=False)
                        clusters = balanced_clusters(bank, size, rng)
                    if world > 1:
                        got = dist.broadcast_object(
                            (clusters, rng.bit_generator.state, bank[todo]) if main else None)
                        clusters, rng.bit_generator.state, bank[todo] = got
                    filled[todo] = True
                    clustered_size = size
                order = np.concatenate([clusters[i] for i in rng.permutation(len(clusters))])
            else:
                order = rng.permutation(n_items)
            batches = [order[s : s + bsz] for s in range(0, n_items, bsz) if len(order[s : s + bsz]) >= 2]

            net.train()
            losses = []
            t_epoch, docs_before = time.perf_counter(), docs_seen
            bar = progress_bar(batches, desc=f"teacher epoch {epoch + 1}/{c.epochs}", unit="batch",
                               enabled=show, leave=False)
            for b in bar:
                t_step = time.perf_counter()
                lbls = items[b]
                docs = sample_positives(ycsc, lbls, rng)  # the whole batch, identically on every rank
                pos = torch.from_numpy(batch_targets(y, docs, lbls)).to(dev)
                rows = doc_row[docs]
                if world > 1:
                    # This rank's contiguous share of the batch, padded to the largest share (the padding
                    # rows are dropped after the gather, so they get no gradient).
                    bounds = dist.shard_bounds(len(b), world)
                    sizes = [hi - lo for lo, hi in bounds]
                    lo, hi = bounds[rank]
                    mine = np.arange(lo, hi)
                    mine = np.concatenate([mine, np.zeros(max(sizes) - len(mine), dtype=np.int64)])
                    lx, lm = enc.batch_tensors(lbl_ids[b[mine]], lbl_lens[b[mine]])
                    dx, dm = enc.batch_tensors(doc_ids[rows[mine]], doc_lens[rows[mine]])
                else:
                    lx, lm = enc.batch_tensors(lbl_ids[b], lbl_lens[b])
                    dx, dm = enc.batch_tensors(doc_ids[rows], doc_lens[rows])
                with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
                    le, de = net(lx, lm, dx, dm)
                if world > 1:
                    # Every rank scores the whole batch (in-batch negatives span all ranks) and computes the
                    # same loss; the gather's backward sums the ranks' gradients and DDP averages them, which
                    # together give exactly the one-process gradient.
                    le = dist.gather_tensor_rows(le, sizes)
                    de = dist.gather_tensor_rows(de, sizes)
                scores = le @ de.T
                loss = self._loss(scores, pos)
                opt.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                else:
                    loss.backward()
                    opt.step()
                sched.step()
                step += 1
                crash_point("teacher", "step", step)
                bank[b] = le.detach().float().cpu().numpy()
                filled[b] = True
                lv = float(loss.detach())
                losses.append(lv)
                docs_seen += len(b)
                self.step_times.append(time.perf_counter() - t_step)
                elapsed = time.perf_counter() - t_epoch
                bar.set_postfix(loss=f"{lv:.4f}", docs_s=f"{docs_seen / max(train_seconds + elapsed, 1e-9):.0f}")
            bar.close()
            train_seconds += time.perf_counter() - t_epoch
            epochs_run += 1
            history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)) if losses else None,
                            "steps": len(batches), "cluster_size": clustered_size if epoch >= c.cluster_start
                            else None, "seconds": round(time.perf_counter() - t_epoch, 3)})
            secs = time.perf_counter() - t_epoch
            events.emit("epoch", what="teacher", epoch=epoch + 1, loss=history[-1]["loss"],
                        docs_per_s=(docs_seen - docs_before) / max(secs, 1e-9), seconds=round(secs, 3))
            if main:  # rank 0 writes; the others wait so that every rank leaves the epoch together
                state = {
                    "version": 1, "key": key, "epoch": epoch + 1, "step": step, "history": history,
                    "model": model.state_dict(), "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(), "scaler": scaler.state_dict() if scaler else None,
                    "torch_rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state_all() if dev.type == "cuda" else None,
                    "np_rng": rng.bit_generator.state,
                    "bank": torch.from_numpy(bank), "filled": torch.from_numpy(filled),
                    "clusters": None if clusters is None else (
                        torch.from_numpy(np.concatenate(clusters)),
                        torch.tensor([len(x) for x in clusters], dtype=torch.int64)),
                    "clustered_size": clustered_size,
                }
                state["digest"] = _digest(state)  # torch.load does not notice flipped bytes in tensor data
                with atomic_path(workdir / CHECKPOINT) as tmp:
                    torch.save(state, tmp)
            crash_point("teacher", "epoch", epoch + 1)
            dist.barrier()

        done = start_epoch + epochs_run
        model.eval()
        if main and done >= c.epochs and (epochs_run > 0 or not (workdir / MODEL_DIR / "config.json").exists()):
            save_model_dir(enc, workdir / MODEL_DIR, {"max_len": c.max_len, "pooling": "mean",
                                                       "normalize": "l2", "epochs": done, "seed": self.seed})
        dist.barrier()
        last = history[-1]["loss"] if history else None
        return {
            "epochs": done, "epochs_run": epochs_run, "resumed_from": start_epoch if ckpt else None,
            "complete": done >= c.epochs, "steps": step, "train_seconds": round(train_seconds, 3),
            "docs_per_s": round(docs_seen / train_seconds, 2) if train_seconds > 0 else 0.0,
            "loss": last, "history": history, "labels_trained": int(n_items), "trained": True,
            "world_size": world, "backend": dist.backend() if world > 1 else None,
        }

    def _loss(self, scores: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        c = self.config
        if c.loss == "triplet":
            return triplet_ohnm_loss(scores, pos, c.margin, c.num_negatives)
        return logistic_ohnm_loss(scores, pos, c.num_negatives)

    def cluster_size_at(self, epoch: int) -> int:
        """Initial cluster size doubled once for each growth epoch reached."""
        return self.config.cluster_size * 2 ** sum(1 for g in self.config.cluster_growth if g <= epoch)


class _PairForward(torch.nn.Module):
    """Encodes a label batch and a document batch in one forward call (the unit DDP synchronises)."""

    def __init__(self, encoder: Encoder):
        super().__init__()
        self.model = encoder.model
        self._encoder = encoder

    def forward(self, lx: torch.Tensor, lm: torch.Tensor, dx: torch.Tensor,
                dm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._encoder.forward(lx, lm), self._encoder.forward(dx, dm)


def _digest(obj: Any) -> str:
    """sha256 over a checkpoint's contents: every tensor's dtype, shape and bytes, every other value's repr."""
    h = hashlib.sha256()

    def feed(o: Any) -> None:
        if isinstance(o, torch.Tensor):
            t = o.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(o, dict):
            h.update(b"{")
            for k in sorted(o, key=repr):
                h.update(repr(k).encode())
                feed(o[k])
            h.update(b"}")
        elif isinstance(o, (list, tuple)):
            h.update(b"[" if isinstance(o, list) else b"(")
            for x in o:
                feed(x)
            h.update(b"]")
        else:
            h.update(repr(o).encode())

    feed(obj)
    return h.hexdigest()


def _load_checkpoint(path: Path) -> dict[str, Any] | None:
    """The checkpoint, or None when it is unreadable, from an incompatible version, or corrupted (its
    contents no longer match the digest saved with them): then training starts from scratch."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return None
    if not isinstance(ckpt, dict) or ckpt.pop("digest", None) != _digest(ckpt):
        return None
    return ckpt


def _check_config(c: TeacherConfig) -> None:
    checks = [
        (c.loss in ("triplet", "logistic"), f"teacher.loss = {c.loss!r} is not one of triplet, logistic"),
        (c.batch_size >= 2, f"teacher.batch_size = {c.batch_size} must be >= 2"),
        (c.epochs >= 0, f"teacher.epochs = {c.epochs} must be >= 0"),
        (c.num_negatives >= 1, f"teacher.num_negatives = {c.num_negatives} must be >= 1"),
        (c.cluster_size >= 1, f"teacher.cluster_size = {c.cluster_size} must be >= 1"),
        (c.cluster_update >= 1, f"teacher.cluster_update = {c.cluster_update} must be >= 1"),
        (c.max_len >= 1, f"teacher.max_len = {c.max_len} must be >= 1"),
        (c.lr > 0, f"teacher.lr = {c.lr} must be > 0"),
    ]
    for ok, msg in checks:
        if not ok:
            raise ConfigError(msg, where="[teacher]")


__all__ = ["SiameseTeacher", "triplet_ohnm_loss", "logistic_ohnm_loss", "balanced_clusters", "sample_positives",
           "batch_targets"]

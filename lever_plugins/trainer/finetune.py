"""Fine-tuning the encoder inside the built-in OvA trainer (``[trainer] finetune = true``).

The ``[encoder]`` model (same name or path, ``max_len``, mean pooling over the attention mask and L2
normalisation as the frozen features and the teacher: :class:`lever_plugins.teacher.encoder.Encoder`)
is trained jointly with the one-vs-all head of :func:`lever_plugins.trainer.ova.train` on the arm's
texts — the N documents, plus the label texts of the +LEVER arm's N + L rows — with the same (soft)
targets and the same ``lever_loss`` hook. Only the features change: each batch is encoded with
autograd instead of being read from a frozen matrix; everything else (batch order, full or shortlist
negatives, the sparse TF-IDF head, the loss reduction) is the frozen trainer's own code.

* **Optimisers.** The head keeps its optimisers and ``[trainer] lr``. The encoder gets AdamW with
  ``encoder_lr`` (weight decay ``ENCODER_WEIGHT_DECAY``, eps 1e-6 as the teacher) and a linear warm-up
  over the first ``encoder_warmup`` fraction of the steps, then linear decay to 0 at the last step.
* **No frozen first epochs.** The head starts from the label centroids of the *pre-trained* encoder's
  features (and each label's prior as bias), not from random weights, so the encoder's first gradients
  already point somewhere sensible, and the warm-up keeps its first steps small. Freezing it for the
  first N epochs (a common guard against a random head's gradients) would add a setting that protects
  against nothing here.
* **Shortlist mining** (``negatives = "shortlist"``): the queries are the batch's *current* encoder
  outputs (detached), against the weight snapshot taken at the start of each epoch, as in frozen mode.
* **Prediction**: after training the test texts are re-encoded with the fine-tuned encoder (no grad,
  batches of ``[encoder] batch_size``), then the exact top-k as in frozen mode.
* **kNN fusion** (``knn_alpha`` > 0): the neighbours are searched in the *fine-tuned* space: the training
  rows (documents and, for +LEVER, label rows) and the test rows are both re-encoded with the trained
  encoder after training — not the pre-trained features, which would mix two spaces, and not the
  features seen during training, which came from a moving encoder in train mode (dropout).
* **Device**: ``[trainer] device`` (the head's); ``[encoder] device`` only serves the frozen features.
* **Dropout** stays on while training (the model's own configuration), off for every encoding pass.
* **AMP**: on CUDA the encoder's forward runs under bf16 autocast where the GPU supports bf16; fp16 would
  need a loss scaler shared with the head's optimisers, so older GPUs train in fp32. On CPU there is no
  autocast, deterministic algorithms are on (``warn_only``), and the run is reproducible for a given seed
  and thread count (dropout draws from torch's generator, seeded with the run seed inside ``fork_rng``).
* **Saved**: the fine-tuned encoder (``save_pretrained`` + tokenizer + ``lever_finetune.json``) goes to
  ``encoder_dir`` atomically (temp folder, then rename); :class:`Encoder` loads it back as any model.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from lever_plugins.errors import ConfigError, DataError

ENCODER_WEIGHT_DECAY = 0.01
META_NAME = "lever_finetune.json"


class TrainableEncoder:
    """The ``encoder`` object :func:`lever_plugins.trainer.ova.train` takes: pre-tokenised training rows,
    the encoder's optimiser and learning-rate schedule."""

    def __init__(self, enc: Any, ids: np.ndarray, lens: np.ndarray, lr: float, warmup: float, total_steps: int):
        import torch

        from lever_plugins.teacher.training import linear_warmup_decay

        self.enc, self.ids, self.lens = enc, ids, lens
        dev = enc.device
        self.opt = torch.optim.AdamW(enc.model.parameters(), lr=lr, weight_decay=ENCODER_WEIGHT_DECAY, eps=1e-6,
                                     fused=dev.type in ("cpu", "cuda"))  # fmt: skip
        total = max(int(total_steps), 1)
        warm = int(round(warmup * total))
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: linear_warmup_decay(s, warm, total))
        self.amp_dtype = torch.bfloat16 if dev.type == "cuda" and torch.cuda.is_bf16_supported() else None
        self.steps = 0
        self.lrs: list[float] = []  # learning rate of each step (stats, tests)

    def features(self, rows: np.ndarray):
        """L2-normalised float32 embeddings of training rows ``rows``, with autograd."""
        import torch

        x, mask = self.enc.batch_tensors(self.ids[rows], self.lens[rows])
        if self.amp_dtype is None:
            return self.enc.forward(x, mask)
        with torch.autocast("cuda", dtype=self.amp_dtype):
            return self.enc.forward(x, mask).float()

    def zero_grad(self) -> None:
        self.opt.zero_grad(set_to_none=True)

    def step(self) -> None:
        self.lrs.append(self.opt.param_groups[0]["lr"])
        self.opt.step()
        self.sched.step()
        self.steps += 1


def fit(
    trn_texts: Sequence[str],
    targets: sp.spmatrix,
    config: Any,
    encoder_config: Any,
    seed: int,
    loss_fn: Callable | None = None,
    progress: bool = True,
    x_sparse: sp.spmatrix | None = None,
    x_init: np.ndarray | None = None,
    dense: Any = None,
) -> tuple[Any, Any, dict[str, Any]]:
    """Fine-tune ``encoder_config``'s model with the OvA head on ``trn_texts`` (one per target row).

    ``x_init``: the pre-trained encoder's features of these rows, if at hand (the pipeline's frozen
    features): they seed the head; without them (or with another shape) the rows are encoded first.
    Returns (the :class:`~lever_plugins.trainer.ova.OvAModel`, the fine-tuned
    :class:`~lever_plugins.teacher.encoder.Encoder` in eval mode, stats). Call it under
    :func:`_reproducible` (as :func:`train_predict` does) for CPU determinism.
    """
    from lever_plugins.teacher.encoder import Encoder
    from lever_plugins.trainer import ova

    if encoder_config is None:
        raise ConfigError("trainer.finetune = true needs the [encoder] settings", where="builtin trainer",
                          fix="pass encoder=<EncoderConfig> (the pipeline does)")  # fmt: skip
    if len(trn_texts) != targets.shape[0]:
        raise DataError(f"{len(trn_texts)} training texts but {targets.shape[0]} target rows", where="finetune texts",
                        fix="give one text per training row (documents, then label texts for N + L rows)")  # fmt: skip
    device = ova._device(config.device)
    t0 = time.perf_counter()
    enc = Encoder(encoder_config.model, encoder_config.max_len, device=str(device))
    ids, lens = enc.tokenize(list(trn_texts))
    dim = enc.model.config.hidden_size
    bs = int(encoder_config.batch_size)
    M = len(trn_texts)
    if x_init is None or np.shape(x_init) != (M, dim):
        x_init = enc.encode_ids(ids, lens, batch_size=bs, progress=progress, desc="encode train (pre-trained)")
    prep = time.perf_counter() - t0
    steps = int(config.epochs) * math.ceil(M / int(config.batch_size))
    hook = TrainableEncoder(enc, ids, lens, float(config.encoder_lr), float(config.encoder_warmup), steps)
    enc.model.train()
    try:
        model, stats = ova.train(np.asarray(x_init, np.float32), targets, config, seed, loss_fn, progress,
                                 x_sparse=x_sparse, encoder=hook, dense=dense)  # fmt: skip
    finally:
        enc.model.eval()
    train_s = float(sum(stats["epoch_seconds"]))
    stats["finetune"] = {
        "model": encoder_config.model, "max_len": int(encoder_config.max_len), "encoder_lr": float(config.encoder_lr),
        "encoder_warmup": float(config.encoder_warmup), "steps": hook.steps,
        "amp": None if hook.amp_dtype is None else str(hook.amp_dtype).removeprefix("torch."),
        "prepare_seconds": round(prep, 4),
        "texts_per_s": round(M * stats["epochs_run"] / train_s, 2) if train_s > 0 else 0.0,
    }  # fmt: skip
    return model, enc, stats


@contextlib.contextmanager
def _reproducible(device_type: str, seed: int) -> Iterator[None]:
    """Seeded torch RNG (dropout) confined to the block; deterministic kernels on CPU."""
    import torch

    from lever_plugins.teacher.training import deterministic

    cuda = [torch.cuda.current_device()] if device_type == "cuda" else []
    with torch.random.fork_rng(devices=cuda), deterministic(device_type == "cpu"):
        torch.manual_seed(seed)
        yield


def train_predict(
    texts: tuple[Sequence[str], Sequence[str]],
    targets: sp.spmatrix,
    config: Any,
    encoder_config: Any,
    seed: int,
    loss_fn: Callable | None = None,
    progress: bool = True,
    x_sparse: tuple[sp.spmatrix, sp.spmatrix] | None = None,
    x_init: np.ndarray | None = None,
    encoder_dir: str | Path | None = None,
    dense: Any = None,
) -> tuple[sp.csr_matrix, dict[str, Any]]:
    """:func:`fit`, then the exact top ``config.top_k`` of the test texts re-encoded by the fine-tuned
    encoder (kNN fusion in the fine-tuned space: module docstring). ``texts`` = (training-row texts, test
    texts); ``x_sparse`` = (train, test) sparse features; ``encoder_dir``: where to save the encoder."""
    from lever_plugins.trainer import ova

    if texts is None:
        raise ConfigError("trainer.finetune = true needs the texts of the training and test rows",
                          where="builtin trainer", fix="run it through `lever ab` / `lever train`, or pass texts=")
    trn_texts, tst_texts = texts
    xs_trn, xs_tst = x_sparse if x_sparse is not None else (None, None)
    device = ova._device(config.device)
    with _reproducible(device.type, seed):
        model, enc, stats = fit(trn_texts, targets, config, encoder_config, seed, loss_fn, progress, xs_trn, x_init,
                                 dense=dense)
        t0 = time.perf_counter()
        bs = int(encoder_config.batch_size)
        x_tst = enc.encode(list(tst_texts), batch_size=bs, progress=progress)
        alpha = float(getattr(config, "knn_alpha", 0.0))
        prior = None
        if alpha > 0:
            x_trn = enc.encode(list(trn_texts), batch_size=bs, progress=progress)
            prior = ova.knn_prior(x_trn, sp.csr_matrix(targets, dtype=np.float32), x_tst,
                                  int(getattr(config, "knn_k", 10)))  # fmt: skip
        scores = model.topk(x_tst, config.top_k, x_sparse=xs_tst, prior=prior, alpha=alpha)
        stats["predict_seconds"] = round(time.perf_counter() - t0, 4)
    if encoder_dir is not None:
        from lever_plugins.teacher.training import save_model_dir

        meta = {k: stats["finetune"][k] for k in ("model", "max_len", "encoder_lr", "encoder_warmup", "steps")}
        save_model_dir(enc, Path(encoder_dir), {**meta, "pooling": "mean", "normalize": "l2", "seed": int(seed),
                                                 "epochs": stats["epochs_run"]}, meta_name=META_NAME)  # fmt: skip
        stats["finetune"]["saved"] = str(encoder_dir)
    return scores, stats

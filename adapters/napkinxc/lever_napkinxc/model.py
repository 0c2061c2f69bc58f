"""napkinXC's PLT on sparse features: fit, top-k prediction, CSR scores. The one code path shared by
the adapter's arms and :func:`lever_napkinxc.reference.plt_reference`."""

from __future__ import annotations

import ctypes
import tempfile
import time
from typing import Any

import numpy as np
import scipy.sparse as sp

PREDICT_CHUNK = 8192  # test rows per predict_proba call: bounds the Python lists napkinxc returns


def _seed_libc_rand(seed: int) -> bool:
    """napkinXC's LIBLINEAR solver shuffles with libc ``rand()``, which PLT's ``seed`` does not reach:
    without this two fits with one seed differ. Seeding libc (and training with one thread, so the
    draws come in one order) makes the fit reproducible. Returns False where libc is not reachable."""
    try:
        ctypes.CDLL(None).srand(ctypes.c_uint(seed & 0xFFFFFFFF))
    except (OSError, AttributeError):
        return False
    return True


def to_csr_scores(pred: list[list[tuple[int, float]]], n_labels: int) -> sp.csr_matrix:
    """napkinXC's ``predict_proba`` output (per row: (label, probability) pairs) as CSR float32."""
    lens = np.fromiter((len(r) for r in pred), dtype=np.int64, count=len(pred))
    indptr = np.concatenate([[0], np.cumsum(lens)])
    flat = [p for row in pred for p in row]
    labels = np.fromiter((p[0] for p in flat), dtype=np.int32, count=len(flat))
    probs = np.fromiter((p[1] for p in flat), dtype=np.float32, count=len(flat))
    m = sp.csr_matrix((probs, labels, indptr), shape=(len(pred), n_labels))
    m.sort_indices()
    return m


def fit_predict(
    x_trn: sp.csr_matrix,
    labels: list[list[int]],
    x_tst: sp.csr_matrix,
    n_labels: int,
    top_k: int = 100,
    seed: int = 13,
    threads: int = 1,
    **plt_params: Any,
) -> tuple[sp.csr_matrix, dict[str, Any]]:
    """Train ``napkinxc.models.PLT`` (its defaults unless ``plt_params`` say otherwise) on
    (``x_trn``, ``labels``) and return the top-``top_k`` probabilities of ``x_tst`` as CSR
    n_test × ``n_labels``. Labels are lists of ints: the form every napkinxc >= 0.6 accepts."""
    from napkinxc.models import PLT

    if x_trn.shape[0] != len(labels):
        raise ValueError(f"{x_trn.shape[0]} feature rows but {len(labels)} label rows")
    stats: dict[str, Any] = {"threads": threads}
    with tempfile.TemporaryDirectory(prefix="lever-napkinxc-") as tmp:
        model = PLT(tmp, seed=seed, threads=threads, verbose=0, **plt_params)
        stats["libc_rand_seeded"] = _seed_libc_rand(seed)
        t0 = time.perf_counter()
        model.fit(x_trn, labels)
        stats["train_seconds"] = round(time.perf_counter() - t0, 4)
        t0 = time.perf_counter()
        k = max(1, min(int(top_k), n_labels))
        parts = [
            to_csr_scores(model.predict_proba(x_tst[i : i + PREDICT_CHUNK], top_k=k), n_labels)
            for i in range(0, x_tst.shape[0], PREDICT_CHUNK)
        ]
        stats["predict_seconds"] = round(time.perf_counter() - t0, 4)
    scores = sp.vstack(parts, format="csr") if parts else sp.csr_matrix((0, n_labels), dtype=np.float32)
    return scores.astype(np.float32), stats

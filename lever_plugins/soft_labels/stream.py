"""Soft labels for millions of labels and documents in bounded memory, written incrementally.

:func:`write_soft_labels` produces the same matrices as :func:`build_soft_labels` (``soft``, ``y_aug``) plus
the blended ``targets``, but never holds any of them whole:

1. the teacher-added pairs come one kNN query chunk at a time (:func:`iter_soft_pairs`) and are spilled
   to disk into row buckets of ``bucket_rows`` rows (one binary file of (row, col, score) records each);
2. bucket by bucket, in row order, the pairs are sorted into a CSR block; the block of ``y_aug`` (train
   rows, then the identity of the label rows) is cut from the train matrix, and blending is row-local,
   so the block of ``targets`` is ``blend(y_aug block, soft block)``;
3. each block is appended to a :class:`CsrNpzWriter`, which spills indices, values and row pointers to
   raw files and at the end streams them into a ``.npz`` that ``scipy.sparse.load_npz`` reads,
   written to a temp file and renamed (never half written).

Memory: the embeddings and the faiss index, the binarised train matrix, one query chunk of kNN results
and one bucket of pairs, independent of the output size.
"""

from __future__ import annotations

import os
import shutil
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from lever_plugins import distributed as dist
from lever_plugins.config import SoftLabelConfig
from lever_plugins.runs import new_temp_dir, new_temp_file, remove_temp
from lever_plugins.soft_labels.augment import _check_inputs, _Counters, binarize, iter_soft_pairs, soft_stats

_PAIR = np.dtype([("row", "<i8"), ("col", "<i8"), ("val", "<f4")])
_COPY_BLOCK = 1 << 24  # bytes per read when streaming a spill file into the archive
ARTEFACTS = ("y_aug.npz", "soft.npz", "targets.npz")


class CsrNpzWriter:
    """Write a CSR matrix row block by row block into a scipy ``.npz`` (what ``sp.save_npz`` writes).

    Blocks go to raw spill files beside ``path``; :meth:`close` streams them into the archive (a temp file
    renamed over ``path``). Index arrays are int32 when the column count and nnz allow (as scipy's own),
    else int64. Use as a context manager: an exception removes every temp file and leaves ``path`` alone.
    """

    def __init__(self, path: str | Path, n_cols: int):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.n_cols = int(n_cols)
        self._dir = new_temp_dir(self.path, suffix=".parts")
        self._idx = open(self._dir / "indices", "wb")  # noqa: SIM115 (closed in close/abort)
        self._val = open(self._dir / "data", "wb")  # noqa: SIM115
        self._ptr = open(self._dir / "indptr", "wb")  # noqa: SIM115
        self.n_rows = 0
        self.nnz = 0
        self._ptr.write(np.zeros(1, dtype=np.int64).tobytes())

    def append(self, block: sp.spmatrix) -> None:
        b = sp.csr_matrix(block, dtype=np.float32)
        if b.shape[1] != self.n_cols:
            raise ValueError(f"block has {b.shape[1]} columns, expected {self.n_cols}")
        b.sort_indices()
        self._idx.write(np.ascontiguousarray(b.indices, dtype=np.int64).tobytes())
        self._val.write(np.ascontiguousarray(b.data, dtype=np.float32).tobytes())
        self._ptr.write((np.asarray(b.indptr[1:], dtype=np.int64) + self.nnz).tobytes())
        self.n_rows += b.shape[0]
        self.nnz += int(b.nnz)

    def _member(self, zf: zipfile.ZipFile, name: str, raw: Path, dtype: np.dtype, length: int) -> None:
        """One .npy member streamed from a raw int64/float32 spill file, cast to ``dtype`` block-wise."""
        src_dtype = np.dtype(np.float32) if name == "data" else np.dtype(np.int64)
        with zf.open(f"{name}.npy", "w", force_zip64=True) as out, open(raw, "rb") as fh:
            np.lib.format.write_array_header_1_0(
                out, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (length,)})
            step = max(_COPY_BLOCK // src_dtype.itemsize, 1)
            while True:
                a = np.fromfile(fh, dtype=src_dtype, count=step)
                if a.size == 0:
                    break
                out.write(a.astype(dtype, copy=False).tobytes())

    def close(self) -> tuple[int, int]:
        """Assemble the archive; returns the shape."""
        for fh in (self._idx, self._val, self._ptr):
            fh.close()
        big = max(self.nnz, self.n_cols) >= np.iinfo(np.int32).max
        index_dtype = np.dtype(np.int64 if big else np.int32)
        tmp = new_temp_file(self.path, suffix=".tmp.npz")
        try:
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
                self._member(zf, "indices", self._dir / "indices", index_dtype, self.nnz)
                self._member(zf, "indptr", self._dir / "indptr", index_dtype, self.n_rows + 1)
                for name, arr in (("format", np.array(b"csr")), ("shape", np.array([self.n_rows, self.n_cols]))):
                    with zf.open(f"{name}.npy", "w") as out:
                        np.lib.format.write_array(out, arr)
                self._member(zf, "data", self._dir / "data", np.dtype(np.float32), self.nnz)
            os.replace(tmp, self.path)
        except BaseException:
            remove_temp(tmp)
            raise
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)
        return self.n_rows, self.n_cols

    def abort(self) -> None:
        for fh in (self._idx, self._val, self._ptr):
            fh.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> CsrNpzWriter:
        return self

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class PairSpill:
    """(row, col, score) records appended to per-bucket files of ``bucket_rows`` rows each; read back one
    bucket at a time as a sorted CSR block. Lives in a temp folder removed by :meth:`cleanup`."""

    def __init__(self, folder: Path, n_rows: int, n_cols: int, bucket_rows: int):
        self.dir = new_temp_dir(folder / "pairs", suffix=".parts")
        self.n_rows, self.n_cols = int(n_rows), int(n_cols)
        self.bucket_rows = max(int(bucket_rows), 1)
        self.n_buckets = max(-(-self.n_rows // self.bucket_rows), 1)
        self.pairs = 0

    def _file(self, b: int) -> Path:
        return self.dir / f"{b:06d}.bin"

    def add(self, rows: np.ndarray, cols: np.ndarray, vals: np.ndarray) -> None:
        if rows.size == 0:
            return
        rec = np.empty(rows.size, dtype=_PAIR)
        rec["row"], rec["col"], rec["val"] = rows, cols, vals
        bucket = rows // self.bucket_rows
        order = np.argsort(bucket, kind="stable")
        rec, bucket = rec[order], bucket[order]
        cuts = np.flatnonzero(np.diff(bucket)) + 1
        for part in np.split(rec, cuts):
            with open(self._file(int(part["row"][0] // self.bucket_rows)), "ab") as fh:
                part.tofile(fh)
        self.pairs += rows.size

    def bounds(self, b: int) -> tuple[int, int]:
        return b * self.bucket_rows, min(self.n_rows, (b + 1) * self.bucket_rows)

    def block(self, b: int) -> sp.csr_matrix:
        lo, hi = self.bounds(b)
        f = self._file(b)
        rec = np.fromfile(f, dtype=_PAIR) if f.exists() else np.zeros(0, dtype=_PAIR)
        rec = rec[np.lexsort((rec["col"], rec["row"]))]
        indptr = np.zeros(hi - lo + 1, dtype=np.int64)
        np.cumsum(np.bincount(rec["row"] - lo, minlength=hi - lo), out=indptr[1:])
        return sp.csr_matrix((rec["val"].astype(np.float32), rec["col"], indptr), shape=(hi - lo, self.n_cols))

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def _y_aug_block(y: sp.csr_matrix, lo: int, hi: int, label_rows: bool) -> sp.csr_matrix:
    """Rows [lo, hi) of the hard augmented matrix: train rows, then the identity (label rows)."""
    n, n_lbl = y.shape
    parts = []
    if lo < n:
        parts.append(y[lo : min(hi, n)])
    if label_rows and hi > n:
        a, b = max(lo, n) - n, hi - n
        parts.append(sp.csr_matrix((np.ones(b - a, np.float32), np.arange(a, b), np.arange(b - a + 1)),
                                   shape=(b - a, n_lbl)))
    out = parts[0] if len(parts) == 1 else sp.vstack(parts, format="csr")
    return sp.csr_matrix(out, dtype=np.float32)


def hook_blend(config: SoftLabelConfig) -> Callable[[sp.csr_matrix, sp.csr_matrix], sp.csr_matrix]:
    """``blend_fn`` that asks the ``lever_blend_targets`` hook (the first plugin that answers; the built-in
    blend last), with a plugin's exception as one line naming it."""
    from lever_plugins import plugins

    hook = plugins.get_plugin_manager().hook.lever_blend_targets

    def blend_fn(y: sp.csr_matrix, soft: sp.csr_matrix) -> sp.csr_matrix:
        with plugins.guard_hook("lever_blend_targets"):
            out = hook(y=y, soft=soft, config=config)
        out = sp.csr_matrix(out, dtype=np.float32)
        if out.shape != y.shape:
            from lever_plugins.errors import PluginError

            raise PluginError(f"lever_blend_targets returned shape {out.shape} for a block of {y.shape}",
                              where="lever_blend_targets", fix="return the blended targets of the rows given")
        return out

    return blend_fn


def write_soft_labels(
    out_dir: str | Path,
    y_trn: sp.spmatrix,
    doc_emb: np.ndarray | None,
    lbl_emb: np.ndarray,
    config: SoftLabelConfig,
    has_text: np.ndarray | None = None,
    *,
    blend_fn: Callable[[sp.csr_matrix, sp.csr_matrix], sp.spmatrix] | None = None,
    bucket_rows: int = 1 << 20,
    knn_options: dict[str, Any] | None = None,
    distributed: bool = False,
    progress: Callable[[str], Any] | None = None,
) -> dict[str, Any]:
    """Write ``y_aug.npz``, ``soft.npz`` and ``targets.npz`` (CSR, ``sp.load_npz``) into ``out_dir`` in
    chunks (module doc). The matrices equal :func:`build_soft_labels`' ``y_aug`` and ``soft`` and the
    blend of the two; ``blend_fn(y_block, soft_block)`` must be row-local. Default: the ``lever_blend_targets``
    hook (as the soft-label stage calls it), once per row block, so a blend plugin is never bypassed;
    the built-in answer (:func:`~lever_plugins.soft_labels.blend.blend`, the config's lambda and mode) is
    row-local, and a plugin used at this scale must be too.
    Under torchrun (``distributed=True``) every rank searches its share of the kNN and rank 0 writes.
    Returns the statistics of :func:`build_soft_labels` plus ``buckets`` and ``seconds_write``.
    """
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    y = binarize(y_trn)
    n, n_lbl = y.shape
    has_text = _check_inputs(y, doc_emb, lbl_emb, has_text, config)
    n_rows = n + n_lbl if config.label_rows else n
    if blend_fn is None:
        blend_fn = hook_blend(config)
    main = dist.is_main() or not distributed
    counters = _Counters()
    spill = PairSpill(out_dir, n_rows, n_lbl, bucket_rows)
    touched = np.zeros(n_lbl, dtype=bool)
    score_sum = 0.0
    try:
        for rows, cols, vals in iter_soft_pairs(y, doc_emb, lbl_emb, config, has_text, counters, knn_options,
                                                distributed):
            touched[cols] = True
            score_sum += float(vals.astype(np.float64).sum())
            if main:
                spill.add(rows, cols, vals.astype(np.float32))
        t_write = time.perf_counter()
        if main:
            writers = [CsrNpzWriter(out_dir / name, n_lbl) for name in ARTEFACTS]
            try:
                for b in range(spill.n_buckets):
                    lo, hi = spill.bounds(b)
                    ya, so = _y_aug_block(y, lo, hi, config.label_rows), spill.block(b)
                    for w, m in zip(writers, (ya, so, blend_fn(ya, so)), strict=True):
                        w.append(m)
                    if progress:
                        progress(f"rows {hi}/{n_rows}")
            except BaseException:
                for w in writers:
                    w.abort()
                raise
            for w in writers:
                w.close()
    finally:
        spill.cleanup()
    if distributed:
        dist.barrier()
    n_pairs = counters.label_pairs + counters.doc_pairs
    stats = soft_stats(counters, int(touched.sum()), n_lbl - int(has_text.sum()), score_sum, n_pairs,
                       time.perf_counter() - t0)
    stats.update(buckets=spill.n_buckets, seconds_write=round(time.perf_counter() - t_write, 3))
    return stats


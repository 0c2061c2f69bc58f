"""Checks shared by the readers and writers: one DataError line naming the first problem."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp

from lever_plugins.errors import DataError


def index_dtype(n_cols: int, nnz: int) -> type:
    """int32 indices while they fit (half the memory of int64), int64 beyond."""
    return np.int32 if max(n_cols, nnz) < 2**31 - 1 else np.int64


def require_file(path: str | Path) -> Path:
    """``path`` as a Path; DataError if it is missing, not a file, or empty."""
    p = Path(path)
    if not p.exists():
        raise DataError("file not found", where=str(p), fix="check the path and the data set layout")
    if not p.is_file():
        raise DataError("not a file", where=str(p), fix="pass a file, not a folder")
    if p.stat().st_size == 0:
        raise DataError("empty file", where=str(p), fix="re-create or re-download it")
    return p


def row_of(m: sp.csr_matrix, pos: int) -> int:
    """Row holding stored entry number ``pos`` of a CSR matrix."""
    return int(np.searchsorted(m.indptr, pos, side="right") - 1)


def check_csr(m: sp.spmatrix, where: str, *, nonneg: bool = True) -> sp.csr_matrix:
    """Return ``m`` as canonical CSR float32 (sorted, unique indices), or raise on bad values.

    Duplicate entries are an error rather than summed: a file that stores a label twice is
    malformed, and silently adding the two values would change the targets.
    """
    if not sp.issparse(m):
        raise DataError(f"expected a scipy sparse matrix, got {type(m).__name__}", where=where)
    if m.ndim != 2:
        raise DataError(f"expected a 2-D matrix, got shape {m.shape}", where=where)
    m = sp.csr_matrix(m)
    data = m.data
    if data.dtype.kind not in "fiub":
        raise DataError(f"matrix values have dtype {data.dtype}, expected numbers", where=where)
    if data.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(data))
        if bad.size:
            p = int(bad[0])
            raise DataError(
                f"non-finite value {data[p]} at row {row_of(m, p)}, column {m.indices[p]}",
                where=where,
                fix="replace NaN/inf values",
            )
    if nonneg:
        bad = np.flatnonzero(data < 0)
        if bad.size:
            p = int(bad[0])
            raise DataError(
                f"negative value {data[p]} at row {row_of(m, p)}, column {m.indices[p]}",
                where=where,
                fix="label values must be >= 0",
            )
    if m.nnz and (m.indices.min() < 0 or m.indices.max() >= m.shape[1]):
        raise DataError(f"column index out of range for shape {m.shape}", where=where)
    if not m.has_sorted_indices:
        m = m.copy()
        m.sort_indices()
    if m.nnz > 1:
        same_row = np.diff(np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))) == 0
        dup = np.flatnonzero(same_row & (np.diff(m.indices) == 0))
        if dup.size:
            p = int(dup[0])
            raise DataError(
                f"duplicate column {m.indices[p]} in row {row_of(m, p)}",
                where=where,
                fix="store each label at most once per row",
            )
    if m.data.dtype != np.float32:
        f32 = m.data.astype(np.float32)
        if m.data.dtype.kind == "f":
            bad = np.flatnonzero(~np.isfinite(f32))
            if bad.size:
                raise DataError(f"value {m.data[bad[0]]} overflows float32", where=where)
        m = sp.csr_matrix((f32, m.indices, m.indptr), shape=m.shape)
    return m

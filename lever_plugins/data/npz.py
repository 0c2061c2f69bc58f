"""Sparse matrices as scipy ``.npz`` (scipy.sparse.save_npz / load_npz), validated and written atomically."""

from __future__ import annotations

import zipfile
from pathlib import Path

import scipy.sparse as sp

from lever_plugins.data._checks import check_csr, require_file
from lever_plugins.errors import DataError
from lever_plugins.runs import atomic_path


def read_npz(path: str | Path, *, n_cols: int | None = None, nonneg: bool = True) -> sp.csr_matrix:
    """Load a scipy sparse ``.npz`` as canonical CSR float32; DataError on a bad file or bad values."""
    p = require_file(path)
    try:
        m = sp.load_npz(p)
    except (zipfile.BadZipFile, ValueError, KeyError, OSError, EOFError) as e:
        raise DataError(
            f"not a readable scipy sparse .npz ({type(e).__name__}: {e})",
            where=str(p),
            fix="write it with scipy.sparse.save_npz or `lever data convert`",
        ) from None
    m = check_csr(m, where=str(p), nonneg=nonneg)
    if n_cols is not None and m.shape[1] != n_cols:
        raise DataError(
            f"matrix has {m.shape[1]} columns, expected {n_cols}",
            where=str(p),
            fix="the matrix does not belong to this data set",
        )
    return m


def write_npz(path: str | Path, m: sp.spmatrix, *, compressed: bool = True, nonneg: bool = True) -> None:
    """Check ``m`` and save it as CSR float32 ``.npz`` atomically (nothing is written if the check fails)."""
    p = Path(path)
    if p.suffix != ".npz":
        raise DataError("a .npz file name must end in .npz", where=str(p), fix="rename the output")
    m = check_csr(m, where=f"matrix for {p}", nonneg=nonneg)
    with atomic_path(p) as tmp:
        sp.save_npz(tmp, m, compressed=compressed)

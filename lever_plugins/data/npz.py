"""Sparse matrices as scipy ``.npz`` (scipy.sparse.save_npz / load_npz), validated and written atomically."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from lever_plugins.data._checks import check_csr, require_file
from lever_plugins.errors import DataError
from lever_plugins.runs import atomic_path

_FIX = "write it with scipy.sparse.save_npz or `lever data convert`"
_MAX_DEFLATE_RATIO = 1100  # deflate cannot expand more than ~1032:1; a larger claim is a forged size
MAX_COLS = 2**31 - 1  # label columns: int32 indices, and per-label arrays of this length still fit


def _member(zf: zipfile.ZipFile, name: str, where: str, archive_size: int) -> np.ndarray:
    """One ``.npy`` member, its header checked against the member's size before anything is allocated."""
    try:
        info = zf.getinfo(f"{name}.npy")
    except KeyError:
        raise DataError(f"not a readable scipy sparse .npz: no member {name!r}", where=where, fix=_FIX) from None
    ratio = 1 if info.compress_type == zipfile.ZIP_STORED else _MAX_DEFLATE_RATIO
    if info.compress_size > archive_size or info.file_size > max(info.compress_size, 1) * ratio:
        raise DataError(f"member {name!r} declares an impossible size", where=where, fix=_FIX)
    try:
        with zf.open(info) as fh:
            version = np.lib.format.read_magic(fh)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(fh)
            count = int(np.prod(shape, dtype=object))
            if dtype.hasobject:
                raise DataError(f"member {name!r} holds Python objects", where=where, fix=_FIX)
            if count * dtype.itemsize > info.file_size:  # the header promises more than the member holds
                raise DataError(
                    f"member {name!r} declares shape {shape} ({count * dtype.itemsize} bytes) but holds "
                    f"{info.file_size} bytes", where=where, fix="the file is truncated or corrupt; write it again",
                )  # fmt: skip
        with zf.open(info) as fh:
            return np.lib.format.read_array(fh, allow_pickle=False)
    except DataError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, SyntaxError, RecursionError, MemoryError) as e:
        raise DataError(f"not a readable scipy sparse .npz ({type(e).__name__}: {e})", where=where, fix=_FIX) from None


def _index(a: np.ndarray, name: str, where: str) -> np.ndarray:
    if a.ndim != 1 or a.dtype.kind not in "iu":
        raise DataError(f"member {name!r} has dtype {a.dtype} and {a.ndim} dimension(s), expected 1-D integers",
                        where=where, fix=_FIX)  # fmt: skip
    return a


def read_npz(path: str | Path, *, n_cols: int | None = None, nonneg: bool = True) -> sp.csr_matrix:
    """Load a scipy sparse ``.npz`` (csr, csc or coo) as canonical CSR float32; DataError on a bad file or
    bad values. Every member's declared shape is checked against its size before it is read, and the
    index arrays (integer dtype, non-decreasing ``indptr`` of the right length) before scipy sees them."""
    p = require_file(path)
    where = str(p)
    with open(p, "rb") as fh:
        head = fh.read(6)
    if head == b"\x93NUMPY":
        raise DataError("a .npy array, not a .npz archive", where=where, fix=_FIX)
    if not zipfile.is_zipfile(p):
        raise DataError("not a readable scipy sparse .npz (not a zip archive)", where=where, fix=_FIX)
    size = p.stat().st_size
    try:
        zf = zipfile.ZipFile(p)
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise DataError(f"not a readable scipy sparse .npz ({type(e).__name__}: {e})", where=where, fix=_FIX) from None
    with zf:
        fmt_arr = _member(zf, "format", where, size)
        fmt = fmt_arr.item() if fmt_arr.size == 1 else None
        fmt = fmt.decode("ascii", "replace") if isinstance(fmt, bytes) else fmt
        if fmt not in ("csr", "csc", "coo"):
            raise DataError(f"sparse format {fmt!r} is not csr, csc or coo", where=where, fix=_FIX)
        shape = _index(_member(zf, "shape", where, size), "shape", where)
        if shape.size != 2 or (shape < 0).any():
            raise DataError(f"bad shape {shape.tolist()}", where=where, fix=_FIX)
        n_rows, cols = int(shape[0]), int(shape[1])
        if cols > MAX_COLS:
            raise DataError(f"implausible shape ({n_rows}, {cols}): more than 2**31-1 label columns", where=where,
                            fix="the file is corrupt or not a label/score matrix")  # fmt: skip
        data = _member(zf, "data", where, size)
        if data.ndim != 1:
            raise DataError(f"member 'data' has {data.ndim} dimensions, expected 1", where=where, fix=_FIX)
        if fmt == "coo":
            row = _index(_member(zf, "row", where, size), "row", where)
            col = _index(_member(zf, "col", where, size), "col", where)
            if not (row.size == col.size == data.size):
                raise DataError("coo members row, col and data differ in length", where=where, fix=_FIX)
            for name, a, n in (("row", row, n_rows), ("col", col, cols)):
                if a.size and (a.min() < 0 or a.max() >= n):
                    raise DataError(f"coo {name} index out of range for shape ({n_rows}, {cols})", where=where)
            m = sp.coo_matrix((data, (row, col)), shape=(n_rows, cols))
        else:
            indices = _index(_member(zf, "indices", where, size), "indices", where)
            indptr = _index(_member(zf, "indptr", where, size), "indptr", where)
            major, minor = (n_rows, cols) if fmt == "csr" else (cols, n_rows)
            if indptr.size != major + 1:
                raise DataError(f"indptr has {indptr.size} entries, expected {major + 1} for shape ({n_rows}, {cols})",
                                where=where, fix=_FIX)  # fmt: skip
            if indptr[0] != 0 or (indptr.size > 1 and (np.diff(indptr) < 0).any()):
                at = int(np.flatnonzero(np.diff(indptr) < 0)[0]) + 1 if indptr[0] == 0 else 0
                raise DataError(f"indptr decreases (or does not start at 0) at entry {at}", where=where, fix=_FIX)
            if int(indptr[-1]) != indices.size or indices.size != data.size:
                raise DataError(f"indptr ends at {int(indptr[-1])} but indices has {indices.size} and data "
                                f"{data.size} entries", where=where, fix=_FIX)  # fmt: skip
            if indices.size and (indices.min() < 0 or indices.max() >= minor):
                raise DataError(f"index out of range for shape ({n_rows}, {cols})", where=where, fix=_FIX)
            cls = sp.csr_matrix if fmt == "csr" else sp.csc_matrix
            m = cls((data, indices, indptr), shape=(n_rows, cols))
    m = check_csr(m, where=where, nonneg=nonneg)
    if n_cols is not None and m.shape[1] != n_cols:
        raise DataError(
            f"matrix has {m.shape[1]} columns, expected {n_cols}",
            where=where,
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

"""Format conversion and validation: XC text <-> .npz matrices, LF json.gz folder <-> raw-text folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import scipy.sparse as sp

from lever_plugins.errors import DataError
from lever_plugins.runs import atomic_dir


def _is_npz(path: Path) -> bool:
    return path.suffix == ".npz"


def read_matrix(path: str | Path, *, n_cols: int | None = None, nonneg: bool = True) -> sp.csr_matrix:
    """Read a sparse matrix by extension: ``.npz`` (scipy) or anything else as XC sparse text (``.gz`` ok).

    ``nonneg=False`` for score matrices, which may hold negative values.
    """
    from lever_plugins.data.npz import read_npz
    from lever_plugins.data.xc_text import read_sparse

    p = Path(path)
    if _is_npz(p):
        return read_npz(p, n_cols=n_cols, nonneg=nonneg)
    return read_sparse(p, n_cols=n_cols, nonneg=nonneg)


def write_matrix(path: str | Path, m: sp.spmatrix, *, nonneg: bool = True) -> None:
    """Write a sparse matrix by extension (``.npz`` or XC sparse text), atomically."""
    from lever_plugins.data.npz import write_npz
    from lever_plugins.data.xc_text import write_sparse

    p = Path(path)
    if _is_npz(p):
        write_npz(p, m, nonneg=nonneg)
    else:
        write_sparse(p, m, nonneg=nonneg)


def convert(
    src: str | Path, dst: str | Path, *, to: str | None = None, nonneg: bool = True, force: bool = False
) -> Path:
    """Convert ``src`` to ``dst``; return ``dst``. Nothing is written unless the whole conversion succeeds.

    A folder destination is written as a whole (a temp folder renamed into place), so no file of an
    earlier conversion survives in it; an existing non-empty ``dst`` is refused unless ``force`` (then
    it is replaced, as a whole, once the new one is complete).

    - a matrix file: XC text <-> ``.npz``, chosen by the extensions;
    - a data-set folder: LF json.gz -> raw text, raw text -> LF, or as ``to`` says:
      "lf", "raw" (XC text matrices) or "raw-npz".
    """
    from lever_plugins.data.lf_json import detect_layout, load_dataset, write_lf_json, write_raw

    s, d = Path(src), Path(dst)
    if not s.exists():
        raise DataError("source not found", where=str(s), fix="check the path")
    if s.resolve() == d.resolve():
        raise DataError("source and destination are the same", where=str(d), fix="choose another destination")
    if s.is_file():
        if to is not None:
            raise DataError(f"to={to!r} applies to folders only", where=str(s))
        if d.is_dir():
            raise DataError("destination is a folder; give a file name", where=str(d))
        write_matrix(d, read_matrix(s, nonneg=nonneg), nonneg=nonneg)
        return d
    layout = detect_layout(s)
    target = to or ("raw" if layout == "lf" else "lf")
    if target not in ("lf", "raw", "raw-npz"):
        raise DataError(f"unknown target layout {target!r}", where=str(d), fix="use 'lf', 'raw' or 'raw-npz'")
    if d.exists() and not d.is_dir():
        raise DataError("destination exists and is not a folder", where=str(d), fix="choose a folder")
    if d.is_dir() and any(d.iterdir()) and not force:
        raise DataError(
            "destination folder exists and is not empty", where=str(d),
            fix="choose a new folder, or pass --force to replace it as a whole",
        )  # fmt: skip
    if d.is_dir() and force and (s.resolve() in d.resolve().parents or d.resolve() in s.resolve().parents):
        raise DataError("source and destination overlap", where=str(d), fix="choose a folder outside the source")
    ds = load_dataset(s, text="title+content")  # validates everything before a byte is written
    # The whole folder is staged, then renamed into place: a failure leaves dst untouched, and a replaced
    # dst keeps no file of its earlier contents (a stale filter file would otherwise still be applied).
    with atomic_dir(d, replace=force) as stage:
        if target == "lf":
            write_lf_json(stage, ds)
        else:
            write_raw(stage, ds, matrix="npz" if target == "raw-npz" else "txt")
    return d


def validate_path(path: str | Path) -> dict[str, Any]:
    """Read and check a matrix file or a data-set folder; return a summary or raise DataError on the first problem.

    Matrix: {kind, rows, cols, nnz}. Folder: {kind, rows (train), cols (labels), nnz (train),
    tst_rows, tst_nnz, trn_filter, tst_filter}.
    """
    from lever_plugins.data.lf_json import detect_layout, load_dataset

    p = Path(path)
    if not p.exists():
        raise DataError("not found", where=str(p), fix="check the path")
    if p.is_file():
        m = read_matrix(p)
        kind = "npz" if _is_npz(p) else "xc-text"
        return {"kind": kind, "rows": m.shape[0], "cols": m.shape[1], "nnz": int(m.nnz)}
    layout = detect_layout(p)
    ds = load_dataset(p)
    return {
        "kind": "lf-json" if layout == "lf" else "raw-text",
        "rows": ds.y_trn.shape[0],
        "cols": ds.num_labels,
        "nnz": int(ds.y_trn.nnz),
        "tst_rows": ds.y_tst.shape[0],
        "tst_nnz": int(ds.y_tst.nnz),
        "trn_filter": len(ds.trn_filter),
        "tst_filter": len(ds.tst_filter),
    }

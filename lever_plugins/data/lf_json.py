"""Data-set folders: the LF-* raw json.gz layout and the older raw-text layout.

LF layout (Extreme Classification Repository, LF-* sets)::

    trn.json.gz  tst.json.gz   one JSON object a line: {uid, title, content, target_ind, target_rel}
    lbl.json.gz                line i is label i: {uid, title, content}
    trn_filter_labels.txt      optional "row label" pairs (0-based), also tst_filter_labels.txt

Raw-text layout::

    trn_X.txt tst_X.txt Y.txt  one text a line (documents, documents, labels)
    trn_X_Y.txt tst_X_Y.txt    XC sparse text label matrices (or trn_X_Y.npz, tst_X_Y.npz)
    trn_filter_labels.txt ...  optional, as above

Plain ``.json`` instead of ``.json.gz`` is accepted, and so are the repository's other filter names
(filter_labels_train.txt, filter_labels_test.txt).
"""

from __future__ import annotations

import gzip
import json
import re
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from lever_plugins.data._checks import index_dtype, require_file
from lever_plugins.data.dataset import Dataset
from lever_plugins.errors import ConfigError, DataError, LeverWarning
from lever_plugins.runs import atomic_write

TEXT_MODES = ("title", "title+content")
_FILTER_NAMES = {
    "trn": ("trn_filter_labels.txt", "filter_labels_train.txt"),
    "tst": ("tst_filter_labels.txt", "filter_labels_test.txt"),
}
_NEWLINES = re.compile(r"\r\n|\r|\n")


# ----------------------------------------------------------------------------- reading helpers


def _json_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, line) of a json(.gz) file; one DataError for a truncated or bad gzip."""
    opener = gzip.open if path.suffix == ".gz" else open
    lineno = 0
    try:
        with opener(path, "rb") as fh:
            for lineno, line in enumerate(fh, start=1):  # noqa: B007 (lineno is read in the handlers)
                yield lineno, line
    except EOFError:
        raise DataError(
            f"truncated gzip file: it ends inside line {lineno + 1}, before the end-of-stream marker",
            where=f"{path}:{lineno + 1}",
            fix="the download or copy was cut short; fetch the file again",
        ) from None
    except (gzip.BadGzipFile, zlib.error) as e:
        where = f"{path}:{lineno + 1}" if lineno else str(path)
        raise DataError(f"not a valid gzip file ({e})", where=where, fix="fetch the file again") from None


def _text_of(obj: dict[str, Any], text: str, where: str) -> str:
    title = obj.get("title")
    if not isinstance(title, str):
        raise DataError("missing or non-string 'title'", where=where, fix="every line needs a 'title' string")
    if text == "title":
        return title
    content = obj.get("content")
    if content is None or content == "":
        return title
    if not isinstance(content, str):
        raise DataError("'content' is not a string", where=where)
    return f"{title} {content}" if title else content


def _check_text_mode(text: str) -> None:
    if text not in TEXT_MODES:
        raise ConfigError(f"unknown text mode {text!r}", where="data.text", fix="use 'title' or 'title+content'")


def _read_lf_file(path: Path, text: str, n_labels: int | None) -> tuple[list[str], list[str], sp.csr_matrix | None]:
    """Texts, uids and (when ``n_labels`` is given) the label matrix of one LF json(.gz) file."""
    require_file(path)
    name = str(path)
    texts: list[str] = []
    uids: list[str] = []
    counts: list[int] = []
    ind_all: list[Any] = []
    rel_all: list[Any] = []
    blank_at = 0  # first blank line; blank lines are allowed only at the end
    for lineno, raw in _json_lines(path):
        if not raw.strip():
            blank_at = blank_at or lineno
            continue
        where = f"{name}:{lineno}"
        if blank_at:
            raise DataError("blank line inside the file", where=f"{name}:{blank_at}", fix="remove it")
        try:
            obj = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(f"bad JSON ({e})", where=where, fix="one JSON object per line") from None
        except RecursionError:
            raise DataError("bad JSON (nested too deeply)", where=where, fix="one flat JSON object per line") from None
        except ValueError:  # an integer of more than 4300 digits (Python's int-conversion limit)
            raise DataError("bad JSON (a number of more than 4300 digits)", where=where,
                            fix="one JSON object per line") from None  # fmt: skip
        if not isinstance(obj, dict):
            raise DataError("line is not a JSON object", where=where, fix="one JSON object per line")
        texts.append(_text_of(obj, text, where))
        uid = obj.get("uid")
        uids.append(str(len(uids)) if uid is None else str(uid))
        if n_labels is None:
            continue
        ind = obj.get("target_ind")
        if not isinstance(ind, list):
            raise DataError("missing or non-list 'target_ind'", where=where, fix="give the row's label ids")
        # numpy would take true as label 1: look for booleans only in lines that spell one (cheap)
        if (b"true" in raw or b"false" in raw) and any(isinstance(v, bool) for v in ind):
            v = next(v for v in ind if isinstance(v, bool))
            raise DataError(f"label id {json.dumps(v)} is a boolean, not an integer", where=where,
                            fix="label ids are 0-based line numbers of lbl.json.gz")  # fmt: skip
        rel = obj.get("target_rel")
        if rel is None:
            rel = [1.0] * len(ind)
        elif not isinstance(rel, list) or len(rel) != len(ind):
            n_rel = len(rel) if isinstance(rel, list) else type(rel).__name__
            raise DataError(
                f"target_rel has {n_rel} entries but target_ind has {len(ind)}",
                where=where,
                fix="one relevance value per label id",
            )
        if (b"true" in raw or b"false" in raw) and any(isinstance(v, bool) for v in rel):
            raise DataError("target_rel holds a boolean, not a number", where=where, fix="use numbers >= 0")
        counts.append(len(ind))
        ind_all.extend(ind)
        rel_all.extend(rel)
    if not texts:
        raise DataError("no records in file", where=name, fix="the file is empty; re-create it")
    if n_labels is None:
        return texts, uids, None
    return texts, uids, _targets(name, counts, ind_all, rel_all, n_labels)


def _targets(name: str, counts: list[int], ind_all: list[Any], rel_all: list[Any], n_labels: int) -> sp.csr_matrix:
    """Validated CSR from the per-row label lists (line of row r is r + 1)."""
    n_rows = len(counts)
    cnt = np.asarray(counts, dtype=np.int64)
    row = np.repeat(np.arange(n_rows), cnt)

    def at(pos: int) -> str:
        return f"{name}:{int(row[pos]) + 1}"

    ind = np.asarray(ind_all) if ind_all else np.zeros(0, dtype=np.int64)
    if ind.dtype.kind not in "iu":  # floats, strings, or ints beyond int64: find the first culprit
        bad = next(i for i, v in enumerate(ind_all) if type(v) is not int or not 0 <= v < max(n_labels, 1))
        raise DataError(
            f"label id {ind_all[bad]!r} is not an integer in [0, {n_labels})",
            where=at(bad),
            fix="label ids are 0-based line numbers of lbl.json.gz",
        )
    try:
        rel = np.asarray(rel_all, dtype=np.float64) if rel_all else np.zeros(0)
    except (TypeError, ValueError):
        bad = next(i for i, v in enumerate(rel_all) if isinstance(v, bool) or not isinstance(v, (int, float)))
        raise DataError(f"target_rel value {rel_all[bad]!r} is not a number", where=at(bad)) from None
    bad = np.flatnonzero((ind < 0) | (ind >= n_labels))
    if bad.size:
        i = int(bad[0])
        raise DataError(
            f"label id {int(ind[i])} out of range: lbl has {n_labels} labels",
            where=at(i),
            fix="label ids are 0-based line numbers of lbl.json.gz",
        )
    bad = np.flatnonzero(~np.isfinite(rel))
    if bad.size:
        i = int(bad[0])
        raise DataError(f"non-finite target_rel {rel_all[i]!r}", where=at(i), fix="use finite values")
    bad = np.flatnonzero(rel < 0)
    if bad.size:
        i = int(bad[0])
        raise DataError(f"negative target_rel {rel_all[i]!r}", where=at(i), fix="values must be >= 0")
    with np.errstate(over="ignore"):
        data = rel.astype(np.float32)
    bad = np.flatnonzero(np.isinf(data))
    if bad.size:
        raise DataError(f"target_rel {rel_all[int(bad[0])]!r} overflows float32", where=at(int(bad[0])))
    key = row * n_labels + ind
    order = np.argsort(key, kind="stable")
    dup = np.flatnonzero(np.diff(key[order]) == 0)
    if dup.size:
        i = int(order[dup[0] + 1])
        raise DataError(f"duplicate label id {int(ind[i])} in one row", where=at(i), fix="list each label once")
    dt = index_dtype(n_labels, ind.size)
    indptr = np.zeros(n_rows + 1, dtype=dt)
    np.cumsum(cnt, out=indptr[1:])
    m = sp.csr_matrix((data[order], ind[order].astype(dt), indptr), shape=(n_rows, n_labels))
    m.has_sorted_indices = True
    return m


def read_filter(path: str | Path, n_rows: int, n_cols: int) -> np.ndarray:
    """Read a filter file of "row label" pairs (0-based) as an int64 array (k, 2), checked against the shape.

    An empty file means no pairs.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError("filter file not found", where=str(p), fix="check the path")
    try:
        text = p.read_text(encoding="ascii")
    except UnicodeDecodeError as e:
        raise DataError(f"non-ASCII byte in filter file ({e.reason})", where=str(p)) from None
    pairs: list[tuple[int, int]] = []
    for lineno, line in enumerate(text.split("\n"), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not all(x.isdigit() and len(x) <= 18 for x in parts):
            raise DataError(
                f"malformed filter line {line.strip()[:40]!r}",
                where=f"{p}:{lineno}",
                fix="one 'row label' pair of 0-based integers per line",
            )
        r, c = int(parts[0]), int(parts[1])
        if r >= n_rows or c >= n_cols:
            raise DataError(
                f"filter pair ({r}, {c}) out of range for {n_rows} rows x {n_cols} labels",
                where=f"{p}:{lineno}",
                fix="the filter file does not belong to this split",
            )
        pairs.append((r, c))
    return np.asarray(pairs, dtype=np.int64).reshape(-1, 2)


def read_texts(path: str | Path) -> list[str]:
    """One text per line of a UTF-8 file (a final newline does not add an empty text)."""
    p = require_file(path)
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataError(f"invalid UTF-8 ({e.reason})", where=f"{p}:{line}", fix="save the file as UTF-8") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [s[:-1] if s.endswith("\r") else s for s in lines]


def check_label_texts(texts: list[str], path: Path) -> None:
    """Labels need text for LEVER (the teacher embeds it; label rows train on it). All empty: an error.
    Some empty (some real sets have a few): a warning naming the first; those labels get no teacher
    neighbours (see soft_labels.augment)."""
    empty = [i for i, t in enumerate(texts) if not t.strip()]
    if not empty:
        return
    if len(empty) == len(texts):
        raise DataError(
            f"all {len(texts)} label texts are empty",
            where=str(path),
            fix="LEVER needs label texts: give each label a title (lbl.json.gz) or a line of text (Y.txt)",
        )
    warnings.warn(
        LeverWarning(
            f"{path}:{empty[0] + 1}: {len(empty)} of {len(texts)} label texts are empty (the first is label "
            f"{empty[0]}); LEVER gives them no teacher neighbours"
        ),
        stacklevel=2,
    )


def _find(folder: Path, names: tuple[str, ...]) -> Path | None:
    for n in names:
        if (folder / n).is_file():
            return folder / n
    return None


def detect_layout(folder: str | Path) -> str:
    """ "lf" (json.gz), "raw" (text + XC matrices); DataError if neither."""
    f = Path(folder)
    if not f.exists():
        raise DataError("data folder not found", where=str(f), fix="check --data / [data] path")
    if not f.is_dir():
        raise DataError("not a folder", where=str(f), fix="pass the data set folder")
    if _find(f, ("lbl.json.gz", "lbl.json")) or _find(f, ("trn.json.gz", "trn.json")):
        return "lf"
    if (f / "Y.txt").exists() or (f / "trn_X.txt").exists():
        return "raw"
    raise DataError(
        "unknown data set layout",
        where=str(f),
        fix="expected trn.json.gz, tst.json.gz, lbl.json.gz (LF) or trn_X.txt, tst_X.txt, Y.txt, "
        "trn_X_Y.txt, tst_X_Y.txt (raw)",
    )


def _need(folder: Path, names: tuple[str, ...]) -> Path:
    p = _find(folder, names)
    if p is None:
        raise DataError(f"missing {names[0]}", where=str(folder / names[0]), fix="the data set is incomplete")
    return p


def _filters(folder: Path, y_trn: sp.csr_matrix, y_tst: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    out = []
    for split, y in (("trn", y_trn), ("tst", y_tst)):
        p = _find(folder, _FILTER_NAMES[split])
        out.append(read_filter(p, *y.shape) if p else np.zeros((0, 2), dtype=np.int64))
    return out[0], out[1]


# ----------------------------------------------------------------------------- load


def load_dataset(path: str | Path, text: str = "title+content", name: str | None = None) -> Dataset:
    """Load and validate a data-set folder in either layout (see the module docstring).

    ``text``: "title+content" (title, a space, content; just the title when content is empty) or "title".
    """
    _check_text_mode(text)
    folder = Path(path)
    layout = detect_layout(folder)
    ds_name = name or folder.resolve().name
    if layout == "lf":
        lbl_path = _need(folder, ("lbl.json.gz", "lbl.json"))
        lbl_texts, lbl_uids, _ = _read_lf_file(lbl_path, text, None)
        check_label_texts(lbl_texts, lbl_path)
        n_labels = len(lbl_texts)
        trn_texts, trn_uids, y_trn = _read_lf_file(_need(folder, ("trn.json.gz", "trn.json")), text, n_labels)
        tst_texts, tst_uids, y_tst = _read_lf_file(_need(folder, ("tst.json.gz", "tst.json")), text, n_labels)
        assert y_trn is not None and y_tst is not None
        trn_f, tst_f = _filters(folder, y_trn, y_tst)
        return Dataset(
            ds_name, trn_texts, tst_texts, lbl_texts, y_trn, y_tst, trn_f, tst_f, trn_uids, tst_uids, lbl_uids
        )
    from lever_plugins.data.convert import read_matrix  # convert imports this module

    lbl_path = _need(folder, ("Y.txt",))
    lbl_texts = read_texts(lbl_path)
    check_label_texts(lbl_texts, lbl_path)
    n_labels = len(lbl_texts)
    ys, txts = [], []
    for split in ("trn", "tst"):
        tp = _need(folder, (f"{split}_X.txt",))
        mp = _need(folder, (f"{split}_X_Y.txt", f"{split}_X_Y.npz", f"{split}_X_Y.txt.gz"))
        t = read_texts(tp)
        y = read_matrix(mp)
        if y.shape[1] != n_labels:
            raise DataError(
                f"{mp.name} has {y.shape[1]} label columns but Y.txt has {n_labels} lines",
                where=str(mp),
                fix="Y.txt needs one line per label",
            )
        if y.shape[0] != len(t):
            raise DataError(
                f"{tp.name} has {len(t)} lines but {mp.name} has {y.shape[0]} rows",
                where=str(tp),
                fix="one text line per matrix row (texts must not contain newlines)",
            )
        ys.append(y)
        txts.append(t)
    trn_f, tst_f = _filters(folder, ys[0], ys[1])
    return Dataset(ds_name, txts[0], txts[1], lbl_texts, ys[0], ys[1], trn_f, tst_f)


# ----------------------------------------------------------------------------- write


def _write_json_gz(path: Path, records: Iterator[dict[str, Any]]) -> None:
    with atomic_write(path, "wb") as raw:
        # mtime=0 and a fixed name: the same data gives the same bytes (stable checksums)
        with gzip.GzipFile(filename=path.name, fileobj=raw, mode="wb", mtime=0, compresslevel=6) as gz:
            for rec in records:
                gz.write(json.dumps(rec, ensure_ascii=False).encode("utf-8"))
                gz.write(b"\n")


def _doc_records(texts: list[str], uids: list[str] | None, y: sp.csr_matrix) -> Iterator[dict[str, Any]]:
    y = sp.csr_matrix(y)
    for i, t in enumerate(texts):
        lo, hi = y.indptr[i], y.indptr[i + 1]
        yield {
            "uid": uids[i] if uids else str(i),
            "title": t,
            "content": "",
            "target_ind": y.indices[lo:hi].tolist(),
            "target_rel": y.data[lo:hi].tolist(),
        }


def _check_dataset(ds: Dataset) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    from lever_plugins.data._checks import check_csr

    y_trn = check_csr(ds.y_trn, where=f"{ds.name} train labels")
    y_tst = check_csr(ds.y_tst, where=f"{ds.name} test labels")
    for split, y, t in (("train", y_trn, ds.trn_texts), ("test", y_tst, ds.tst_texts)):
        if y.shape[0] != len(t):
            raise DataError(f"{split} has {len(t)} texts but {y.shape[0]} label rows", where=ds.name)
        if y.shape[1] != len(ds.lbl_texts):
            raise DataError(
                f"{split} has {y.shape[1]} label columns but {len(ds.lbl_texts)} label texts", where=ds.name
            )
    return y_trn, y_tst


def _write_filter(path: Path, pairs: np.ndarray) -> None:
    with atomic_write(path, "w", encoding="ascii") as fh:
        fh.write("".join(f"{int(r)} {int(c)}\n" for r, c in np.asarray(pairs).reshape(-1, 2)))


def write_lf_json(folder: str | Path, ds: Dataset) -> None:
    """Write ``ds`` in the LF json.gz layout (each file atomic). Texts go to "title", "content" is empty."""
    f = Path(folder)
    y_trn, y_tst = _check_dataset(ds)
    lbl_uids = ds.lbl_uids or [str(i) for i in range(len(ds.lbl_texts))]
    _write_json_gz(
        f / "lbl.json.gz", ({"uid": u, "title": t, "content": ""} for u, t in zip(lbl_uids, ds.lbl_texts, strict=True))
    )
    _write_json_gz(f / "trn.json.gz", _doc_records(ds.trn_texts, ds.trn_uids, y_trn))
    _write_json_gz(f / "tst.json.gz", _doc_records(ds.tst_texts, ds.tst_uids, y_tst))
    for split, pairs in (("trn", ds.trn_filter), ("tst", ds.tst_filter)):
        if len(pairs):
            _write_filter(f / _FILTER_NAMES[split][0], pairs)


def _one_line(text: str) -> str:
    return _NEWLINES.sub(" ", text)


def write_raw(folder: str | Path, ds: Dataset, *, matrix: str = "txt") -> None:
    """Write ``ds`` in the raw-text layout (each file atomic); newlines inside texts become spaces.

    ``matrix``: "txt" (XC sparse text) or "npz" for trn_X_Y / tst_X_Y.
    """
    from lever_plugins.data.npz import write_npz
    from lever_plugins.data.xc_text import write_sparse

    if matrix not in ("txt", "npz"):
        raise ConfigError(f"unknown matrix format {matrix!r}", where="matrix", fix="use 'txt' or 'npz'")
    f = Path(folder)
    y_trn, y_tst = _check_dataset(ds)
    for fname, texts in (("trn_X.txt", ds.trn_texts), ("tst_X.txt", ds.tst_texts), ("Y.txt", ds.lbl_texts)):
        with atomic_write(f / fname, "w", encoding="utf-8", newline="\n") as fh:
            for t in texts:
                fh.write(_one_line(t))
                fh.write("\n")
    for split, y in (("trn", y_trn), ("tst", y_tst)):
        if matrix == "npz":
            write_npz(f / f"{split}_X_Y.npz", y)
        else:
            write_sparse(f / f"{split}_X_Y.txt", y)
    for split, pairs in (("trn", ds.trn_filter), ("tst", ds.tst_filter)):
        if len(pairs):
            _write_filter(f / _FILTER_NAMES[split][0], pairs)

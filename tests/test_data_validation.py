"""Every bad input gives one DataError line naming the file (and line), and nothing half-written is left."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from lever_plugins.data import (
    Dataset,
    convert,
    load_dataset,
    read_filter,
    read_npz,
    read_sparse,
    validate_path,
    write_lf_json,
    write_npz,
    write_raw,
    write_sparse,
    xc_text,
)
from lever_plugins.errors import ConfigError, DataError, LeverError


def err(fn, *args, **kw) -> str:
    with pytest.raises(DataError) as ei:
        fn(*args, **kw)
    msg = str(ei.value)
    assert "\n" not in msg and ei.value.exit_code == 2
    return msg


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ----------------------------------------------------------------------------- XC sparse text


def xc(tmp_path: Path, text: str, name: str = "y.txt") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("3 5\n0:1\n1:1\n", 1, "header says 3 rows but the file has 2"),
        ("2 5\n0:1\n1:1\n\n2:1\n", 5, "more rows than the header's 2"),
        ("2 5\n0:1 4:1\n1:1 5:1\n", 3, "column index 5 out of range"),
        ("2 5\n0:1\n1:1 2:-0.5\n", 3, "negative value -0.5"),
        ("2 5\n0:1\n1:nan\n", 3, "non-finite value nan"),
        ("2 5\n0:1\n1:inf\n", 3, "non-finite value inf"),
        ("2 5\n0:1\n1:1e39\n", 3, "overflows float32"),
        ("2 5\n0:1 3:1 0:0.5\n\n", 2, "duplicate column 0"),
        ("x y\n0:1\n", 1, "bad header"),
        ("5\n0:1\n", 1, "bad header"),
        ("\n0:1\n", 1, "empty header line"),
    ],
)
def test_xc_text_errors(tmp_path: Path, text: str, line: int, words: str) -> None:
    msg = err(read_sparse, xc(tmp_path, text))
    assert f"y.txt:{line}:" in msg and words in msg


@pytest.mark.parametrize("token", ["3", "3:", ":1", "3:1:2", "a:1", "3:1x", "3:1.2.3", "-3:1", "3.0:1", "3:1_0"])
def test_xc_text_malformed_token(tmp_path: Path, token: str) -> None:
    msg = err(read_sparse, xc(tmp_path, f"3 9\n0:1\n1:1 {token} 2:1\n\n"))
    assert "y.txt:3:" in msg and "malformed token" in msg and repr(token) in msg


def test_xc_text_error_line_in_a_later_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = ["1:1 2:0.5"] * 400
    rows[337] = "1:1 2:0.5 2:0.25"
    p = xc(tmp_path, "400 3\n" + "\n".join(rows) + "\n")
    monkeypatch.setattr(xc_text, "BLOCK_BYTES", 64)
    assert "y.txt:339: duplicate column 2" in err(read_sparse, p)
    rows[337] = "1:1 2:x"
    p.write_text("400 3\n" + "\n".join(rows) + "\n")
    assert "y.txt:339: malformed token '2:x'" in err(read_sparse, p)


def test_xc_text_n_cols_mismatch(tmp_path: Path) -> None:
    assert "y.txt:1: the header says 5 columns, expected 7" in err(read_sparse, xc(tmp_path, "1 5\n0:1\n"), n_cols=7)


def test_negative_values_allowed_when_asked(tmp_path: Path) -> None:
    m = read_sparse(xc(tmp_path, "1 5\n0:-1.5 3:2\n"), nonneg=False)
    assert m.toarray().tolist() == [[-1.5, 0, 0, 2, 0]]


def test_missing_and_empty_files(tmp_path: Path) -> None:
    assert "nope.txt: file not found" in err(read_sparse, tmp_path / "nope.txt")
    assert "y.txt: empty file" in err(read_sparse, xc(tmp_path, ""))
    assert "nope.npz: file not found" in err(read_npz, tmp_path / "nope.npz")
    (tmp_path / "e.npz").write_bytes(b"")
    assert "e.npz: empty file" in err(read_npz, tmp_path / "e.npz")


def test_corrupt_gzip_matrix(tmp_path: Path) -> None:
    full = gzip.compress(b"2 5\n" + b"0:1 1:1\n" * 2)
    (tmp_path / "t.txt.gz").write_bytes(full[: len(full) // 2])
    assert "t.txt.gz:2: cannot read" in err(read_sparse, tmp_path / "t.txt.gz")


# ----------------------------------------------------------------------------- npz


def test_npz_bad_contents(tmp_path: Path) -> None:
    (tmp_path / "junk.npz").write_bytes(b"not a zip file at all")
    assert "junk.npz: not a readable scipy sparse .npz" in err(read_npz, tmp_path / "junk.npz")
    np.savez(tmp_path / "dense.npz", a=np.ones(3))
    assert "dense.npz: not a readable" in err(read_npz, tmp_path / "dense.npz")
    sp.save_npz(tmp_path / "neg.npz", sp.csr_matrix(np.array([[0, 1.0], [-2.0, 0]])))
    assert "neg.npz: negative value -2.0 at row 1, column 0" in err(read_npz, tmp_path / "neg.npz")
    sp.save_npz(tmp_path / "nan.npz", sp.csr_matrix(np.array([[0, np.nan]])))
    assert "nan.npz: non-finite value nan at row 0, column 1" in err(read_npz, tmp_path / "nan.npz")
    dup = sp.csr_matrix((np.ones(2), np.array([1, 1]), np.array([0, 2])), shape=(1, 3))
    sp.save_npz(tmp_path / "dup.npz", dup)
    assert "dup.npz: duplicate column 1 in row 0" in err(read_npz, tmp_path / "dup.npz")
    sp.save_npz(tmp_path / "ok.npz", sp.csr_matrix(np.eye(3)))
    assert "expected 4" in err(read_npz, tmp_path / "ok.npz", n_cols=4)


# ----------------------------------------------------------------------------- failed writes leave nothing


@pytest.mark.parametrize("bad", [np.nan, np.inf, -1.0])
@pytest.mark.parametrize("name", ["y.txt", "y.txt.gz", "y.npz"])
def test_failed_write_leaves_nothing(tmp_path: Path, bad: float, name: str) -> None:
    m = sp.csr_matrix(np.array([[1.0, 0], [0, bad]], dtype=np.float32))
    write = write_npz if name.endswith(".npz") else write_sparse
    assert f"{name}" in err(write, tmp_path / name, m)
    assert listing(tmp_path) == []
    # an existing good file survives a failed overwrite untouched
    good = sp.csr_matrix(np.eye(2, dtype=np.float32))
    write(tmp_path / name, good)
    before = (tmp_path / name).read_bytes()
    err(write, tmp_path / name, m)
    assert listing(tmp_path) == [name] and (tmp_path / name).read_bytes() == before


def test_write_interrupted_midway_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def boom(*a):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # e.g. Ctrl-C between chunks
        return b"0:1.0\n"

    monkeypatch.setattr(xc_text, "_format_chunk", boom)
    monkeypatch.setattr(xc_text, "WRITE_NNZ", 1)
    with pytest.raises(KeyboardInterrupt):
        write_sparse(tmp_path / "y.txt", sp.csr_matrix(np.eye(3, dtype=np.float32)))
    assert len(calls) == 2 and listing(tmp_path) == []


# ----------------------------------------------------------------------------- LF json.gz


def gz_lines(path: Path, lines: list) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for r in lines:
            fh.write((r if isinstance(r, str) else json.dumps(r)) + "\n")


def doc(i: int, ind: list, rel: list | None = None) -> dict:
    return {
        "uid": f"d{i}",
        "title": f"doc {i}",
        "content": "c",
        "target_ind": ind,
        "target_rel": rel or [1.0] * len(ind),
    }


def lf(tmp_path: Path, trn: list | None = None, tst: list | None = None, n_labels: int = 4) -> Path:
    f = tmp_path / "lf"
    f.mkdir(exist_ok=True)
    gz_lines(f / "lbl.json.gz", [{"uid": f"l{i}", "title": f"lab {i}"} for i in range(n_labels)])
    gz_lines(f / "trn.json.gz", trn if trn is not None else [doc(0, [0]), doc(1, [1, 2]), doc(2, [3])])
    gz_lines(f / "tst.json.gz", tst if tst is not None else [doc(0, [2])])
    return f


def test_lf_fixture_is_valid(tmp_path: Path) -> None:
    assert load_dataset(lf(tmp_path)).y_trn.shape == (3, 4)


@pytest.mark.parametrize(
    ("bad_line", "words"),
    [
        ('{"uid": "x", "title": "t", "target_ind": [1], ', "bad JSON"),
        ("[1, 2]", "not a JSON object"),
        (doc(9, [4]), "label id 4 out of range: lbl has 4 labels"),
        (doc(9, [-1]), "label id -1 out of range"),
        (doc(9, [1.5]), "label id 1.5 is not an integer"),
        (doc(9, [0, 1], [1.0, -0.5]), "negative target_rel -0.5"),
        ('{"uid": "x", "title": "t", "target_ind": [1], "target_rel": [NaN]}', "non-finite target_rel nan"),
        ('{"uid": "x", "title": "t", "target_ind": [1], "target_rel": [Infinity]}', "non-finite target_rel inf"),
        (doc(9, [2, 0, 2], [1.0, 1.0, 0.5]), "duplicate label id 2 in one row"),
        (doc(9, [0, 1], [1.0]), "target_rel has 1 entries but target_ind has 2"),
        ({"uid": "x", "title": "t"}, "missing or non-list 'target_ind'"),
        ({"uid": "x", "target_ind": [0]}, "missing or non-string 'title'"),
        (doc(9, [0], ["high"]), "target_rel value 'high' is not a number"),
    ],
)
def test_lf_bad_line(tmp_path: Path, bad_line, words: str) -> None:
    f = lf(tmp_path, trn=[doc(0, [0]), doc(1, [1]), bad_line, doc(3, [2])])
    msg = err(load_dataset, f)
    assert "trn.json.gz:3:" in msg and words in msg


def test_lf_blank_line_inside(tmp_path: Path) -> None:
    assert "tst.json.gz:2: blank line" in err(load_dataset, lf(tmp_path, tst=[doc(0, [1]), "", doc(2, [1])]))


def test_lf_truncated_gzip(tmp_path: Path) -> None:
    f = lf(tmp_path, trn=[doc(i, [i % 4]) for i in range(2000)])
    data = (f / "trn.json.gz").read_bytes()
    (f / "trn.json.gz").write_bytes(data[: len(data) - 20])
    msg = err(load_dataset, f)
    assert "trn.json.gz:" in msg and ": truncated gzip file: it ends inside line" in msg


def test_lf_not_gzip(tmp_path: Path) -> None:
    f = lf(tmp_path)
    (f / "tst.json.gz").write_text(json.dumps(doc(0, [1])) + "\n")
    assert "tst.json.gz: not a valid gzip file" in err(load_dataset, f)


def test_lf_missing_and_empty_files(tmp_path: Path) -> None:
    f = lf(tmp_path)
    (f / "tst.json.gz").unlink()
    assert "tst.json.gz: missing tst.json.gz" in err(load_dataset, f)
    (f / "tst.json.gz").write_bytes(b"")
    assert "tst.json.gz: empty file" in err(load_dataset, f)
    gz_lines(f / "tst.json.gz", [])
    assert "tst.json.gz: no records in file" in err(load_dataset, f)
    gz_lines(f / "lbl.json.gz", [])
    assert "lbl.json.gz: no records" in err(load_dataset, f)
    assert "data folder not found" in err(load_dataset, tmp_path / "absent")
    (tmp_path / "other").mkdir()
    assert "other: unknown data set layout" in err(load_dataset, tmp_path / "other")


def test_lf_filter_errors(tmp_path: Path) -> None:
    f = lf(tmp_path)
    (f / "tst_filter_labels.txt").write_text("0 1\n0 4\n")  # tst has 1 row, 4 labels
    assert "tst_filter_labels.txt:2: filter pair (0, 4) out of range" in err(load_dataset, f)
    (f / "tst_filter_labels.txt").write_text("0 1\n1 0\n")
    assert "tst_filter_labels.txt:2: filter pair (1, 0) out of range" in err(load_dataset, f)
    (f / "tst_filter_labels.txt").write_text("0 1\n\n0 x\n")
    assert "tst_filter_labels.txt:3: malformed filter line '0 x'" in err(load_dataset, f)
    (f / "tst_filter_labels.txt").write_text("")
    assert load_dataset(f).tst_filter.shape == (0, 2)
    assert "filter file not found" in err(read_filter, f / "nope.txt", 1, 1)


def test_bad_text_mode(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as ei:
        load_dataset(lf(tmp_path), text="content")
    assert "data.text" in str(ei.value) and isinstance(ei.value, LeverError)


# ----------------------------------------------------------------------------- raw layout


def raw(tmp_path: Path) -> Path:
    f = tmp_path / "raw"
    f.mkdir()
    (f / "trn_X.txt").write_text("a\nb\nc\n")
    (f / "tst_X.txt").write_text("d\n")
    (f / "Y.txt").write_text("l0\nl1\nl2\n")
    (f / "trn_X_Y.txt").write_text("3 3\n0:1\n1:1 2:1\n\n")
    (f / "tst_X_Y.txt").write_text("1 3\n2:1\n")
    return f


def test_raw_fixture_is_valid(tmp_path: Path) -> None:
    ds = load_dataset(raw(tmp_path))
    assert ds.trn_texts == ["a", "b", "c"] and ds.y_trn.nnz == 3


def test_raw_row_count_mismatch(tmp_path: Path) -> None:
    f = raw(tmp_path)
    (f / "trn_X.txt").write_text("a\nb\n")
    assert "trn_X.txt: trn_X.txt has 2 lines but trn_X_Y.txt has 3 rows" in err(load_dataset, f)


def test_raw_label_count_mismatch(tmp_path: Path) -> None:
    f = raw(tmp_path)
    (f / "Y.txt").write_text("l0\nl1\n")
    assert "trn_X_Y.txt: trn_X_Y.txt has 3 label columns but Y.txt has 2 lines" in err(load_dataset, f)


def test_raw_bad_matrix_and_utf8(tmp_path: Path) -> None:
    f = raw(tmp_path)
    (f / "tst_X_Y.txt").write_text("1 3\n3:1\n")
    assert "tst_X_Y.txt:2: column index 3 out of range" in err(load_dataset, f)
    (f / "tst_X_Y.txt").write_text("1 3\n2:1\n")
    (f / "trn_X.txt").write_bytes(b"a\nb\n\xff\n")
    assert "trn_X.txt:3: invalid UTF-8" in err(load_dataset, f)
    (f / "trn_X.txt").write_text("a\nb\nc\n")
    (f / "tst_X.txt").unlink()
    assert "tst_X.txt: missing tst_X.txt" in err(load_dataset, f)


# ----------------------------------------------------------------------------- convert / validate


def test_failed_convert_writes_nothing(tmp_path: Path) -> None:
    f = lf(tmp_path, tst=[doc(0, [9])])
    msg = err(convert, f, tmp_path / "out")
    assert "tst.json.gz:1: label id 9 out of range" in msg
    assert listing(tmp_path) == ["lf"]  # no out/, no staging folder
    xc(tmp_path, "2 5\n0:1\n7:1\n", "m.txt")
    assert "m.txt:3: column index 7" in err(convert, tmp_path / "m.txt", tmp_path / "m.npz")
    assert not (tmp_path / "m.npz").exists()
    assert "same" in err(convert, tmp_path / "m.txt", tmp_path / "m.txt")
    assert "source not found" in err(convert, tmp_path / "zz.txt", tmp_path / "m.npz")


def test_convert_failure_midway_keeps_destination(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = lf(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")

    def fail(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(xc_text, "write_sparse", fail)  # write_raw fails after writing the text files
    with pytest.raises(OSError):
        convert(f, tmp_path / "out", force=True)  # replacing: the old folder stays until the new one is whole
    assert listing(tmp_path / "out") == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lf", "out"]


def test_convert_into_a_non_empty_folder_refuses_without_force(tmp_path: Path) -> None:
    """An earlier conversion's files must not survive into a new one: a stale tst_filter_labels.txt would be
    applied to a source that has none. Without --force: refused, nothing changed; with it: replaced whole."""
    first = lf(tmp_path)
    (first / "tst_filter_labels.txt").write_text("0 1\n")
    out = tmp_path / "out"
    convert(first, out)
    assert "tst_filter_labels.txt" in listing(out)
    second = tmp_path / "second"
    second.mkdir()
    for name in ("trn.json.gz", "tst.json.gz", "lbl.json.gz"):
        (second / name).write_bytes((first / name).read_bytes())
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert "destination folder exists and is not empty" in err(convert, second, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    convert(second, out, force=True)
    assert "tst_filter_labels.txt" not in listing(out)
    assert len(load_dataset(out).tst_filter) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lf", "out", "second"]  # no temp folder left


def test_validate_path_reports_first_problem(tmp_path: Path) -> None:
    assert "y.txt:3: duplicate column 1" in err(validate_path, xc(tmp_path, "2 4\n0:1\n1:1 1:1\n"))
    assert "not found" in err(validate_path, tmp_path / "zzz")


def test_writers_reject_inconsistent_dataset(tmp_path: Path) -> None:
    y = sp.csr_matrix(np.eye(2, dtype=np.float32))
    ds = Dataset("d", ["a", "b"], ["c"], ["l0", "l1"], y, y)  # 1 test text, 2 test rows
    assert "test has 1 texts but 2 label rows" in err(write_lf_json, tmp_path / "o", ds)
    assert "test has 1 texts but 2 label rows" in err(write_raw, tmp_path / "o", ds)
    assert not (tmp_path / "o").exists() or listing(tmp_path / "o") == []

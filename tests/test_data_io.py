"""Round-trips and real-data loading for lever_plugins.data (XC text, npz, LF json.gz, raw text)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lever_plugins.data import (
    Dataset,
    convert,
    load_dataset,
    read_filter,
    read_matrix,
    read_npz,
    read_sparse,
    validate_path,
    write_lf_json,
    write_npz,
    write_raw,
    write_sparse,
    xc_text,
)

REPO = Path(__file__).resolve().parents[1]
DEBTAGS = REPO / "data" / "debtags-bookworm"
WORDNET = Path("/work/shared/data/wordnet-hypernyms-lf")


# ----------------------------------------------------------------------------- oracles


def naive_parse(text: str) -> sp.csr_matrix:
    """Independent, obviously-correct reader: Python split + float(), float64 -> float32."""
    lines = text.split("\n")
    n_rows, n_cols = map(int, lines[0].split())
    rows, cols, vals = [], [], []
    for r in range(n_rows):
        for tok in lines[1 + r].split():
            i, v = tok.split(":")
            rows.append(r)
            cols.append(int(i))
            vals.append(np.float32(float(v)))
    m = sp.csr_matrix((np.array(vals, np.float32), (rows, cols)), shape=(n_rows, n_cols))
    m.sort_indices()
    return m


def same(a: sp.csr_matrix, b: sp.csr_matrix) -> bool:
    """Exact equality of shape, structure and float32 bits (explicit zeros count)."""
    return (
        a.shape == b.shape
        and np.array_equal(a.indptr, b.indptr)
        and np.array_equal(a.indices, b.indices)
        and np.array_equal(a.data.view(np.uint32), b.data.astype(np.float32).view(np.uint32))
    )


def random_csr(rng: np.random.Generator, n: int, L: int, density: float, soft: bool) -> sp.csr_matrix:
    m = sp.random(n, L, density=density, format="csr", random_state=rng, dtype=np.float32)
    if not soft:
        m.data[:] = 1.0
    m.sort_indices()
    return m


# ----------------------------------------------------------------------------- XC sparse text


def test_read_handwritten_file(tmp_path: Path) -> None:
    # Formatting variety the reader must accept: tabs, CRLF, repeated spaces, exponents, '+', '.5', '5.',
    # leading zeros, unsorted indices, an empty row, no final newline.
    text = "4 6\r\n5:0.25\t0:1e-3  2:+2\r\n\n003:.5 1:5.\n4:1.5E+2 0:0.1"
    p = tmp_path / "m.txt"
    p.write_text(text)
    got = read_sparse(p)
    want = np.zeros((4, 6), np.float32)
    want[0, [0, 2, 5]] = [1e-3, 2, 0.25]
    want[2, [1, 3]] = [5, 0.5]
    want[3, [0, 4]] = [0.1, 150]
    assert got.dtype == np.float32 and got.has_sorted_indices
    assert np.array_equal(got.toarray(), want)
    assert np.array_equal(np.diff(got.indptr), [3, 0, 2, 2])


def test_matches_naive_parser_on_random_text(tmp_path: Path) -> None:
    # Numbers in many spellings, including >18 digits and large exponents (the np.fromstring fallback).
    rng = np.random.default_rng(3)
    spellings = [
        lambda v: repr(float(v)),
        lambda v: f"{v:.3e}",
        lambda v: f"{v:.20f}",
        lambda v: f"{v:g}",
        lambda v: str(np.float32(v)),
        lambda v: f"{v * 1e-30:.6e}",
        lambda v: f"{v:.25g}",
    ]
    n, L = 300, 1000
    lines = [f"{n} {L}"]
    for _ in range(n):
        cols = rng.choice(L, size=rng.integers(0, 8), replace=False)
        toks = [f"{c}:{spellings[rng.integers(len(spellings))](rng.random() * 10)}" for c in cols]
        lines.append((" " * rng.integers(1, 3)).join(toks))
    text = "\n".join(lines) + "\n"
    p = tmp_path / "r.txt"
    p.write_text(text)
    assert same(read_sparse(p), naive_parse(text))


@pytest.mark.parametrize("soft", [False, True])
def test_write_read_roundtrip_and_text_is_pyxclib_format(tmp_path: Path, soft: bool) -> None:
    d = random_csr(np.random.default_rng(0), 200, 5000, 0.002, soft).toarray()
    d[[0, 50, 51, 199]] = 0  # empty rows: first, consecutive, last
    m = sp.csr_matrix(d)
    p = tmp_path / "y.txt"
    write_sparse(p, m)
    text = p.read_text()
    assert text.splitlines()[0] == "200 5000" and len(text.split("\n")) == 202  # header + rows + final ""
    assert same(naive_parse(text), m)  # the text itself is right, read independently
    assert same(read_sparse(p), m)


def test_multi_block_reading_and_gzip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    m = random_csr(np.random.default_rng(1), 200, 300, 0.02, soft=True)
    p = tmp_path / "y.txt"
    write_sparse(p, m)
    monkeypatch.setattr(xc_text, "BLOCK_BYTES", 97)  # lines straddle block edges
    assert same(read_sparse(p), m)
    gz = tmp_path / "y.txt.gz"
    write_sparse(gz, m)
    assert gzip.decompress(gz.read_bytes()) == p.read_bytes()
    assert same(read_sparse(gz), m)


def test_write_chunks_and_unsorted_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    m = random_csr(np.random.default_rng(2), 100, 50, 0.1, soft=True)
    d = m.toarray()
    d[::7] = 0  # runs of empty rows inside and across chunks
    m = sp.csr_matrix(d)
    # reverse each row's index order: the writer must sort
    rev = m.copy()
    for r in range(rev.shape[0]):
        lo, hi = rev.indptr[r], rev.indptr[r + 1]
        rev.indices[lo:hi] = rev.indices[lo:hi][::-1].copy()
        rev.data[lo:hi] = rev.data[lo:hi][::-1].copy()
    rev.has_sorted_indices = False
    monkeypatch.setattr(xc_text, "WRITE_NNZ", 3)
    p = tmp_path / "y.txt"
    write_sparse(p, rev)
    assert same(naive_parse(p.read_text()), m)


def test_all_empty_rows(tmp_path: Path) -> None:
    p = tmp_path / "e.txt"
    write_sparse(p, sp.csr_matrix((3, 10), dtype=np.float32))
    assert p.read_text() == "3 10\n\n\n\n"  # an empty row is an empty line
    m = read_sparse(p, n_cols=10)
    assert m.shape == (3, 10) and m.nnz == 0


F32_MAX = float(np.finfo(np.float32).max)
csr_strategy = st.integers(1, 40).flatmap(
    lambda n: st.integers(1, 60).flatmap(
        lambda L: st.tuples(
            st.just((n, L)),
            hnp.arrays(np.bool_, (n, L)),
            hnp.arrays(
                np.float32,
                (n, L),
                elements=st.floats(0, F32_MAX, width=32, allow_nan=False, allow_infinity=False),
            ),
        )
    )
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(csr_strategy)
def test_property_any_valid_csr_roundtrips(tmp_path: Path, case) -> None:
    (n, L), mask, vals = case
    rows, cols = np.nonzero(mask)
    m = sp.csr_matrix((vals[rows, cols], (rows, cols)), shape=(n, L))  # explicit zeros kept
    assert m.nnz == int(mask.sum())
    for name in ("p.txt", "p.npz"):
        path = tmp_path / name
        if name.endswith(".npz"):
            write_npz(path, m)
            back = read_npz(path)
        else:
            write_sparse(path, m)
            back = read_sparse(path)
        assert same(back, m), name


# ----------------------------------------------------------------------------- npz


def test_npz_roundtrip_and_dtype(tmp_path: Path) -> None:
    m = random_csr(np.random.default_rng(4), 50, 40, 0.1, soft=True).astype(np.float64)
    p = tmp_path / "a.npz"
    write_npz(p, m)
    back = read_npz(p)
    assert back.dtype == np.float32 and same(back, m.astype(np.float32))
    # scipy can read what we wrote, and we can read what scipy wrote (COO input too)
    assert (sp.load_npz(p) != m.astype(np.float32)).nnz == 0
    sp.save_npz(tmp_path / "b.npz", m.tocoo())
    assert same(read_npz(tmp_path / "b.npz"), m.astype(np.float32))
    assert same(read_matrix(p), back)


# ----------------------------------------------------------------------------- LF json / raw layouts


def write_lf_fixture(folder: Path, trn: list[dict], tst: list[dict], lbl: list[dict], **extra: str) -> Path:
    """Fixture written with gzip + json directly (not with the code under test)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, recs in (("trn", trn), ("tst", tst), ("lbl", lbl)):
        with gzip.open(folder / f"{name}.json.gz", "wt", encoding="utf-8") as fh:
            for r in recs:
                fh.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    for name, text in extra.items():
        (folder / name).write_text(text)
    return folder


def small_lf(folder: Path) -> Path:
    lbl = [{"uid": f"L{i}", "title": f"label {i}", "content": f"about {i}"} for i in range(5)]
    trn = [
        {"uid": "a", "title": "Alpha", "content": "first doc", "target_ind": [3, 1], "target_rel": [1.0, 0.5]},
        {"uid": "b", "title": "Beta", "content": "", "target_ind": [], "target_rel": []},
        {"uid": "c", "title": "Gamma ünï", "target_ind": [4], "target_rel": [1.0]},
    ]
    tst = [{"uid": "d", "title": "Delta", "content": "x\ny", "target_ind": [0, 2], "target_rel": [1.0, 1.0]}]
    return write_lf_fixture(folder, trn, tst, lbl, **{"tst_filter_labels.txt": "0 2\n", "trn_filter_labels.txt": ""})


def test_lf_load_text_modes_and_targets(tmp_path: Path) -> None:
    f = small_lf(tmp_path / "lf")
    ds = load_dataset(f)
    assert ds.name == "lf"
    assert ds.trn_texts == ["Alpha first doc", "Beta", "Gamma ünï"]
    assert ds.tst_texts == ["Delta x\ny"]
    assert ds.lbl_texts == [f"label {i} about {i}" for i in range(5)]
    assert ds.trn_uids == ["a", "b", "c"] and ds.lbl_uids == [f"L{i}" for i in range(5)]
    want = np.zeros((3, 5), np.float32)
    want[0, 3], want[0, 1], want[2, 4] = 1.0, 0.5, 1.0
    assert np.array_equal(ds.y_trn.toarray(), want) and ds.y_trn.has_sorted_indices
    assert ds.tst_filter.tolist() == [[0, 2]] and ds.trn_filter.shape == (0, 2)
    assert ds.tst_filter.dtype == np.int64
    titles = load_dataset(f, text="title", name="x")
    assert titles.name == "x" and titles.trn_texts == ["Alpha", "Beta", "Gamma ünï"]


def random_dataset(rng: np.random.Generator, newlines: bool = False) -> Dataset:
    n_trn, n_tst, L = 40, 15, 25
    words = ["alpha", "béta", "γάμμα", "delta", '"quoted"', "tab\there", "back\\slash"]

    def text(i: int) -> str:
        t = " ".join(rng.choice(words, size=rng.integers(1, 5))) + f" {i}"
        return t.replace(" ", "\n", 1) if newlines else t

    y_trn = random_csr(rng, n_trn, L, 0.15, soft=True)
    y_tst = random_csr(rng, n_tst, L, 0.15, soft=False)
    return Dataset(
        "rnd",
        [text(i) for i in range(n_trn)],
        [text(i) for i in range(n_tst)],
        [text(i) for i in range(L)],
        y_trn,
        y_tst,
        trn_filter=np.array([[0, 1], [5, 7]], np.int64),
        tst_filter=np.array([[2, 3]], np.int64),
        trn_uids=[f"t{i}" for i in range(n_trn)],
        tst_uids=[f"s{i}" for i in range(n_tst)],
        lbl_uids=[f"l{i}" for i in range(L)],
    )


def assert_same_dataset(a: Dataset, b: Dataset, uids: bool = True) -> None:
    assert a.trn_texts == b.trn_texts and a.tst_texts == b.tst_texts and a.lbl_texts == b.lbl_texts
    assert same(a.y_trn, b.y_trn) and same(a.y_tst, b.y_tst)
    assert np.array_equal(a.trn_filter, b.trn_filter) and np.array_equal(a.tst_filter, b.tst_filter)
    if uids:
        assert a.trn_uids == b.trn_uids and a.tst_uids == b.tst_uids and a.lbl_uids == b.lbl_uids


def test_lf_json_roundtrip(tmp_path: Path) -> None:
    ds = random_dataset(np.random.default_rng(5))
    write_lf_json(tmp_path / "out", ds)
    # the files are the LF schema, read independently
    with gzip.open(tmp_path / "out" / "trn.json.gz", "rt", encoding="utf-8") as fh:
        recs = [json.loads(line) for line in fh]
    assert [r["uid"] for r in recs] == ds.trn_uids
    assert recs[0]["target_ind"] == ds.y_trn[0].indices.tolist()
    assert sorted(recs[0]) == ["content", "target_ind", "target_rel", "title", "uid"]
    assert_same_dataset(load_dataset(tmp_path / "out"), ds)


@pytest.mark.parametrize("matrix", ["txt", "npz"])
def test_raw_roundtrip(tmp_path: Path, matrix: str) -> None:
    ds = random_dataset(np.random.default_rng(6))
    write_raw(tmp_path / "raw", ds, matrix=matrix)
    names = {p.name for p in (tmp_path / "raw").iterdir()}
    assert {"trn_X.txt", "tst_X.txt", "Y.txt", f"trn_X_Y.{matrix}", f"tst_X_Y.{matrix}"} <= names
    assert same(read_matrix(tmp_path / "raw" / f"trn_X_Y.{matrix}"), ds.y_trn)
    assert_same_dataset(load_dataset(tmp_path / "raw"), ds, uids=False)


def test_raw_flattens_newlines(tmp_path: Path) -> None:
    ds = random_dataset(np.random.default_rng(7), newlines=True)
    write_raw(tmp_path / "raw", ds)
    back = load_dataset(tmp_path / "raw")
    assert back.trn_texts == [t.replace("\n", " ") for t in ds.trn_texts]
    assert len(back.trn_texts) == ds.y_trn.shape[0]


def test_convert_folders_and_matrices(tmp_path: Path) -> None:
    ds = random_dataset(np.random.default_rng(8))
    write_lf_json(tmp_path / "lf", ds)
    convert(tmp_path / "lf", tmp_path / "raw")  # LF -> raw by default
    assert (tmp_path / "raw" / "trn_X_Y.txt").exists() and (tmp_path / "raw" / "tst_filter_labels.txt").exists()
    convert(tmp_path / "raw", tmp_path / "lf2")  # raw -> LF by default
    assert_same_dataset(load_dataset(tmp_path / "lf2"), ds, uids=False)
    convert(tmp_path / "lf", tmp_path / "rawnpz", to="raw-npz")
    assert_same_dataset(load_dataset(tmp_path / "rawnpz"), ds, uids=False)
    convert(tmp_path / "raw" / "trn_X_Y.txt", tmp_path / "m.npz")
    convert(tmp_path / "m.npz", tmp_path / "m2.txt")
    assert same(read_sparse(tmp_path / "m2.txt"), ds.y_trn)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_validate_path_summaries(tmp_path: Path) -> None:
    ds = random_dataset(np.random.default_rng(9))
    write_lf_json(tmp_path / "lf", ds)
    info = validate_path(tmp_path / "lf")
    assert info["kind"] == "lf-json" and (info["rows"], info["cols"]) == ds.y_trn.shape
    assert info["nnz"] == ds.y_trn.nnz and info["tst_rows"] == ds.y_tst.shape[0] and info["tst_filter"] == 1
    write_sparse(tmp_path / "m.txt", ds.y_tst)
    assert validate_path(tmp_path / "m.txt") == {"kind": "xc-text", "rows": 15, "cols": 25, "nnz": ds.y_tst.nnz}


# ----------------------------------------------------------------------------- real bundled data


def independent_lf(folder: Path, split: str, n_labels: int) -> tuple[sp.csr_matrix, int]:
    rows, cols, vals, n = [], [], [], 0
    with gzip.open(folder / f"{split}.json.gz", "rt", encoding="utf-8") as fh:
        for r, line in enumerate(fh):
            d = json.loads(line)
            rows += [r] * len(d["target_ind"])
            cols += d["target_ind"]
            vals += d["target_rel"]
            n += 1
    return sp.csr_matrix((np.asarray(vals, np.float32), (rows, cols)), shape=(n, n_labels)), len(cols)


def test_real_debtags_bookworm() -> None:
    ds = load_dataset(DEBTAGS)
    assert ds.y_trn.shape == (21233, 613) and ds.y_tst.shape == (9060, 613) and len(ds.lbl_texts) == 613
    assert len(ds.trn_texts) == 21233 and len(ds.tst_texts) == 9060
    for split, y in (("trn", ds.y_trn), ("tst", ds.y_tst)):
        want, nnz = independent_lf(DEBTAGS, split, 613)
        assert y.nnz == nnz and (y != want).nnz == 0
    assert ds.trn_filter.shape == (0, 2)


def test_real_wordnet_hypernyms() -> None:
    if not WORDNET.exists():
        pytest.skip(f"{WORDNET} not present")
    ds = load_dataset(WORDNET)  # about 2 s on an idle core: not marked slow
    assert ds.y_trn.shape == (57480, 17157) and ds.y_tst.shape == (24634, 17157)
    assert len(ds.lbl_texts) == 17157
    assert ds.tst_filter.shape == (5027, 2) and ds.trn_filter.shape == (12129, 2)
    want, nnz = independent_lf(WORDNET, "tst", 17157)
    assert ds.y_tst.nnz == nnz and (ds.y_tst != want).nnz == 0
    # filter pairs: a test doc that is itself a label (same uid) paired with that label
    uid_to_label = {u: i for i, u in enumerate(ds.lbl_uids)}
    assert all(uid_to_label[ds.tst_uids[r]] == c for r, c in ds.tst_filter[:200])
    assert np.array_equal(read_filter(WORDNET / "tst_filter_labels.txt", 24634, 17157), ds.tst_filter)


def test_negative_and_signed_zero_roundtrip_when_allowed(tmp_path: Path) -> None:
    vals = np.array([-1.5, -0.0, 2.5e-45, -3.4e38, 0.1, -1e-30], dtype=np.float32)
    m = sp.csr_matrix((vals, (np.zeros(6, int), np.arange(6))), shape=(1, 6))
    write_sparse(tmp_path / "s.txt", m, nonneg=False)
    assert same(read_sparse(tmp_path / "s.txt", nonneg=False), m)  # bit-exact, -0.0 included
    assert same(naive_parse((tmp_path / "s.txt").read_text()), m)

"""Hypothesis properties beyond test_data_io / test_soft_labels_props: any spelling of XC sparse text parses as
an obviously-correct reader says; any valid CSR (negative scores, explicit zeros, empty rows, gzip) round-trips
through every format with canonical bytes; blending and the soft-label builder keep their invariants on
arbitrary inputs and are deterministic to the bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_data_io import naive_parse, same
from test_soft_labels_props import problems

from lever_plugins.data import convert, read_matrix, read_sparse, write_matrix
from lever_plugins.soft_labels import blend, build_soft_labels

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
F32 = st.floats(-1e6, 1e6, width=32, allow_nan=False, allow_infinity=False)


def spell(v: float, style: int) -> str:
    """Equivalent spellings of one float32 value (all read back to the same float32)."""
    x = float(np.float32(v))
    return [repr(x), f"{x:.9g}", f"{x:.8e}", f"{x:+.9g}", f"{x:.9G}".replace("E", "e")][style]


@st.composite
def xc_texts(draw):
    """Valid XC text with arbitrary token order, spacing, number spellings and line endings."""
    n = draw(st.integers(1, 12))
    cols = draw(st.integers(1, 30))
    lines, entries = [], []
    for r in range(n):
        idx = draw(st.lists(st.integers(0, cols - 1), unique=True, max_size=min(cols, 8)))
        toks = []
        for j in idx:
            v = draw(st.floats(0, 1e6, width=32, allow_nan=False, allow_infinity=False))
            toks.append(f"{j}:{spell(v, draw(st.integers(0, 4)))}")
            entries.append((r, j, np.float32(v)))
        sep = draw(st.sampled_from([" ", "  ", "\t", " \t "]))
        lines.append(draw(st.sampled_from(["", " ", "\t"])) + sep.join(toks) + draw(st.sampled_from(["", " ", "\r"])))
    end = "\n" if lines[-1] == "" else draw(st.sampled_from(["", "\n"]))  # an empty last row needs its newline
    return f"{n} {cols}\n" + "\n".join(lines) + end, (n, cols, entries)


@FAST
@given(xc_texts())
def test_any_spelling_of_xc_text_parses_as_the_naive_reader(tmp_path: Path, case) -> None:
    text, (n, cols, entries) = case
    p = tmp_path / "y.txt"
    p.write_bytes(text.encode())
    got = read_sparse(p)
    expect = naive_parse(text.replace("\r", ""))
    assert same(got, expect)
    assert got.shape == (n, cols) and got.nnz == len(entries)


@st.composite
def csrs(draw):
    """Any CSR: negative, zero (stored) and tiny/huge values, empty rows, up to 0 non-zeros."""
    n, cols = draw(st.integers(1, 15)), draw(st.integers(1, 25))
    mask = np.array(draw(st.lists(st.booleans(), min_size=n * cols, max_size=n * cols))).reshape(n, cols)
    r, c = np.nonzero(mask)
    vals = np.array(draw(st.lists(F32 | st.sampled_from([0.0, -0.0, 1e-30, 3e38]), min_size=r.size,
                                  max_size=r.size)), dtype=np.float32)  # fmt: skip
    return sp.csr_matrix((vals, (r, c)), shape=(n, cols))


@FAST
@given(csrs())
def test_any_csr_roundtrips_every_format_with_canonical_bytes(tmp_path: Path, m: sp.csr_matrix) -> None:
    for name in ("s.txt", "s.txt.gz", "s.npz"):
        p = tmp_path / name
        write_matrix(p, m, nonneg=False)
        back = read_matrix(p, nonneg=False)
        assert same(back, m), name
        first = p.read_bytes()
        write_matrix(p, back, nonneg=False)  # writing what was read gives the same bytes (stable checksums)
        assert p.read_bytes() == first, name
    # text -> npz -> text through `lever data convert`: identical bytes at the end
    convert(tmp_path / "s.txt", tmp_path / "c.npz", nonneg=False)
    convert(tmp_path / "c.npz", tmp_path / "c.txt", nonneg=False)
    assert (tmp_path / "c.txt").read_bytes() == (tmp_path / "s.txt").read_bytes()
    assert not [q for q in tmp_path.iterdir() if ".tmp" in q.name]


@st.composite
def blend_inputs(draw):
    n, cols = draw(st.integers(1, 10)), draw(st.integers(1, 10))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    y = sp.csr_matrix((rng.random((n, cols)) < draw(st.floats(0, 0.6))).astype(np.float32))
    y.data *= rng.choice([1.0, 2.0, 0.5], size=y.nnz).astype(np.float32)  # stored relevances, not only 1
    s = (rng.random((n, cols)) < draw(st.floats(0, 0.6))) * rng.random((n, cols))  # may overlap y
    s = s.astype(np.float32)
    s[rng.random((n, cols)) < 0.1] = 1.0  # exact 1.0 teacher scores too
    lam = draw(st.sampled_from([0.0, 0.25, 0.5, 1.0]) | st.floats(0, 1))
    return y, sp.csr_matrix(s), lam, draw(st.sampled_from(["paper", "union"]))


@settings(max_examples=60, deadline=None)
@given(blend_inputs())
def test_blend_against_a_dense_oracle(case) -> None:
    y, soft, lam, mode = case
    t = blend(y, soft, lam, mode)
    yd, sd = y.toarray() != 0, soft.toarray()
    w = 1.0 if mode == "union" else 1.0 - lam
    expect = np.where(yd, 1.0, np.float32(w) * sd).astype(np.float32)
    np.testing.assert_array_equal(t.toarray(), expect)
    assert t.has_sorted_indices and (t.data > 0).all() and (t.data <= 1).all()  # no stored zeros, in (0, 1]
    coo = t.tocoo()
    assert np.unique(coo.row.astype(np.int64) * t.shape[1] + coo.col).size == t.nnz  # no duplicate (row, label)
    if lam == 1.0 and mode == "paper":
        np.testing.assert_array_equal(t.toarray(), yd.astype(np.float32))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems(), st.sampled_from([0.0, 0.5, 1.0]))
def test_builder_then_blend_targets(problem, lam) -> None:
    """The training targets: ground truth at 1, values in [0, 1], at most tau_l per label row, no duplicate
    (row, label); and the same inputs give the same bits."""
    y, doc, lbl, c, has_text = problem
    out = build_soft_labels(y, doc, lbl, c, has_text=has_text)
    again = build_soft_labels(y.copy(), None if doc is None else doc.copy(), lbl.copy(), c, has_text=has_text)
    for a, b in ((out.y_aug, again.y_aug), (out.soft, again.soft)):
        assert same(a, b)
    t = blend(out.y_aug, out.soft, lam, "paper")
    n = y.shape[0]
    assert np.all(t.multiply(out.y_aug).data == 1.0) and t.multiply(out.y_aug).nnz == out.y_aug.nnz
    assert t.nnz == 0 or (t.data.min() >= 0 and t.data.max() <= 1)
    if c.label_rows:
        assert np.diff(t[n:].indptr).max(initial=0) <= c.tau_l
    coo = t.tocoo()
    assert np.unique(coo.row.astype(np.int64) * t.shape[1] + coo.col).size == t.nnz


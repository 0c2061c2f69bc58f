"""Hypothesis: invariants of the soft-label builder on arbitrary small inputs."""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lever_plugins.config import SoftLabelConfig
from lever_plugins.soft_labels import blend, build_soft_labels


@st.composite
def problems(draw):
    n = draw(st.integers(0, 9))
    nl = draw(st.integers(1, 9))
    d = draw(st.integers(2, 4))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    # coarse integer embeddings: many exact ties and duplicates (zero rows included)
    doc = rng.integers(-2, 3, (n, d)).astype(np.float32)
    lbl = rng.integers(-2, 3, (nl, d)).astype(np.float32)
    y = (rng.random((n, nl)) < draw(st.floats(0, 0.5))).astype(np.float32)
    config = dataclasses.replace(
        SoftLabelConfig(),
        tau_l=draw(st.integers(1, 5)),
        tau_d=draw(st.integers(0, 5)),
        k=draw(st.integers(1, 12)),
        threshold=draw(st.sampled_from([0.0, 0.25, 0.5, 0.6, 0.75, 0.9, 1.0])),
        label_rows=draw(st.booleans()),
        chunk_size=draw(st.integers(1, 6)),
        calibration=draw(st.sampled_from(["linear", "sigmoid"])),
        sigmoid_a=draw(st.sampled_from([1.0, 5.0])),
    )
    has_text = rng.random(nl) > 0.2 if draw(st.booleans()) else None
    return sp.csr_matrix(y), doc, lbl, config, has_text


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_builder_invariants(problem):
    y, doc, lbl, c, has_text = problem
    out = build_soft_labels(y, doc, lbl, c, has_text=has_text)
    n, nl = y.shape
    rows = n + nl if c.label_rows else n
    assert out.y_aug.shape == out.soft.shape == (rows, nl) and out.n_docs == n
    ya, s = out.y_aug, out.soft
    # ground truth kept at 1, and only ground truth (+ label identity) is hard
    assert np.all(ya.data == 1.0)
    np.testing.assert_array_equal(ya[:n].toarray(), y.toarray() > 0)
    if c.label_rows:
        np.testing.assert_array_equal(ya[n:].toarray(), np.eye(nl))
    # soft values within [threshold, 1], disjoint from the hard targets, no duplicate (row, label)
    if s.nnz:
        assert s.data.min() >= np.float32(c.threshold) and s.data.max() <= 1.0
    assert s.multiply(ya).nnz == 0
    coo = s.tocoo()
    keys = coo.row.astype(np.int64) * nl + coo.col
    assert np.unique(keys).size == keys.size
    # label rows: at most tau_l labels (hard + soft); document rows get soft labels only by top-up
    if c.label_rows:
        per_row = np.diff((ya[n:] + s[n:]).tocsr().indptr)
        assert per_row.max() <= c.tau_l
    doc_soft = s[:n]
    if c.tau_d == 0:
        assert doc_soft.nnz == 0
    else:
        # top-up never pushes a label past tau_d and touches only labels that were short
        hard_count = np.asarray(ya.sum(axis=0)).ravel()
        added = np.bincount(doc_soft.tocoo().col, minlength=nl)
        assert np.all(added[hard_count >= c.tau_d] == 0)
        assert np.all(hard_count + added <= np.maximum(hard_count, c.tau_d))
    # labels without text: never a neighbour, never walked
    if has_text is not None:
        no_text = np.flatnonzero(~has_text)
        if c.label_rows:
            assert s[n + no_text].nnz == 0
            assert s[n:][:, no_text].nnz == 0
        assert doc_soft[:, no_text].nnz == 0
    # blended targets stay in [0, 1] and keep every ground-truth entry at 1
    t = blend(ya, s, 0.5)
    assert t.nnz == ya.nnz + s.nnz
    assert (t.multiply(ya) != ya).nnz == 0
    if t.nnz:
        assert t.data.min() > 0 and t.data.max() <= 1

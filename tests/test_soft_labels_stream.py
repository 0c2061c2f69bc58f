"""Chunked, incrementally written soft labels (soft_labels.stream) = the in-memory builder, exactly."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp

from lever_plugins.config import SoftLabelConfig
from lever_plugins.hookspecs import hookimpl
from lever_plugins.soft_labels import blend, build_soft_labels
from lever_plugins.soft_labels.stream import CsrNpzWriter, write_soft_labels


def same_csr(a: sp.spmatrix, b: sp.spmatrix) -> None:
    a, b = sp.csr_matrix(a), sp.csr_matrix(b)
    assert a.shape == b.shape and a.dtype == b.dtype == np.float32
    assert a.has_sorted_indices and b.has_sorted_indices
    np.testing.assert_array_equal(a.indptr, b.indptr)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.data, b.data)  # bit for bit


def problem(seed: int, n: int = 70, nl: int = 45, d: int = 6):
    rng = np.random.default_rng(seed)
    y = sp.random(n, nl, density=0.05, random_state=rng, format="csr", dtype=np.float32)
    y.data[:] = rng.integers(1, 4, y.nnz)  # counts: binarised by both builders
    proto = rng.standard_normal((nl // 5 + 1, d))
    lbl = (proto[np.arange(nl) // 5] + 0.5 * rng.standard_normal((nl, d))).astype(np.float32)
    doc = (np.asarray(y @ lbl) + 0.3 * rng.standard_normal((n, d))).astype(np.float32)
    return y, doc, lbl, rng.random(nl) > 0.1


@pytest.mark.parametrize("seed,label_rows,tau_d,bucket_rows,index", [
    (0, True, 5, 7, "flat"), (1, False, 4, 16, "flat"), (2, True, 0, 1000, "flat"), (3, True, 6, 9, "ivf"),
])  # fmt: skip
def test_streamed_output_equals_in_memory_build(tmp_path, seed, label_rows, tau_d, bucket_rows, index):
    y, doc, lbl, has_text = problem(seed)
    c = dataclasses.replace(SoftLabelConfig(), tau_l=4, tau_d=tau_d, k=10, threshold=0.7, chunk_size=8,
                            label_rows=label_rows, index=index, blend_lambda=0.3)
    opts = {"ivf_nlist": 4, "nprobe": 2} if index == "ivf" else None
    ref = build_soft_labels(y, doc, lbl, c, has_text=has_text, knn_options=opts)
    assert ref.soft.nnz > 20  # the case adds pairs (label rows and, with tau_d, documents)
    stats = write_soft_labels(tmp_path, y, doc, lbl, c, has_text=has_text, bucket_rows=bucket_rows,
                              knn_options=opts)
    same_csr(sp.load_npz(tmp_path / "y_aug.npz"), ref.y_aug)
    same_csr(sp.load_npz(tmp_path / "soft.npz"), ref.soft)
    same_csr(sp.load_npz(tmp_path / "targets.npz"), blend(ref.y_aug, ref.soft, 0.3))
    for key in ("pairs_label_rows", "pairs_doc_topup", "labels_touched", "labels_below_tau_d"):
        assert stats[key] == ref.stats[key], key
    assert stats["buckets"] == -(-ref.soft.shape[0] // bucket_rows)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["soft.npz", "targets.npz", "y_aug.npz"]  # no temps


def test_writer_matches_scipy_save_npz(tmp_path):
    rng = np.random.default_rng(3)
    m = sp.random(57, 31, density=0.1, random_state=rng, format="csr", dtype=np.float32)
    with CsrNpzWriter(tmp_path / "m.npz", 31) as w:
        for lo, hi in ((0, 10), (10, 10), (10, 40), (40, 57)):  # an empty block too
            w.append(m[lo:hi])
    sp.save_npz(tmp_path / "ref.npz", m, compressed=False)
    a, b = np.load(tmp_path / "m.npz"), np.load(tmp_path / "ref.npz")
    for key in ("indices", "indptr", "data", "shape"):
        np.testing.assert_array_equal(a[key], b[key])
        assert a[key].dtype == b[key].dtype, key
    assert a["format"].item() == b["format"].item() == b"csr"
    same_csr(sp.load_npz(tmp_path / "m.npz"), m)


def test_writer_leaves_nothing_on_error(tmp_path):
    (tmp_path / "m.npz").write_bytes(b"old")
    with pytest.raises(ValueError), CsrNpzWriter(tmp_path / "m.npz", 5) as w:
        w.append(sp.identity(5, format="csr", dtype=np.float32))
        w.append(sp.identity(4, format="csr", dtype=np.float32))  # wrong column count
    assert (tmp_path / "m.npz").read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]


class SquaredTeacher:
    """A third-party blend (row-local): ground truth 1, teacher-only pairs at p̂² (no lambda)."""

    def __init__(self):
        self.blocks = []

    @hookimpl(tryfirst=True)
    def lever_blend_targets(self, y, soft, config):
        self.blocks.append(y.shape[0])
        s = sp.csr_matrix(soft, dtype=np.float32, copy=True)
        s.data = s.data**2
        return blend(y, s, 0.0, mode="union")


def test_streamed_targets_come_from_the_blend_hook(tmp_path):
    """write_soft_labels asks lever_blend_targets (a plugin answers first), once per row block: never its own blend."""
    from lever_plugins import plugins

    y, doc, lbl, has_text = problem(4)
    c = dataclasses.replace(SoftLabelConfig(), tau_l=4, tau_d=3, k=10, threshold=0.7, chunk_size=8, blend_lambda=0.3)
    ref = build_soft_labels(y, doc, lbl, c, has_text=has_text)
    plugin = SquaredTeacher()
    pm = plugins.get_plugin_manager()
    pm.register(plugin, name="squared-teacher")
    try:
        write_soft_labels(tmp_path, y, doc, lbl, c, has_text=has_text, bucket_rows=20)
    finally:
        pm.unregister(name="squared-teacher")
    squared = ref.soft.copy()
    squared.data = squared.data**2
    want = blend(ref.y_aug, squared, 0.0, mode="union")
    same_csr(sp.load_npz(tmp_path / "targets.npz"), want)
    assert plugin.blocks == [20, 20, 20, 20, 20, 15]  # N + L = 115 rows in blocks of 20
    assert abs(want - blend(ref.y_aug, ref.soft, 0.3)).max() > 0.05  # the plugin's blend differs from the default

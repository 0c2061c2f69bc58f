"""Soft-label builder, calibration, blending: hand-worked cases and a loop-based reference.

Hand cases use 4-D unit vectors with components in {0, ±1/2, ±1}: every cosine is an exact multiple
of 1/4, so every calibrated score (1 + cos)/2 is exact in float32 and ties are real ties.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.special import expit

from lever_plugins.config import SoftLabelConfig
from lever_plugins.errors import ConfigError, DataError
from lever_plugins.soft_labels import KnnProvider, blend, build_soft_labels, calibrate

H = 0.5
# label embeddings of the label-row cases; p = (1 + cos)/2 between them:
#      0    1    2    3    4
# 0   1   .75  .75  .5   0
# 1  .75   1   .75  .75 .25
# 2  .75  .75   1   .75 .25
# 3  .5   .75  .75   1   .5
# 4   0   .25  .25  .5   1
LBL5 = np.array([[1, 0, 0, 0], [H, H, H, H], [H, H, H, -H], [0, 1, 0, 0], [-1, 0, 0, 0]], dtype=np.float32)
Y2 = sp.csr_matrix(np.array([[1, 0, 0, 0, 0], [0, 1, 0, 1, 0]], dtype=np.float32))  # doc0 {0}, doc1 {1,3}


def cfg(**kw) -> SoftLabelConfig:
    return dataclasses.replace(SoftLabelConfig(), **kw)


def entries(m: sp.spmatrix) -> dict[tuple[int, int], float]:
    c = sp.coo_matrix(m)
    return {(int(r), int(k)): float(v) for r, k, v in zip(c.row, c.col, c.data, strict=True)}


def hard_aug(y: sp.csr_matrix, label_rows: bool = True) -> dict[tuple[int, int], float]:
    e = {k: 1.0 for k in entries(y)}
    if label_rows:
        e.update({(y.shape[0] + l, l): 1.0 for l in range(y.shape[1])})
    return e


def check_invariants(out, threshold: float) -> None:
    assert out.y_aug.dtype == np.float32 and out.soft.dtype == np.float32
    assert out.y_aug.shape == out.soft.shape
    assert out.soft.has_sorted_indices and out.y_aug.has_sorted_indices
    assert np.all(out.y_aug.data == 1.0)
    assert out.soft.multiply(out.y_aug).nnz == 0  # ground truth never overwritten
    if out.soft.nnz:
        assert out.soft.data.min() >= np.float32(threshold) and out.soft.data.max() <= 1.0


# ---------------------------------------------------------------- label rows


def test_tau_l_1_adds_nothing():
    out = build_soft_labels(Y2, None, LBL5, cfg(tau_l=1, threshold=0.0))
    assert out.soft.nnz == 0 and out.n_docs == 2
    assert entries(out.y_aug) == hard_aug(Y2)
    assert out.y_aug.shape == (7, 5)


def test_tau_l_3_threshold_075():
    out = build_soft_labels(Y2, None, LBL5, cfg(tau_l=3, threshold=0.75))
    # walk of row 2+l: skip itself, take >= .75 in (score desc, id asc) order, at most 2
    expected = {
        (2, 1): 0.75, (2, 2): 0.75,  # label 0: 1, 2 (.75); 3 (.5) not needed anyway
        (3, 0): 0.75, (3, 2): 0.75,  # label 1: 0, 2, 3 tie at .75 -> smallest ids 0, 2
        (4, 0): 0.75, (4, 1): 0.75,  # label 2: 0, 1, 3 tie -> 0, 1
        (5, 1): 0.75, (5, 2): 0.75,  # label 3: 1, 2 (.75)
        # label 4: best neighbour 3 at .5 < .75 -> nothing
    }  # fmt: skip
    assert entries(out.soft) == expected
    assert entries(out.y_aug) == hard_aug(Y2)
    assert out.stats["pairs_label_rows"] == 8 and out.stats["pairs_doc_topup"] == 0
    assert out.stats["labels_touched"] == 3
    check_invariants(out, 0.75)


@pytest.mark.parametrize("index", ["hnsw", "ivf"])
def test_approximate_indices_agree_on_a_tiny_case(index):
    exact = build_soft_labels(Y2, None, LBL5, cfg(tau_l=3, threshold=0.75))
    approx = build_soft_labels(Y2, None, LBL5, cfg(tau_l=3, threshold=0.75, index=index))
    assert entries(approx.soft) == entries(exact.soft)


def test_threshold_equality_is_kept_and_walk_stops_at_first_below():
    out = build_soft_labels(Y2, None, LBL5, cfg(tau_l=5, threshold=0.5))
    soft = entries(out.soft)
    # label 4: neighbour 3 at exactly .5 is kept, then 1 at .25 stops the walk
    assert {k: v for k, v in soft.items() if k[0] == 6} == {(6, 3): 0.5}
    # label 0: 1, 2 (.75), 3 (.5, kept), then 4 (0) stops
    assert {k: v for k, v in soft.items() if k[0] == 2} == {(2, 1): 0.75, (2, 2): 0.75, (2, 3): 0.5}
    # label 3: 1, 2 (.75) then 0 and 4 tie at .5 -> both fit (tau_l - 1 = 4)
    assert {k: v for k, v in soft.items() if k[0] == 5} == {
        (5, 1): 0.75, (5, 2): 0.75, (5, 0): 0.5, (5, 4): 0.5
    }  # fmt: skip
    out2 = build_soft_labels(Y2, None, LBL5, cfg(tau_l=5, threshold=0.5 + 1e-6))
    assert (6, 3) not in entries(out2.soft) and (2, 3) not in entries(out2.soft)


def test_k_cuts_neighbours_and_ties_keep_smallest_id():
    # label 1's neighbours by (score desc, id asc): 1, 0, 2, 3, 4; k = 3 retrieves 1, 0, 2 only
    out = build_soft_labels(Y2, None, LBL5, cfg(tau_l=4, threshold=0.75, k=3))
    assert {k for k in entries(out.soft) if k[0] == 3} == {(3, 0), (3, 2)}
    out = build_soft_labels(Y2, None, LBL5, cfg(tau_l=4, threshold=0.75, k=5))
    assert {k for k in entries(out.soft) if k[0] == 3} == {(3, 0), (3, 2), (3, 3)}


def test_label_without_text():
    has_text = np.array([True, True, False, True, True])
    out = build_soft_labels(Y2, None, LBL5, cfg(tau_l=3, threshold=0.75), has_text=has_text)
    expected = {
        (2, 1): 0.75,  # label 0: 1 (.75), then 3 (.5) stops; 2 is not a candidate
        (3, 0): 0.75, (3, 3): 0.75,  # label 1: 0, 3 (2 skipped as textless)
        (5, 1): 0.75,  # label 3: 1, then 0 (.5) stops
    }  # fmt: skip
    assert entries(out.soft) == expected
    assert out.y_aug[2 + 2, 2] == 1.0  # its label row still holds itself
    assert out.stats["labels_without_text"] == 1


def test_no_label_rows():
    out = build_soft_labels(Y2, None, LBL5, cfg(tau_l=3, label_rows=False))
    assert out.y_aug.shape == (2, 5) and out.soft.nnz == 0
    assert entries(out.y_aug) == hard_aug(Y2, label_rows=False)


def test_ground_truth_is_binarised():
    y = sp.csr_matrix(np.array([[3.0, 0, 0, 0, 0], [0, 7.0, 0, 0.5, 0]], dtype=np.float32))
    out = build_soft_labels(y, None, LBL5, cfg(tau_l=3))
    assert entries(out.y_aug) == hard_aug(Y2)


def test_sigmoid_calibration_in_builder():
    a, c = 4.0, -1.0
    out = build_soft_labels(
        Y2, None, LBL5, cfg(tau_l=2, calibration="sigmoid", sigmoid_a=a, sigmoid_c=c, threshold=0.7)
    )
    p = float(expit(a * 0.5 + c))  # cos .5 -> sigmoid(4·.5 − 1) = sigmoid(1) ≈ .731 >= .7
    soft = entries(out.soft)
    # row of label 0: neighbour 1 (cos .5); label 4: best is 3 at cos 0 -> sigmoid(-1) ≈ .27 < .7
    assert soft[(2, 1)] == pytest.approx(p, abs=1e-6)
    assert not any(r == 6 for r, _ in soft)


# ---------------------------------------------------------------- document top-up

LBL3 = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]], dtype=np.float32)  # A, B, C
DOC4 = np.array([[H, H, H, H], [0, 1, 0, 0], [0, 0, 1, 0], [H, -H, H, H]], dtype=np.float32)
# p(doc, label):  A    B    C
#   d0          .75  .75  .75
#   d1          .5    1   .5
#   d2          .5   .5    1
#   d3          .75  .25  .75
Y4 = sp.csr_matrix(np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [1, 0, 0]], dtype=np.float32))


def test_doc_topup_counts_label_row_and_skips_positives():
    out = build_soft_labels(Y4, DOC4, LBL3, cfg(tau_l=1, tau_d=3, threshold=0.5))
    # counts with label rows: A 4 (untouched), B 2 (needs 1), C 1 (needs 2)
    # B walks d1 (positive: skipped), d0 (.75) -> added; C walks d2 (1.0), d0 (.75)
    assert entries(out.soft) == {(0, 1): 0.75, (2, 2): 1.0, (0, 2): 0.75}
    assert out.stats["pairs_doc_topup"] == 3 and out.stats["labels_below_tau_d"] == 2
    total = np.asarray((out.y_aug + out.soft).astype(bool).sum(axis=0)).ravel()
    np.testing.assert_array_equal(total, [4, 3, 3])
    check_invariants(out, 0.5)


def test_doc_topup_without_label_rows_needs_more():
    out = build_soft_labels(Y4, DOC4, LBL3, cfg(tau_l=1, tau_d=3, threshold=0.5, label_rows=False))
    # counts A 3, B 1 (needs 2: d0 .75, d2 .5), C 0 (needs 3: d2 1.0, d0 .75, d3 .75)
    assert entries(out.soft) == {(0, 1): 0.75, (2, 1): 0.5, (2, 2): 1.0, (0, 2): 0.75, (3, 2): 0.75}
    assert out.soft.shape == (4, 3)


def test_doc_topup_threshold_stops_walk():
    out = build_soft_labels(Y4, DOC4, LBL3, cfg(tau_l=1, tau_d=3, threshold=0.8))
    # B: d1 skipped (positive), d0 .75 < .8 stops; C: d2 (1.0), then d0 .75 stops
    assert entries(out.soft) == {(2, 2): 1.0}


def test_doc_topup_and_label_rows_together():
    out = build_soft_labels(Y4, DOC4, LBL3, cfg(tau_l=2, tau_d=3, threshold=0.5))
    # label rows: every pair of A, B, C has cos 0 -> p .5; ties -> smallest other id
    lbl_part = {(4, 1): 0.5, (5, 0): 0.5, (6, 0): 0.5}
    # top-up counts only HARD positives, as upstream: same as without label neighbours
    doc_part = {(0, 1): 0.75, (2, 2): 1.0, (0, 2): 0.75}
    assert entries(out.soft) == lbl_part | doc_part


def test_doc_topup_needs_doc_embeddings():
    with pytest.raises(ConfigError, match="tau_d"):
        build_soft_labels(Y4, None, LBL3, cfg(tau_d=2))
    with pytest.raises(DataError):
        build_soft_labels(Y4, DOC4[:3], LBL3, cfg(tau_d=2))
    with pytest.raises(DataError):
        build_soft_labels(Y4, DOC4, LBL3[:2], cfg())
    with pytest.raises(DataError):
        build_soft_labels(Y4, DOC4, LBL3, cfg(), has_text=np.ones(2, dtype=bool))


def test_textless_label_gets_no_topup_and_is_no_neighbour():
    has_text = np.array([True, True, False])
    out = build_soft_labels(Y4, DOC4, LBL3, cfg(tau_l=2, tau_d=3, threshold=0.5), has_text=has_text)
    assert entries(out.soft) == {(4, 1): 0.5, (5, 0): 0.5, (0, 1): 0.75}


@pytest.mark.parametrize("seed", range(3))
def test_provider_matches_the_loop_reference(seed):
    """The registered provider (what the pipeline calls) against the brute-force loops of ``reference``,
    not against the function it wraps: a provider that dropped has_text or a config key would fail."""
    from lever_plugins import plugins

    rng = np.random.default_rng(100 + seed)
    n, nl = 24, 18
    y = _random_y(rng, n, nl, 0.1)
    c = cfg(tau_l=int(rng.integers(2, 5)), tau_d=int(rng.integers(1, 5)), k=int(rng.integers(4, 20)),
            threshold=float(rng.choice([0.5, 0.625, 0.75])), label_rows=seed != 2, chunk_size=5)  # fmt: skip
    has_text = rng.random(nl) > 0.2
    doc, lbl = _lattice(rng, n), _lattice(rng, nl)
    provider = plugins.lookup(plugins.soft_label_providers(), "knn", "soft-label provider", "x").factory(c)
    assert isinstance(provider, KnnProvider)
    out = provider.build(y, doc, lbl, has_text=has_text)
    hard, soft = reference(y, doc, lbl, c, has_text)
    assert entries(out.y_aug) == hard
    assert entries(out.soft) == soft
    assert out.soft.nnz > 0


# ---------------------------------------------------------------- reference implementation


def reference(y, doc_emb, lbl_emb, c: SoftLabelConfig, has_text=None):
    """Slow, obviously correct loops over the official rules, with a brute-force kNN."""
    n, nl = y.shape
    has_text = [True] * nl if has_text is None else list(has_text)
    pos = {(int(r), int(k)) for r, k in zip(*y.nonzero(), strict=True)}
    hard = set(pos) | ({(n + l, l) for l in range(nl)} if c.label_rows else set())
    soft = {}

    def unit(x):
        x = np.asarray(x, dtype=np.float64)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    def prob(cos):
        if c.calibration == "linear" or (c.calibration == "auto" and (c.mode == "sparse" or nl <= 3000)):
            return (1 + cos) / 2
        return 1 / (1 + np.exp(-(c.sigmoid_a * cos + c.sigmoid_c)))

    def neighbours(qv, base, allowed):
        cand = [j for j in range(len(base)) if allowed[j]]
        scored = sorted((-float(qv @ base[j]), j) for j in cand)
        return [(j, -s) for s, j in scored[: c.k]]

    L = unit(lbl_emb)
    if c.label_rows:
        for l in range(nl):
            if not has_text[l]:
                continue
            row = {l}
            for j, cos in neighbours(L[l], L, has_text):
                if len(row) >= c.tau_l:
                    break
                p = prob(cos)
                if p < np.float32(c.threshold):
                    break
                if j in row:
                    continue
                soft[(n + l, j)] = p
                row.add(j)
    if c.tau_d > 0:
        D = unit(doc_emb)
        for l in range(nl):
            count = sum(1 for (r, k) in hard if k == l)
            if count >= c.tau_d or not has_text[l]:
                continue
            for d, cos in neighbours(L[l], D, [True] * n):
                if count >= c.tau_d:
                    break
                p = prob(cos)
                if p < np.float32(c.threshold):
                    break
                if (d, l) in pos:
                    continue
                soft[(d, l)] = p
                count += 1
    return {k: 1.0 for k in hard}, soft


def _lattice(rng, n):
    """Random picks among the 24 unit vectors ±e_i and (±1/2)^4: exact cosines, many ties."""
    axes = np.vstack([np.eye(4), -np.eye(4)])
    halves = np.array([[H * s for s in ((-1) ** np.array([i >> b & 1 for b in range(4)]))] for i in range(16)])
    pool = np.vstack([axes, halves]).astype(np.float32)
    return pool[rng.integers(0, len(pool), n)]


def _random_y(rng, n, nl, density):
    y = sp.random(n, nl, density=density, random_state=rng, format="csr", dtype=np.float32)
    y.data[:] = 1
    return y


@pytest.mark.parametrize("seed", range(4))
def test_matches_reference_exactly_on_lattice(seed):
    rng = np.random.default_rng(seed)
    n, nl = 30, 25
    y = _random_y(rng, n, nl, 0.08)
    c = cfg(
        tau_l=int(rng.integers(1, 6)), tau_d=int(rng.integers(0, 6)), k=int(rng.integers(3, 40)),
        threshold=float(rng.choice([0.5, 0.625, 0.75, 0.875])), label_rows=bool(seed % 3 != 2),
        chunk_size=7,
    )  # fmt: skip
    has_text = rng.random(nl) > 0.15
    doc, lbl = _lattice(rng, n), _lattice(rng, nl)
    out = build_soft_labels(y, doc, lbl, c, has_text=has_text)
    hard, soft = reference(y, doc, lbl, c, has_text)
    assert entries(out.y_aug) == hard
    assert entries(out.soft) == soft  # exact, values included
    check_invariants(out, c.threshold)


@pytest.mark.parametrize("calibration", ["linear", "sigmoid"])
def test_matches_reference_on_random_embeddings(calibration):
    rng = np.random.default_rng(7)
    n, nl, d = 80, 40, 6
    y = _random_y(rng, n, nl, 0.04)
    c = cfg(tau_l=4, tau_d=4, k=12, threshold=0.6, chunk_size=16, calibration=calibration, sigmoid_a=3.0)
    doc = rng.standard_normal((n, d)).astype(np.float32)
    lbl = rng.standard_normal((nl, d)).astype(np.float32)
    out = build_soft_labels(y, doc, lbl, c)
    hard, soft = reference(y, doc, lbl, c)
    got = entries(out.soft)
    assert entries(out.y_aug) == hard
    assert got.keys() == soft.keys()
    assert len(soft) > 20  # the case exercises both rules
    np.testing.assert_allclose([got[k] for k in soft], list(soft.values()), atol=1e-6)


# ---------------------------------------------------------------- calibration


def test_calibrate_linear_and_sigmoid():
    cos = np.array([-1.0, -0.5, 0.0, 0.6, 1.0], dtype=np.float32)
    np.testing.assert_array_equal(calibrate(cos), np.array([0.0, 0.25, 0.5, 0.8, 1.0], dtype=np.float32))
    for a, c in [(1.0, 0.0), (5.0, -2.0), (0.3, 1.0)]:
        got = calibrate(cos, "sigmoid", a, c)
        np.testing.assert_allclose(got, expit(a * cos.astype(np.float64) + c), rtol=1e-6)
        assert np.all(np.diff(got) > 0)  # increasing in the cosine (upstream's label path decreases)
    assert calibrate(np.array([-np.inf]), "sigmoid")[0] == 0.0
    with pytest.raises(ConfigError):
        calibrate(cos, "sigmoid", a=-1.0)
    with pytest.raises(ConfigError):
        calibrate(cos, "softmax")


# ---------------------------------------------------------------- blending


def _random_pair(rng, n=12, nl=9):
    y = _random_y(rng, n, nl, 0.2)
    s = _random_y(rng, n, nl, 0.25)
    s = s - s.multiply(y)  # teacher pairs are disjoint from ground truth, as the builder makes them
    s.eliminate_zeros()
    s.data = rng.uniform(0.6, 1.0, s.nnz).astype(np.float32)
    return sp.csr_matrix(y), sp.csr_matrix(s)


@pytest.mark.parametrize("lam", [0.0, 0.3, 0.5, 1.0])
def test_blend_paper_equals_two_bce_terms(lam):
    """The paper's loss λ·BCE(y) + (1−λ)·BCE(p̂), with p̂ the teacher's soft-label matrix as the official
    rules define it (built here by the loop ``reference``: ground truth and label rows at 1, teacher
    pairs at their calibrated score, everything else 0), equals BCE on the blended targets. The loss is
    torch's autograd BCE, gradients included, not a formula written next to ``blend``."""
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(11)
    n, nl = 20, 12
    y = _random_y(rng, n, nl, 0.12)
    c = cfg(tau_l=3, tau_d=3, k=10, threshold=0.5, chunk_size=6)
    doc, lbl = _lattice(rng, n), _lattice(rng, nl)
    out = build_soft_labels(y, doc, lbl, c)
    hard, soft = reference(y, doc, lbl, c)
    assert soft, "the case must have teacher pairs"
    shape = (n + nl, nl)
    y_aug, p_hat = np.zeros(shape), np.zeros(shape)
    for (r, k), v in hard.items():
        y_aug[r, k] = p_hat[r, k] = v
    for (r, k), v in soft.items():
        p_hat[r, k] = v
    z = torch.tensor(rng.standard_normal(shape) * 3, requires_grad=True)
    t = torch.tensor(blend(out.y_aug, out.soft, lam).toarray(), dtype=torch.float64)
    got = F.binary_cross_entropy_with_logits(z, t, reduction="sum")
    want = lam * F.binary_cross_entropy_with_logits(z, torch.tensor(y_aug), reduction="sum") + (
        1 - lam
    ) * F.binary_cross_entropy_with_logits(z, torch.tensor(p_hat), reduction="sum")
    g_got, = torch.autograd.grad(got, z)
    g_want, = torch.autograd.grad(want, z)
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    np.testing.assert_allclose(g_got.numpy(), g_want.numpy(), atol=1e-6)


def test_blend_union_equals_official_matrix():
    rng = np.random.default_rng(12)
    y, s = _random_pair(rng)
    yc, sc = y.tocoo(), s.tocoo()
    # the official script: concatenate (row, col, value) of ground truth and teacher pairs
    official = sp.csr_matrix(
        (np.concatenate([yc.data, sc.data]), (np.concatenate([yc.row, sc.row]), np.concatenate([yc.col, sc.col]))),
        shape=y.shape,
    )
    got = blend(y, s, 0.5, mode="union")
    np.testing.assert_array_equal(got.toarray(), official.toarray())
    assert entries(blend(y, s, 0.0, mode="paper")) == entries(got)


def test_blend_format_and_range():
    rng = np.random.default_rng(13)
    y, s = _random_pair(rng)
    for lam, mode in [(0.5, "paper"), (1.0, "paper"), (0.2, "union")]:
        t = blend(y, s, lam, mode=mode)
        assert isinstance(t, sp.csr_matrix) and t.dtype == np.float32 and t.has_sorted_indices
        assert t.data.min() > 0 and t.data.max() <= 1  # no explicit zeros
    t1 = blend(y, s, 1.0)
    assert entries(t1) == entries(y)  # lambda = 1: the teacher's entries vanish, not stored as 0
    t = blend(y, s, 0.25)
    assert all(t[r, k] == pytest.approx(0.75 * v) for (r, k), v in entries(s).items())


def test_blend_keeps_ground_truth_at_one_even_if_soft_has_a_value_there():
    y = sp.csr_matrix(np.array([[1, 0], [0, 1]], dtype=np.float32))
    s = sp.csr_matrix(np.array([[0.7, 0.9], [0, 0]], dtype=np.float32))
    assert entries(blend(y, s, 0.5)) == pytest.approx({(0, 0): 1.0, (0, 1): 0.45, (1, 1): 1.0})
    assert entries(blend(y * 3, s, 0.5, mode="union")) == pytest.approx({(0, 0): 1.0, (0, 1): 0.9, (1, 1): 1.0})


def test_blend_rejects_bad_input():
    y = sp.csr_matrix(np.eye(2, dtype=np.float32))
    with pytest.raises(DataError):
        blend(y, sp.csr_matrix((3, 2), dtype=np.float32), 0.5)
    with pytest.raises(DataError):
        blend(y, sp.csr_matrix(np.array([[0, 1.5], [0, 0]], dtype=np.float32)), 0.5)
    with pytest.raises(ConfigError):
        blend(y, y, 1.5)
    with pytest.raises(ConfigError):
        blend(y, y, 0.5, mode="max")


@pytest.mark.parametrize(("lam", "mode"), [(0.3, "paper"), (0.8, "paper"), (0.3, "union")])
def test_builtin_hook_blends_with_config_lambda(lam, mode):
    """The hook the pipeline calls (through the plugin manager) against the targets written out entry by
    entry from the definitions: paper λ·y + (1−λ)·p̂ (p̂ = 1 on ground truth, the teacher's value
    elsewhere); union: ground truth 1, teacher pairs at their value. λ and the mode come from the config."""
    from lever_plugins import plugins

    y, s = _random_pair(np.random.default_rng(14))
    got = plugins.get_plugin_manager().hook.lever_blend_targets(y=y, soft=s, config=cfg(blend_lambda=lam,
                                                                                          blend_mode=mode))
    want: dict[tuple[int, int], float] = {}
    for key, v in entries(s).items():
        want[key] = (1 - lam) * v if mode == "paper" else v
    for key in entries(y):
        want[key] = 1.0
    assert isinstance(got, sp.csr_matrix) and got.dtype == np.float32
    g = entries(got)
    assert g.keys() == want.keys()
    np.testing.assert_allclose([g[k] for k in want], list(want.values()), rtol=1e-6)


def test_calibrated_scores_stay_in_unit_interval_for_rounded_cosines():
    from lever_plugins.soft_labels.calibrate import calibrate

    cos = np.array([1.0000001, -1.0000001, 0.3], dtype=np.float32)
    for method in ("linear", "sigmoid"):
        p = calibrate(cos, method)
        assert (p >= 0).all() and (p <= 1).all()
    assert calibrate(cos, "linear")[0] == 1.0 and calibrate(cos, "linear")[1] == 0.0

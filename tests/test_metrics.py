"""Metrics against napkinxc (the oracle named in DESIGN.md) and brute-force loops written here."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from lever_plugins.errors import ConfigError, DataError
from lever_plugins.metrics import evaluate, inv_propensity, propensity_ab, topk_labels

nm = pytest.importorskip("napkinxc.metrics")

FAMS_NAPKIN = {
    "P": lambda Y, S, w, k: nm.precision_at_k(Y, S, k=k),
    "R": lambda Y, S, w, k: nm.recall_at_k(Y, S, k=k),
    "nDCG": lambda Y, S, w, k: nm.ndcg_at_k(Y, S, k=k),
    "PSP": lambda Y, S, w, k: nm.psprecision_at_k(Y, S, w, k=k),
    "PSnDCG": lambda Y, S, w, k: nm.psndcg_at_k(Y, S, w, k=k),
    "C": lambda Y, S, w, k: nm.coverage_at_k(Y, S, k=k),
}


def make_case(seed: int, n: int = 120, L: int = 30, max_true: int = 4, max_pred: int = 8,
              empty_rows: float = 0.0, absent_train: int = 0, soft_truth: bool = False):
    """Random truth / tie-free scores / train; adversarial knobs for empty rows and unseen labels."""
    rng = np.random.default_rng(seed)
    rows_t, cols_t = [], []
    for i in range(n):
        m = 0 if rng.random() < empty_rows else int(rng.integers(1, max_true + 1))
        cols = rng.choice(L, size=m, replace=False)
        rows_t += [i] * m
        cols_t += cols.tolist()
    vals = rng.uniform(0.2, 1.0, len(rows_t)) if soft_truth else np.ones(len(rows_t))
    truth = sp.csr_matrix((vals, (rows_t, cols_t)), shape=(n, L))
    rows_s, cols_s = [], []
    for i in range(n):
        m = int(rng.integers(0, max_pred + 1))  # some rows get fewer than k predictions, even none
        # bias predictions towards true labels so that hits are frequent
        pool = np.union1d(truth[i].indices, rng.choice(L, size=m, replace=False))
        cols = rng.choice(pool, size=min(m, len(pool)), replace=False)
        rows_s += [i] * len(cols)
        cols_s += cols.tolist()
    scores = sp.csr_matrix((rng.random(len(rows_s)), (rows_s, cols_s)), shape=(n, L))
    train = (sp.random(4 * n, L, density=0.1, random_state=seed, format="csr") > 0).astype(np.float64)
    if absent_train:
        keep = np.ones(L)
        keep[rng.choice(L, size=absent_train, replace=False)] = 0
        train = sp.csr_matrix(train @ sp.diags(keep))
        train.eliminate_zeros()
    return scores, truth, train


def _binary(y):
    y = sp.csr_matrix(y, copy=True)
    y.eliminate_zeros()
    y.data[:] = 1
    return y


CASES = {
    "plain": dict(seed=1),
    "empty_rows": dict(seed=2, empty_rows=0.3),
    "absent_train_labels": dict(seed=3, absent_train=10),
    "few_predictions": dict(seed=4, max_pred=3),
    "soft_truth": dict(seed=5, soft_truth=True),
    "many_labels_per_row": dict(seed=6, max_true=12, max_pred=15, L=25),
}


@pytest.mark.parametrize("case", list(CASES))
def test_matches_napkinxc(case):
    scores, truth, train = make_case(**CASES[case])
    A, B = 0.55, 1.5
    w = nm.Jain_et_al_inverse_propensity(train, A, B)
    got = evaluate(scores, truth, train, k=(1, 3, 5, 10), A=A, B=B)
    yb = _binary(truth)
    for fam, fn in FAMS_NAPKIN.items():
        ref = fn(yb, scores, w, 10)
        for k in (1, 3, 5, 10):
            assert got[f"{fam}@{k}"] == pytest.approx(ref[k - 1], abs=1e-9), (fam, k)
            assert 0.0 <= got[f"{fam}@{k}"] <= 1.0


def _all_labels_in_truth(seed):
    scores, truth, train = make_case(seed, n=200, L=20, max_true=5)
    L = truth.shape[1]
    # make every label id occur in the truth: napkinxc then averages over exactly those labels
    extra = sp.csr_matrix((np.ones(L), (np.arange(L) % truth.shape[0], np.arange(L))), shape=truth.shape)
    return scores, _binary(truth + extra), train


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_macro_matches_napkinxc_when_every_label_is_in_truth(seed):
    scores, truth, _ = _all_labels_in_truth(seed)
    got = evaluate(scores, truth, k=(1, 3, 5))
    refs = {"macroP": nm.macro_precision_at_k, "macroR": nm.macro_recall_at_k, "macroF1": nm.macro_f1_measure_at_k}
    for fam, fn in refs.items():
        ref = fn(truth, scores, k=5)
        for k in (1, 3, 5):
            assert got[f"{fam}@{k}"] == pytest.approx(ref[k - 1], abs=1e-9), (fam, k)


def brute_force(scores, truth, k, w=None, row_weight=None):
    """Straight per-row loops over the definitions in ranking.py's docstring (ties: lower id first)."""
    truth = _binary(truth)
    n, L = truth.shape
    rw = np.ones(n) if row_weight is None else row_weight
    disc = [1 / np.log2(r + 2) for r in range(k)]
    acc = dict(P=0.0, R=0.0, nDCG=0.0, psp=0.0, psp_best=0.0, psn=0.0, psn_best=0.0)
    tp, pred, cnt = np.zeros(L), np.zeros(L), np.zeros(L)
    for i in range(n):
        row = scores[i]
        ranked = [lab for _, lab in sorted(zip(-row.data, row.indices, strict=True))][:k]
        t = set(truth[i].indices.tolist())
        hits = [lab in t for lab in ranked]
        acc["P"] += rw[i] * sum(hits) / k
        acc["R"] += rw[i] * (sum(hits) / len(t) if t else 0.0)
        idcg = sum(disc[: min(k, len(t))])
        if t:
            acc["nDCG"] += rw[i] * sum(d for d, h in zip(disc, hits, strict=False) if h) / idcg
        if w is not None:
            acc["psp"] += rw[i] * sum(w[lab] for lab, h in zip(ranked, hits, strict=True) if h)
            best = sorted((w[lab] for lab in t), reverse=True)[:k]
            acc["psp_best"] += rw[i] * sum(best)
            if t:
                acc["psn"] += rw[i] * sum(w[lab] * disc[r] for r, (lab, h) in enumerate(zip(ranked, hits,
                                                                                           strict=True)) if h) / idcg
                acc["psn_best"] += rw[i] * sum(b * disc[r] for r, b in enumerate(best)) / idcg
        if rw[i] > 0:
            for lab in ranked:
                pred[lab] += rw[i]
                tp[lab] += rw[i] * (lab in t)
            for lab in t:
                cnt[lab] += rw[i]
    tot = rw.sum()
    present = cnt > 0
    out = {f"P@{k}": acc["P"] / tot, f"R@{k}": acc["R"] / tot, f"nDCG@{k}": acc["nDCG"] / tot,
           f"C@{k}": (tp[present] > 0).mean(),
           f"macroP@{k}": np.mean([tp[l] / pred[l] if pred[l] else 0.0 for l in np.flatnonzero(present)]),
           f"macroR@{k}": np.mean(tp[present] / cnt[present]),
           f"macroF1@{k}": np.mean(2 * tp[present] / (pred[present] + cnt[present]))}
    if w is not None:
        out[f"PSP@{k}"] = acc["psp"] / acc["psp_best"]
        out[f"PSnDCG@{k}"] = acc["psn"] / acc["psn_best"]
    return out


def test_ties_break_to_lower_label_id_everywhere():
    scores, truth, train = make_case(21, n=150, L=12, max_pred=10)
    scores.data = np.round(scores.data * 3) / 3  # heavy ties
    w = inv_propensity(train, 0.55, 1.5)
    for k in (1, 3, 5):
        got = evaluate(scores, truth, train, k=k, A=0.55, B=1.5)
        ref = brute_force(scores, truth, k, w)
        for key, v in ref.items():
            assert got[key] == pytest.approx(v, abs=1e-9), key
    # napkinxc's CSR path sorts ties in an unspecified order; given our ranking as lists, it agrees.
    top = topk_labels(scores, 5)
    ranking = [[int(x) for x in row if x >= 0] for row in top]
    got = evaluate(scores, truth, train, k=5, A=0.55, B=1.5)
    assert got["P@5"] == pytest.approx(nm.precision_at_k(_binary(truth), ranking, k=5)[4], abs=1e-12)
    assert got["PSP@5"] == pytest.approx(nm.psprecision_at_k(_binary(truth), ranking, w, k=5)[4], abs=1e-12)


def test_topk_order_and_padding():
    # row 0 has a tie, row 1 no prediction, row 2 an explicit zero (a stored entry is a prediction)
    s = sp.csr_matrix(([0.5, 0.9, 0.5, -1.0, 0.0, 2.0], ([0, 0, 0, 2, 2, 2], [0, 1, 2, 0, 1, 3])), shape=(3, 4))
    top = topk_labels(s, 3)
    assert top.tolist() == [[1, 0, 2], [-1, -1, -1], [3, 1, 0]]


def test_macro_averages_over_labels_present_in_truth():
    scores, truth, train = make_case(31, n=80, L=40, max_true=2)  # many labels never in truth
    assert (np.asarray(_binary(truth).sum(0)).ravel() == 0).any()
    got = evaluate(scores, truth, k=(3,))
    ref = brute_force(scores, truth, 3)
    for fam in ("macroP", "macroR", "macroF1", "C"):
        assert got[f"{fam}@3"] == pytest.approx(ref[f"{fam}@3"], abs=1e-12)


def test_inverse_propensity_matches_napkinxc_and_binarises():
    _, _, train = make_case(41, absent_train=5)
    for A, B in [(0.55, 1.5), (0.6, 2.6), (0.5, 0.4)]:
        np.testing.assert_allclose(inv_propensity(train, A, B), nm.Jain_et_al_inverse_propensity(train, A, B),
                                   rtol=1e-12)
    soft = train.copy()
    soft.data = np.random.default_rng(0).uniform(0.1, 3.0, soft.nnz)  # valued matrix: same counts
    np.testing.assert_allclose(inv_propensity(soft, 0.55, 1.5), inv_propensity(train, 0.55, 1.5))
    w = inv_propensity(train, 0.55, 1.5)
    absent = np.asarray(train.sum(0)).ravel() == 0
    assert np.all(w[absent] > w[~absent].max())


def test_propensity_ab_by_name():
    assert propensity_ab("LF-AmazonTitles-131K") == (0.6, 2.6)
    assert propensity_ab("amazon-670k") == (0.6, 2.6)
    assert propensity_ab("LF-Wikipedia-500K") == (0.5, 0.4)
    assert propensity_ab("LF-WikiSeeAlsoTitles-320K") == (0.5, 0.4)  # Renée's rule; ELIAS uses 0.55/1.5
    assert propensity_ab("debtags") == (0.55, 1.5)


def test_default_ab_follows_name():
    scores, truth, train = make_case(42)
    assert evaluate(scores, truth, train, name="LF-AmazonTitles") == evaluate(scores, truth, train, A=0.6, B=2.6)
    assert evaluate(scores, truth, train, name="x")["PSP@5"] != evaluate(scores, truth, train, A=0.6, B=2.6)["PSP@5"]


def test_filter_pairs_remove_predictions_not_truth():
    scores, truth, train = make_case(51)
    rng = np.random.default_rng(0)
    coo = scores.tocoo()
    pick = rng.choice(coo.nnz, size=coo.nnz // 4, replace=False)
    pairs = np.stack([coo.row[pick], coo.col[pick]], axis=1).astype(np.int64)
    keep = np.ones(coo.nnz, bool)
    keep[pick] = False
    removed = sp.csr_matrix((coo.data[keep], (coo.row[keep], coo.col[keep])), shape=scores.shape)
    got = evaluate(scores, truth, train, filter_pairs=pairs)
    assert got == pytest.approx(evaluate(removed, truth, train), abs=1e-12)
    # the truth is unchanged: recall still divides by the full label count, as napkinxc does on `removed`
    assert got["R@5"] == pytest.approx(nm.recall_at_k(_binary(truth), removed, k=5)[4], abs=1e-12)
    assert got != evaluate(scores, truth, train)


def test_filter_pairs_validation():
    scores, truth, _ = make_case(52)
    with pytest.raises(DataError):
        evaluate(scores, truth, filter_pairs=np.array([[0, truth.shape[1]]]))
    with pytest.raises(DataError):
        evaluate(scores, truth, filter_pairs=np.array([0, 1, 2]))


@pytest.mark.parametrize("case", ["plain", "empty_rows", "few_predictions"])
def test_integer_sample_weight_equals_repeated_rows(case):
    scores, truth, train = make_case(**CASES[case])
    rng = np.random.default_rng(7)
    weights = rng.integers(0, 4, truth.shape[0])  # zeros drop rows
    idx = np.repeat(np.arange(truth.shape[0]), weights)
    got = evaluate(scores, truth, train, sample_weight=weights)
    ref = evaluate(scores[idx], truth[idx], train)
    assert set(got) == set(ref)
    for key in ref:
        assert got[key] == pytest.approx(ref[key], abs=1e-9), key


def test_fractional_weights_against_brute_force():
    scores, truth, train = make_case(61, empty_rows=0.2)
    rw = np.random.default_rng(1).uniform(0, 2, truth.shape[0])
    w = inv_propensity(train, 0.55, 1.5)
    got = evaluate(scores, truth, train, k=3, A=0.55, B=1.5, sample_weight=rw)
    for key, v in brute_force(scores, truth, 3, w, rw).items():
        assert got[key] == pytest.approx(v, abs=1e-9), key


def test_keys_and_errors():
    scores, truth, train = make_case(71)
    keys = set(evaluate(scores, truth, k=(1, 5)))
    assert keys == {f"{f}@{k}" for f in ("P", "nDCG", "R", "C", "macroP", "macroR", "macroF1") for k in (1, 5)}
    assert "PSP@1" in evaluate(scores, truth, train, k=1)
    with pytest.raises(ConfigError):
        evaluate(scores, truth, A=0.5, B=0.4)  # propensities need the train matrix
    with pytest.raises(DataError):
        evaluate(scores[:-1], truth)
    with pytest.raises(DataError):
        evaluate(scores, truth, sample_weight=-np.ones(truth.shape[0]))
    with pytest.raises(ConfigError):
        evaluate(scores, truth, k=0)
    bad = scores.copy()
    bad.data[0] = np.nan
    with pytest.raises(DataError):
        evaluate(bad, truth)



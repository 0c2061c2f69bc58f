"""Decile analysis: bins by train frequency, contributions that add up to P@k, the bar plot."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from lever_plugins.errors import ConfigError
from lever_plugins.metrics import decile_contributions, evaluate, label_bins, plot_deciles


def make_case(seed: int, n: int = 300, L: int = 60):
    rng = np.random.default_rng(seed)
    # Zipf-like train frequencies so the bins differ; a few labels never seen in train
    pop = 1.0 / np.arange(1, L + 1) ** 1.1
    pop /= pop.sum()
    tr_rows = np.repeat(np.arange(4 * n), 3)
    train = sp.csr_matrix((np.ones(len(tr_rows)), (tr_rows, rng.choice(L, len(tr_rows), p=pop))), shape=(4 * n, L))
    train = (train > 0).astype(np.float64)
    t_rows = np.repeat(np.arange(n), 2)
    truth = (sp.csr_matrix((np.ones(2 * n), (t_rows, rng.choice(L, 2 * n, p=pop))), shape=(n, L)) > 0)
    s_rows = np.repeat(np.arange(n), 8)
    scores = sp.csr_matrix((rng.random(8 * n), (s_rows, rng.integers(0, L, 8 * n))), shape=(n, L))
    scores = sp.csr_matrix(scores + truth.multiply(rng.random((n, L))))  # some hits
    return scores, truth.astype(np.float64), train


@pytest.mark.parametrize("mode", ["labels", "mass"])
@pytest.mark.parametrize("k", [1, 5])
def test_contributions_sum_to_precision(mode, k):
    scores, truth, train = make_case(1)
    pairs = np.array([[0, int(scores[0].indices[0])], [3, int(scores[3].indices[0])]])
    for fp in (None, pairs):
        d = decile_contributions(scores, truth, train, k=k, bins=10, mode=mode, filter_pairs=fp)
        p = evaluate(scores, truth, k=k, filter_pairs=fp)[f"P@{k}"]
        assert sum(d["contribution"]) == pytest.approx(p, abs=1e-12)
        assert d[f"P@{k}"] == pytest.approx(p, abs=1e-12)
        assert sum(d["label_count"]) == truth.shape[1]


def test_contributions_match_brute_force_per_bin():
    scores, truth, train = make_case(2)
    k, bins = 3, 5
    d = decile_contributions(scores, truth, train, k=k, bins=bins)
    freq = np.asarray(train.sum(0)).ravel()
    bin_of = label_bins(freq, bins, "labels")
    expect = np.zeros(bins)
    for i in range(truth.shape[0]):
        row = scores[i]
        ranked = [lab for _, lab in sorted(zip(-row.data, row.indices, strict=True))][:k]
        for lab in ranked:
            if truth[i, lab]:
                expect[bin_of[lab]] += 1
    np.testing.assert_allclose(d["contribution"], expect / (truth.shape[0] * k))


def test_label_bins_are_tail_first_and_balanced():
    _, _, train = make_case(3, L=97)
    freq = np.asarray(train.sum(0)).ravel()
    b = label_bins(freq, 10, "labels")
    counts = np.bincount(b, minlength=10)
    assert counts.max() - counts.min() <= 1
    for j in range(9):  # every label of bin j is at most as frequent as any label of bin j+1
        assert freq[b == j].max() <= freq[b == j + 1].min()
    m = label_bins(freq, 4, "mass")
    mass = np.bincount(m, weights=freq, minlength=4)
    assert np.all(mass <= freq.sum() / 4 + freq.max())
    assert np.all(np.diff([freq[m == j].max() for j in range(4) if (m == j).any()]) >= 0)
    assert m[np.argmin(freq)] == 0 and m[np.argmax(freq)] == 3
    with pytest.raises(ConfigError):
        label_bins(freq, 10, "quantiles")


def test_edges_report_frequency_ranges():
    scores, truth, train = make_case(4)
    d = decile_contributions(scores, truth, train, k=5, bins=4)
    freq = np.asarray(train.sum(0)).ravel()
    assert d["edges"][0][0] == int(freq.min()) and d["edges"][-1][1] == int(freq.max())
    assert sum(d["train_mass"]) == int(freq.sum())
    assert sum(d["test_positives"]) == truth.nnz


def test_plot_deciles_writes_png_atomically(tmp_path):
    scores, truth, train = make_case(5)
    base = decile_contributions(scores, truth, train, k=5)
    better = decile_contributions(scores + truth * 0.5, truth, train, k=5)
    out = plot_deciles({"base": base, "+LEVER": better}, tmp_path / "deciles.png", "test")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["deciles.png"]  # no temp file left behind
    other = decile_contributions(scores, truth, train, k=3)
    with pytest.raises(ConfigError):
        plot_deciles({"base": base, "k3": other}, tmp_path / "bad.png", "x")
    assert not (tmp_path / "bad.png").exists()

"""Paired bootstrap: replicates equal weighted evaluation, sane intervals, the Markdown table."""

from __future__ import annotations

import re

import numpy as np
import pytest
import scipy.sparse as sp

from lever_plugins.compare import DEFAULT_METRICS, bootstrap_weights, format_table, paired_bootstrap
from lever_plugins.errors import ConfigError
from lever_plugins.metrics import evaluate


def make_runs(seed: int, n: int = 200, L: int = 50, noise_b: float = 1.0):
    """Truth, train and two noisy score matrices (B a little better than A on average)."""
    rng = np.random.default_rng(seed)
    t_rows = np.repeat(np.arange(n), 3)
    truth = (sp.csr_matrix((np.ones(3 * n), (t_rows, rng.integers(0, L, 3 * n))), shape=(n, L)) > 0)
    truth = truth.astype(np.float64)
    tr_rows = np.repeat(np.arange(3 * n), 3)
    train = sp.csr_matrix((np.ones(9 * n), (tr_rows, rng.integers(0, L, 9 * n) % (L - 5))), shape=(3 * n, L))

    def run(noise):
        s_rows = np.repeat(np.arange(n), 10)
        s = sp.csr_matrix((rng.random(10 * n) * noise, (s_rows, rng.integers(0, L, 10 * n))), shape=(n, L))
        return sp.csr_matrix(s + truth.multiply(rng.random((n, L))))

    return run(1.5), run(noise_b), truth, train


def test_replicate_equals_weighted_evaluate():
    a, b, truth, train = make_runs(1)
    res = paired_bootstrap(a, b, truth, train, n_boot=40, seed=5, return_replicates=True)
    for i in (0, 17, 39):
        w = bootstrap_weights(truth.shape[0], 5, [i])[0]
        ea = evaluate(a, truth, train, k=(1, 3, 5), sample_weight=w)
        eb = evaluate(b, truth, train, k=(1, 3, 5), sample_weight=w)
        for m in DEFAULT_METRICS:
            assert res[m]["a_boot"][i] == pytest.approx(ea[m], abs=1e-12), m
            assert res[m]["b_boot"][i] == pytest.approx(eb[m], abs=1e-12), m
    full_a, full_b = evaluate(a, truth, train), evaluate(b, truth, train)
    for m in DEFAULT_METRICS:
        assert res[m]["a"] == pytest.approx(full_a[m]) and res[m]["b"] == pytest.approx(full_b[m])
        assert res[m]["delta"] == pytest.approx(full_b[m] - full_a[m])


def test_weights_are_multinomial_resamples_independent_of_batching():
    W = bootstrap_weights(50, 3, range(20))
    assert W.shape == (20, 50) and np.all(W.sum(axis=1) == 50) and np.all(W == np.round(W))
    np.testing.assert_array_equal(W[7:9], bootstrap_weights(50, 3, [7, 8]))
    assert not np.array_equal(W[0], W[1])
    # each row is drawn about once per replicate on average
    assert abs(bootstrap_weights(2000, 0, range(5)).mean() - 1.0) < 1e-12


def test_same_resample_for_both_runs_and_block_independence():
    a, b, truth, train = make_runs(2)
    small = paired_bootstrap(a, b, truth, train, n_boot=30, seed=1, return_replicates=True)
    # same seed, more replicates: the first 30 replicates are unchanged
    big = paired_bootstrap(a, b, truth, train, n_boot=300, seed=1, return_replicates=True)
    np.testing.assert_allclose(big["P@1"]["a_boot"][:30], small["P@1"]["a_boot"])
    # paired: A against itself as "B" gives exactly zero replicate deltas
    same = paired_bootstrap(a, a.copy(), truth, train, n_boot=50, seed=1, return_replicates=True)
    np.testing.assert_array_equal(same["P@5"]["a_boot"], same["P@5"]["b_boot"])


def test_identical_runs_have_zero_delta_and_interval():
    a, _, truth, train = make_runs(3)
    res = paired_bootstrap(a, a.copy(), truth, train, n_boot=100)
    for m in DEFAULT_METRICS:
        assert (res[m]["delta"], res[m]["lo"], res[m]["hi"]) == (0.0, 0.0, 0.0), m


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_interval_contains_point_delta(seed):
    a, b, truth, train = make_runs(seed, noise_b=1.3)
    res = paired_bootstrap(a, b, truth, train, n_boot=300, seed=seed)
    for m in DEFAULT_METRICS:
        r = res[m]
        assert r["lo"] <= r["delta"] <= r["hi"], (m, r)
        assert r["lo"] < r["hi"]


def test_interval_width_shrinks_with_confidence():
    a, b, truth, train = make_runs(7, noise_b=1.3)
    wide = paired_bootstrap(a, b, truth, train, metrics=["P@1"], n_boot=400, confidence=0.99)
    narrow = paired_bootstrap(a, b, truth, train, metrics=["P@1"], n_boot=400, confidence=0.5)
    assert wide["P@1"]["hi"] - wide["P@1"]["lo"] > narrow["P@1"]["hi"] - narrow["P@1"]["lo"]


def test_strictly_better_on_every_row_excludes_zero():
    rng = np.random.default_rng(8)
    n, L = 150, 40
    truth = sp.csr_matrix((np.ones(n), (np.arange(n), rng.integers(0, L, n))), shape=(n, L))
    wrong = (truth.indices + 1 + rng.integers(0, L - 1, n)) % L  # never the true label
    a = sp.csr_matrix((np.ones(n), (np.arange(n), wrong)), shape=(n, L))
    b = sp.csr_matrix(a * 0.5 + truth)  # the true label ranked first on every row
    train = sp.csr_matrix((np.ones(3 * n), (np.arange(3 * n), rng.integers(0, L, 3 * n))), shape=(3 * n, L))
    res = paired_bootstrap(a, b, truth, train, metrics=["P@1", "P@5", "PSP@1", "PSP@5"], n_boot=200)
    for m, r in res.items():
        assert r["delta"] > 0 and r["lo"] > 0, (m, r)


def test_errors():
    a, b, truth, train = make_runs(9)
    with pytest.raises(ConfigError):
        paired_bootstrap(a, b, truth, train, metrics=["Q@5"], n_boot=5)
    with pytest.raises(ConfigError):
        paired_bootstrap(a, b, truth, train, metrics=["P@x"], n_boot=5)
    with pytest.raises(ConfigError):
        paired_bootstrap(a, b, truth, None, metrics=["PSP@5"], n_boot=5)
    with pytest.raises(ConfigError):
        paired_bootstrap(a, b, truth, train, n_boot=0)
    no_train = paired_bootstrap(a, b, truth, None, metrics=["P@1", "C@5"], n_boot=5)
    assert set(no_train) == {"P@1", "C@5"}


def test_format_table():
    a, b, truth, train = make_runs(10, noise_b=1.3)
    res = paired_bootstrap(a, b, truth, train, n_boot=50)
    table = format_table(res, names=("base", "+LEVER"))
    lines = table.strip().splitlines()
    assert lines[0].startswith("| metric | base | +LEVER |") and "95% CI" in lines[0]
    assert len(lines) == 2 + len(DEFAULT_METRICS)
    for line, (m, r) in zip(lines[2:], res.items(), strict=True):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[0] == m
        assert float(cells[1]) == pytest.approx(100 * r["a"], abs=0.006)
        assert float(cells[2]) == pytest.approx(100 * r["b"], abs=0.006)
        d, lo, hi = map(float, re.match(r"([+-][\d.]+) \[([+-][\d.]+), ([+-][\d.]+)\]", cells[3]).groups())
        assert (d, lo, hi) == pytest.approx((100 * r["delta"], 100 * r["lo"], 100 * r["hi"]), abs=0.006)


def test_coverage_interval_is_centred_despite_resample_bias():
    """A resample holds ~63% of distinct rows, so set-based coverage drops on every replicate; the
    raw percentile interval then misses the full-sample delta, the centred one does not."""
    rng = np.random.default_rng(11)
    n, L = 20_000, 1000
    lab = rng.integers(0, L, n)  # each label is the truth of ~20 rows
    truth = sp.csr_matrix((np.ones(n), (np.arange(n), lab)), shape=(n, L))
    other = (lab + 1 + rng.integers(0, L - 1, n)) % L

    def run(p_hit):
        top = np.where(rng.random(n) < p_hit, lab, other)
        return sp.csr_matrix((np.ones(n), (np.arange(n), top)), shape=(n, L))

    a, b = run(0.01), run(0.05)
    res = paired_bootstrap(a, b, truth, None, metrics=["C@1", "P@1"], n_boot=300, return_replicates=True)
    c = res["C@1"]
    raw = np.quantile(c["b_boot"] - c["a_boot"], [0.025, 0.975])
    assert c["bias"] < 0 and raw[1] < c["delta"]  # the raw interval misses the point delta
    assert c["lo"] <= c["delta"] <= c["hi"]
    assert c["hi"] - c["lo"] == pytest.approx(raw[1] - raw[0])  # same width, only moved
    assert abs(res["P@1"]["bias"]) < 0.2 * (res["P@1"]["hi"] - res["P@1"]["lo"])  # a mean is ~unbiased

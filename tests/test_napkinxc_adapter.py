"""The napkinxc adapter (distribution lever-napkinxc) against the REAL napkinxc: entry point, binary
conversion of soft targets, TF-IDF, learning, reproducibility and an end-to-end A/B."""

from __future__ import annotations

import importlib.metadata as md
import json
import math
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import ROOT

from lever_plugins import plugins
from lever_plugins.adapter import Adapter, Arm
from lever_plugins.errors import LeverError

pytest.importorskip("napkinxc", reason="napkinxc is not installed (pip install 'napkinxc>=0.6')")
try:
    import lever_napkinxc  # noqa: F401
except ImportError:  # not installed: the library tests still run from the source tree
    sys.path.insert(0, str(ROOT / "adapters" / "napkinxc"))

from lever_napkinxc.adapter import NapkinxcAdapter, to_binary_labels  # noqa: E402
from lever_napkinxc.features import tfidf  # noqa: E402
from lever_napkinxc.reference import plt_reference  # noqa: E402


def _p_at_1(scores: sp.csr_matrix, truth: list[list[int]]) -> float:
    hits = 0
    for i, t in enumerate(truth):
        row = scores.getrow(i)
        if row.nnz and int(row.indices[np.argmax(row.data)]) in t:
            hits += 1
    return hits / len(truth)


def _synthetic(n_trn: int = 400, n_tst: int = 120, n_lbl: int = 25, seed: int = 0):
    """Documents mention 2 of 4 words private to each of their labels plus shared noise words."""
    rng = np.random.default_rng(seed)
    noise = [f"common{i}" for i in range(40)]

    def docs(n: int) -> tuple[list[str], list[list[int]]]:
        texts, labels = [], []
        for _ in range(n):
            labs = sorted(set(rng.integers(0, n_lbl, size=int(rng.integers(1, 3))).tolist()))
            words = [f"lab{j}word{w}" for j in labs for w in rng.choice(4, 2, replace=False)]
            words += rng.choice(noise, 4).tolist()
            rng.shuffle(words)
            texts.append(" ".join(words))
            labels.append(labs)
        return texts, labels

    (trn, y_trn), (tst, y_tst) = docs(n_trn), docs(n_tst)
    rows = np.repeat(np.arange(n_trn), [len(r) for r in y_trn])
    y = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, np.concatenate(y_trn))), shape=(n_trn, n_lbl))
    return trn, y, tst, y_tst


class _Cfg:
    top_k = 10
    upstream_args: list[str] = []


def _arm(trn: list[str], y: sp.spmatrix, tst: list[str], seed: int) -> Arm:
    """The Arm the pipeline would build (napkinxc reads texts, targets and seed only)."""
    y = sp.csr_matrix(y, dtype=np.float32)
    empty = sp.csr_matrix((len(tst), y.shape[1]), dtype=np.float32)
    return Arm(name="base", workdir=Path("unused"), targets=y, support=y, y_train=y, y_test=empty, trn_texts=trn,
               tst_texts=tst, lbl_texts=[], tst_filter=np.zeros((0, 2), np.int64), seed=seed)  # fmt: skip


def _no_loss(logits, targets):
    raise AssertionError("napkinxc has no loss to replace: it must never call the lever_loss hook")


# ---------------------------------------------------------------- registration


def test_registered_through_the_real_entry_point():
    try:
        md.version("lever-napkinxc")
    except md.PackageNotFoundError:
        pytest.skip("distribution lever-napkinxc is not installed (pip install -e adapters/napkinxc)")
    plugins.reset()
    try:
        reg = plugins.adapters()["napkinxc"]
    finally:
        plugins.reset()
    assert (reg.dist, reg.version) == ("lever-napkinxc", "0.1.0")
    adapter = reg.factory()
    assert isinstance(adapter, Adapter)
    assert adapter.name == "napkinxc" and adapter.problems() == []
    adapter.preflight(_Cfg())  # napkinxc importable: nothing to refuse
    assert not adapter.takes_loss_hook and not adapter.needs_features and not adapter.supports_finetune


# ---------------------------------------------------------------- binary form of LEVER


def test_to_binary_labels_thresholds_soft_targets():
    t = sp.csr_matrix(
        np.array(
            [
                [1.0, 0.9, 0.2, 0.0],  # ground truth, a teacher pair above and one below the threshold
                [0.2, 0.0, 0.0, 0.49],  # nothing reaches 0.5: an empty row
                [0.0, 0.0, 0.5, 0.0],  # exactly the threshold counts
            ],
            dtype=np.float32,
        )
    )
    assert to_binary_labels(t, 0.5) == [[0, 1], [], [2]]
    assert to_binary_labels(t, 0.1) == [[0, 1, 2], [0, 3], [2]]
    # Random sparse matrices against a dense brute force (unsorted indices, stored zeros included).
    rng = np.random.default_rng(1)
    for _ in range(5):
        m = sp.random(30, 17, density=0.2, format="csr", random_state=rng, dtype=np.float32)
        m.data[::7] = 0.0
        m = m[:, rng.permutation(17)].tocsr()
        m.has_sorted_indices = False
        d = m.toarray()
        thr = float(rng.uniform(0.1, 0.9))
        assert to_binary_labels(m, thr) == [np.flatnonzero(d[i] >= thr).tolist() for i in range(30)]


def test_labels_handed_to_napkinxc_are_the_binarised_targets(monkeypatch: pytest.MonkeyPatch):
    """Spy on the real PLT.fit: 0.9 becomes a positive, 0.2 does not, and an all-0.2 row is dropped."""
    import napkinxc.models

    seen = {}
    real_fit = napkinxc.models.PLT.fit

    def spy(self, X, Y):
        seen["X_rows"], seen["Y"] = X.shape[0], [list(r) for r in Y]
        return real_fit(self, X, Y)

    monkeypatch.setattr(napkinxc.models.PLT, "fit", spy)
    trn, y, tst, _ = _synthetic(n_trn=40, n_tst=5, n_lbl=6)
    soft = sp.lil_matrix(y, dtype=np.float32)
    soft[0, :] = 0
    soft[0, 2], soft[0, 4] = 0.9, 0.2
    soft[1, :] = 0
    soft[1, 3] = 0.2  # row 1 has no positive left: dropped
    scores, stats = NapkinxcAdapter().train_predict(_arm(trn, soft, tst, 5), _Cfg(), _no_loss)
    expected = to_binary_labels(y, 0.5)
    expected[0], expected[1] = [2], []
    assert seen["Y"] == [r for r in expected if r] and seen["X_rows"] == 39
    assert stats["rows"] == 39 and stats["rows_dropped"] == 1
    assert stats["positives"] == sum(map(len, expected))
    assert scores.shape == (5, 6) and stats["features_dim"] > 0


def test_one_text_per_target_row():
    with pytest.raises(LeverError, match="1 training texts for 2 target rows"):
        NapkinxcAdapter().train_predict(_arm(["a b"], sp.eye(2, format="csr"), ["a"], 1), _Cfg(), _no_loss)


# ---------------------------------------------------------------- features


def test_tfidf_matches_brute_force():
    trn = ["Audio audio AUDIO player", "video player for the web", "chess engine, chess GUI", "x y"]
    tst = ["audio chess unseen-word", "", "web web player"]
    f = tfidf(trn, tst)

    def tokens(t: str) -> list[str]:
        return re.findall(r"(?u)\b\w\w+\b", t.lower())

    vocab = sorted({w for t in trn for w in tokens(t)})
    assert sorted(f.vocabulary) == vocab  # fitted on train only: "unseen" never enters
    df = Counter(w for t in trn for w in set(tokens(t)))
    n = len(trn)
    idf = {w: math.log((1 + n) / (1 + df[w])) + 1 for w in vocab}

    def brute(texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), len(vocab)))
        for i, t in enumerate(texts):
            for w, c in Counter(w for w in tokens(t) if w in idf).items():
                out[i, f.vocabulary[w]] = (1 + math.log(c)) * idf[w]
            norm = np.linalg.norm(out[i])
            out[i] /= norm if norm else 1.0
        return out

    np.testing.assert_allclose(f.x_trn.toarray(), brute(trn), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(f.x_tst.toarray(), brute(tst), rtol=1e-5, atol=1e-6)
    assert f.x_trn.dtype == np.float32 and f.x_tst.shape == (3, len(vocab))


# ---------------------------------------------------------------- learning


def test_adapter_learns_and_is_reproducible():
    trn, y, tst, y_tst = _synthetic()
    adapter = NapkinxcAdapter()
    scores, stats = adapter.train_predict(_arm(trn, y, tst, 7), _Cfg(), _no_loss)
    assert scores.shape == (len(tst), 25) and (np.diff(scores.indptr) <= 10).all()
    assert ((scores.data > 0) & (scores.data <= 1)).all()
    p1 = _p_at_1(scores, y_tst)
    popular = int(np.asarray(y.sum(0)).argmax())
    chance = np.mean([popular in t for t in y_tst])  # always predicting the most frequent label
    assert p1 >= 0.9 and p1 > chance + 0.5, (p1, chance)
    assert stats["rows"] == 400 and stats["rows_dropped"] == 0 and stats["positives"] == y.nnz
    # Same seed, same scores: napkinXC's LIBLINEAR draws from libc rand(), which the adapter seeds.
    again, _ = adapter.train_predict(_arm(trn, y, tst, 7), _Cfg(), _no_loss)
    assert (again != scores).nnz == 0
    # plt_reference is the base arm's code path: identical scores.
    ref = plt_reference(trn, y, tst, top_k=10, seed=7)
    assert (ref != scores).nnz == 0


# ---------------------------------------------------------------- end to end

TINY = {
    "seed": 3,
    "encoder": {"max_len": 16, "batch_size": 64},
    "teacher": {"train": False, "max_len": 16},
    "soft_labels": {"tau_l": 3, "tau_d": 4, "threshold": 0.7, "blend_mode": "union"},
    "trainer": {"adapter": "napkinxc", "top_k": 10},
    "eval": {"bootstrap": 50},
}


def test_run_ab_with_napkinxc(tmp_path: Path, tiny_lf: Path, monkeypatch: pytest.MonkeyPatch):
    try:
        md.version("lever-napkinxc")
    except md.PackageNotFoundError:
        pytest.skip("distribution lever-napkinxc is not installed: run_ab finds adapters by entry point")
    from lever_plugins import config
    from lever_plugins.runner import run_ab

    monkeypatch.setenv("LEVER_CACHE_DIR", str(tmp_path / "cache"))
    plugins.reset()
    cfg = config.from_dict({**TINY, "data": {"path": str(tiny_lf)}})
    out = tmp_path / "run"
    try:
        result = run_ab(cfg, out, log=lambda s: None)
    finally:
        plugins.reset()
    for arm in ("base", "lever"):
        m = json.loads((out / arm / "metrics.json").read_text())
        assert m == result["metrics"][arm] and 0.0 <= m["P@1"] <= 1.0 and "PSP@5" in m
        assert sp.load_npz(out / arm / "scores.npz").shape == (20, 12)
    stages = json.loads((out / "manifest.json").read_text())["stages"]
    base, lever_ = stages["train_base"]["stats"], stages["train_lever"]["stats"]
    # base: N = 60 binary rows; +LEVER: N + L = 72 rows (documents, then label texts), union targets
    assert base["rows"] + base["rows_dropped"] == 60
    assert lever_["rows"] + lever_["rows_dropped"] == 72 and lever_["rows_dropped"] == 0
    targets = sp.load_npz(out / "soft" / "targets.npz")
    assert lever_["positives"] == targets.nnz  # union: every stored target is >= 0.5
    assert lever_["positives"] > base["positives"]

"""calibration = "auto" on small dense runs: the calibration is chosen by fitting the student with each
candidate on a train hold-out (stages.calibration_stage), not guessed from the label count."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from lever_plugins import config

TINY = {
    "seed": 5,
    "encoder": {"max_len": 16, "batch_size": 64},
    "teacher": {"train": False, "max_len": 16},
    "soft_labels": {"tau_l": 3, "tau_d": 4, "threshold": 0.7},
    "trainer": {"epochs": 3, "batch_size": 32, "negatives": "full", "lr": 0.05},
    "eval": {"bootstrap": 20},
}


def _cfg(tiny_lf: Path, tiny_model: Path, **soft) -> config.RunConfig:
    values = json.loads(json.dumps(TINY))
    values["encoder"]["model"] = values["teacher"]["model"] = str(tiny_model)
    values["soft_labels"].update(soft)
    return config.from_dict({**values, "data": {"path": str(tiny_lf)}})


def test_auto_selects_only_small_dense_builtin_runs():
    from lever_plugins.soft_labels.calibrate import auto_selects

    s = config.SoftLabelConfig()  # the defaults: dense, auto, 1e7 pairs
    assert auto_selects(s, 1_000, 10_000)
    assert not auto_selects(s, 1_001, 10_000)  # 10,010,000 pairs
    assert not auto_selects(config.SoftLabelConfig(mode="sparse"), 10, 10)
    assert not auto_selects(config.SoftLabelConfig(calibration="linear"), 10, 10)
    assert not auto_selects(config.SoftLabelConfig(calibration_select_max=0), 10, 10)
    assert not auto_selects(s, 10, 10, adapter="renee")  # an upstream trainer's fits are not seconds
    assert not auto_selects(s, 10, 10, finetune=True)  # nor are encoder fine-tuning fits


def test_hold_out_choice_matches_an_independent_refit(
    tmp_path: Path, tiny_lf: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The two hold-out fits are redone here from the run's teacher embeddings and hard targets with the
    trainer called directly: their metric sums match the recorded ones, the choice is the larger (ties: linear),
    the +LEVER arm was trained with the chosen calibration, and the table header says so."""
    from lever_plugins.data import load_dataset
    from lever_plugins.metrics import evaluate
    from lever_plugins.runner import run_ab
    from lever_plugins.soft_labels.dense import DenseTargets
    from lever_plugins.stages import features, load_data
    from lever_plugins.trainer import ova

    monkeypatch.setenv("LEVER_CACHE_DIR", str(tmp_path / "cache"))
    cfg = _cfg(tiny_lf, tiny_model, calibration_select="P@1+PSP@3")
    out = tmp_path / "run"
    run_ab(cfg, out, log=lambda s: None)
    got = json.loads((out / "soft" / "calibration.json").read_text())

    ds = load_data(cfg)
    f = features(ds, cfg, progress=False)
    z = np.load(out / "teacher" / "embeddings.npz")
    y_aug = sp.load_npz(out / "soft" / "y_aug.npz").tocsr().astype(np.float32)
    n, M = len(ds.trn_texts), y_aug.shape[0]
    x = np.vstack([f["trn"], f["lbl"][: M - n]])
    emb = np.vstack([z["doc"], z["lbl_doc"][: M - n]]).astype(np.float32)
    perm = np.random.default_rng(cfg.seed).permutation(n)
    hold, rest = np.sort(perm[: round(0.2 * n)]), np.sort(perm[round(0.2 * n):])
    rows = np.concatenate([rest, np.arange(n, M)])
    y = load_dataset(tiny_lf).y_trn
    y = (y > 0).astype(np.float32).tocsr()

    def dense(method: str, a: float, c: float, sel: np.ndarray | slice) -> DenseTargets:
        return DenseTargets(hard=y_aug[sel], rows=emb[sel], labels=z["lbl"], lam=0.3, calibration=method, a=a, c=c,
                            start="teacher")  # fmt: skip

    want = {}
    candidates = {"linear": ("linear", 1.0, 0.0), "sigmoid": ("sigmoid", 20.0, -14.0),
                  "sigmoid_a20_c-12": ("sigmoid", 20.0, -12.0)}  # fmt: skip
    for name, (method, a, c) in candidates.items():
        s, _ = ova.train_predict(x[rows], y_aug[rows], f["trn"][hold], cfg.trainer, seed=cfg.seed, progress=False,
                                 dense=dense(method, a, c, rows))  # fmt: skip
        m = evaluate(s, y[hold], train_truth=y[rest], k=(1, 3))
        want[name] = m["P@1"] + m["PSP@3"]
    assert got["holdout_select"] == pytest.approx(want, abs=1e-6)
    best = next(n for n in candidates if want[n] == max(want.values()))  # ties: the first listed
    assert got["name"] == best

    method, a, c = candidates[best]
    lever, _ = ova.train_predict(x, y_aug, f["tst"], cfg.trainer, seed=cfg.seed, progress=False,
                                 dense=dense(method, a, c, slice(None)))  # fmt: skip
    np.testing.assert_allclose(sp.load_npz(out / "lever" / "scores.npz").toarray(), lever.toarray(),
                               rtol=1e-5, atol=1e-6)  # fmt: skip
    head = (out / "compare.md").read_text()
    assert f"auto: {method}" in head
    assert "chosen on a 20% train hold-out by soft_labels.calibration_select (linear " in head
    assert "vs sigmoid_a20_c-12 " in head


def test_above_the_limit_the_label_count_rule_decides(
    tmp_path: Path, tiny_lf: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lever_plugins.runner import run_ab

    monkeypatch.setenv("LEVER_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "run"
    run_ab(_cfg(tiny_lf, tiny_model, calibration_select_max=10), out, log=lambda s: None)
    stages = json.loads((out / "manifest.json").read_text())["stages"]
    assert "calibration_select" not in stages and "train_calibration_linear" not in stages
    assert not (out / "soft" / "calibration.json").exists()
    head = (out / "compare.md").read_text()
    assert "auto: linear calibration" in head and "chosen on" not in head


@pytest.mark.parametrize("select", ["P@0", "Q@1", "P@1+", "PSP5"])
def test_a_select_string_is_checked_before_any_fit(select: str) -> None:
    with pytest.raises(config.ConfigError, match="calibration_select") as e:
        config.load(None, {"soft_labels": {"calibration_select": select}})
    assert "not a metric name" in str(e.value)
    with pytest.raises(config.ConfigError, match="ensemble_select"):
        config.load(None, {"eval": {"ensemble_select": select}})

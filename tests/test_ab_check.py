"""`lever ab` reports any difference between base and +LEVER other than LEVER's own settings."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from lever_plugins import config, hookimpl, plugins, runner, stages
from lever_plugins.compare.arms import arm_differences, arm_settings
from lever_plugins.soft_labels import blend

# ---------------------------------------------------------------------------------------------- unit

RNG = np.random.default_rng(0)
N, L, D = 6, 5, 3
TRUTH = sp.csr_matrix((RNG.random((N, L)) < 0.4).astype(np.float32))
X = RNG.standard_normal((N, D)).astype(np.float32)
X_LBL = RNG.standard_normal((L, D)).astype(np.float32)
X_TEST = RNG.standard_normal((4, D)).astype(np.float32)
TEXTS = ([f"doc {i}" for i in range(N)], [f"test {i}" for i in range(4)])
LEVER_TEXTS = (TEXTS[0] + [f"label {j}" for j in range(L)], TEXTS[1])  # N + L training rows


def settings(x=X, targets=TRUTH, trainer=None, seed=3, x_test=X_TEST, texts=TEXTS, **kw) -> dict:
    return arm_settings(
        adapter=kw.get("adapter", "builtin"), trainer=trainer or config.TrainerConfig(),
        encoder=config.EncoderConfig(), seed=seed, data_signature=kw.get("sig", "abc"), truth=TRUTH,
        x_train=x, targets=targets, x_test=x_test, texts=texts,
    )  # fmt: skip


def lever_arm(**over) -> dict:
    """A genuine +LEVER arm: label rows appended, teacher pairs added (also in document rows), ground truth 1."""
    soft = sp.lil_matrix((N + L, L), dtype=np.float32)
    free = np.argwhere(TRUTH.toarray() == 0)[:3]
    for r, c in free:
        soft[r, c] = 0.9
    soft[N + 1, 2] = 0.85
    y_aug = sp.vstack([TRUTH, sp.identity(L, dtype=np.float32, format="csr")], format="csr")
    targets = blend(y_aug, soft.tocsr(), 0.5)
    return settings(**{"x": np.vstack([X, X_LBL]), "targets": targets, "texts": LEVER_TEXTS, **over})


def test_a_genuine_lever_arm_differs_only_in_levers_settings() -> None:
    base, lev = settings(), lever_arm()
    assert arm_differences(base, lev) == []
    assert lev["extra_rows"] == L and lev["teacher_pairs_in_document_rows"] == 3  # reported, not differences


@pytest.mark.parametrize(
    ("change", "expect"),
    [
        ({"trainer": config.TrainerConfig(lr=0.5)}, "trainer.lr: base 0.01, +LEVER 0.5"),
        ({"trainer": config.TrainerConfig(options={"threads": 2})}, "trainer.options: base {}, +LEVER {'threads': 2}"),
        ({"seed": 4}, "seed: base 3, +LEVER 4"),
        ({"adapter": "napkinxc"}, "adapter: base 'builtin', +LEVER 'napkinxc'"),
        ({"sig": "other"}, "data_split: base 'abc', +LEVER 'other'"),
        ({"x_test": X_TEST + 1e-3}, "test_features: base "),
        ({"texts": (LEVER_TEXTS[0], TEXTS[1][::-1])}, "test_texts: base "),
    ],
)
def test_injected_difference_is_reported(change: dict, expect: str) -> None:
    diffs = arm_differences(settings(), lever_arm(**change))
    assert len(diffs) == 1 and diffs[0].startswith(expect), diffs


def test_document_rows_must_match_exactly() -> None:
    lev = lever_arm()
    # features of one training document changed (e.g. a different encoder or normalisation in one arm)
    x = np.vstack([X, X_LBL])
    x[2, 0] += 1e-4
    assert [d.split(":")[0] for d in arm_differences(settings(), lever_arm(x=x))] == ["document_features"]
    # a ground-truth pair dropped, or lowered below 1, in the +LEVER targets (e.g. by a blend plugin)
    t = sp.csr_matrix(sp.vstack([TRUTH, sp.identity(L, format="csr")]), dtype=np.float32)
    for edit in ("drop", "lower"):
        t2 = t.copy()
        if edit == "drop":
            t2.data[0] = 0.0
            t2.eliminate_zeros()
        else:
            t2.data[0] = 0.7
        diffs = arm_differences(settings(), settings(x=np.vstack([X, X_LBL]), targets=t2, texts=LEVER_TEXTS))
        assert "truth_targets_on_document_rows" in [d.split(":")[0] for d in diffs], (edit, diffs)
    assert lev["truth_targets_on_document_rows"] == settings()["truth_targets_on_document_rows"]


# ------------------------------------------------------------------------------------------- end to end


@pytest.fixture
def tiny_ab(tmp_path: Path, tiny_model: Path, tiny_lf: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("LEVER_CACHE_DIR", str(tmp_path / "cache"))
    cfg = config.from_dict({
        "seed": 3, "data": {"path": str(tiny_lf)},
        "encoder": {"model": str(tiny_model), "max_len": 16},
        "teacher": {"model": str(tiny_model), "train": False, "max_len": 16},
        # sparse: the injected lever_blend_targets plugins act on the stored soft matrix
        "soft_labels": {"tau_l": 3, "tau_d": 2, "threshold": 0.5, "mode": "sparse"},
        "trainer": {"epochs": 2, "negatives": "full"}, "eval": {"bootstrap": 20},
    })  # fmt: skip

    def run(name: str) -> tuple[dict, list[str], str]:
        lines: list[str] = []
        runner.run_ab(cfg, tmp_path / name, log=lines.append)
        out = tmp_path / name
        return json.loads((out / "manifest.json").read_text())["ab_check"], lines, (out / "compare.md").read_text()

    return run


class DropsGroundTruth:
    """A third-party blend that silently drops the first ground-truth pair of the document rows."""

    @hookimpl(tryfirst=True)
    def lever_blend_targets(self, y, soft, config):
        t = blend(y, soft, config.blend_lambda, config.blend_mode)
        t.data[0] = 0.0
        t.eliminate_zeros()
        return t


def test_ab_reports_fair_arms_and_injected_differences(tiny_ab, one_torch_thread, monkeypatch) -> None:
    check, lines, md = tiny_ab("fair")
    assert check["fair"] and check["differences"] == []
    assert check["lever_only"]["extra_rows"] == 12 and "soft_labels" in check["lever_only"]
    assert check["arms"]["base"]["trainer"]["epochs"] == 2 and check["arms"]["lever"]["seed"] == 3
    fair_line = [line for line in lines if line.startswith("A/B check: the arms differ only in LEVER's settings")]
    assert len(fair_line) == 1 and fair_line[0] in md

    pm = plugins.get_plugin_manager()
    pm.register(DropsGroundTruth(), name="drops-ground-truth")
    try:
        check, lines, md = tiny_ab("plugin")
    finally:
        pm.unregister(name="drops-ground-truth")
    assert not check["fair"]
    assert [d.split(":")[0] for d in check["differences"]] == ["truth_targets_on_document_rows"]
    warn = [line for line in lines if line.startswith("WARNING: base and +LEVER differ in more than LEVER's")]
    assert len(warn) == 1 and warn[0] in md and "truth_targets_on_document_rows" in warn[0]

    real = stages.arm_inputs

    def other_features(run, ds, cfg, sig, feats, lever, log=None):
        x, y, key = real(run, ds, cfg, sig, feats, lever, log)
        return (x * np.float32(1.001) if lever else x), y, key

    monkeypatch.setattr(runner, "arm_inputs", other_features)
    check, _, md = tiny_ab("features")
    assert [d.split(":")[0] for d in check["differences"]] == ["document_features"]
    assert "WARNING: base and +LEVER differ" in md


def test_ab_check_settings_are_what_the_trainer_got() -> None:
    """The fingerprint covers every trainer and encoder setting (a new config field cannot slip past)."""
    s = settings()
    assert set(s["trainer"]) == {f.name for f in dataclasses.fields(config.TrainerConfig)}
    assert set(s["encoder"]) == {f.name for f in dataclasses.fields(config.EncoderConfig)}

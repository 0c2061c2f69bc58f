"""End to end on a tiny LF set with the real encoder: A/B artefacts, stage cache, CLI stages."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import lever

from lever_plugins import config
from lever_plugins.metrics import evaluate
from lever_plugins.runner import run_ab

TINY = {
    "seed": 3,
    "encoder": {"max_len": 16, "batch_size": 64},
    "teacher": {"epochs": 1, "max_len": 16, "batch_size": 8, "warmup_steps": 1},
    "soft_labels": {"tau_l": 3, "tau_d": 4, "threshold": 0.7},
    "trainer": {"epochs": 4, "batch_size": 32, "negatives": "full", "lr": 0.05},
    "eval": {"bootstrap": 50},
}


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LEVER_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _cfg(data: Path, **over) -> config.RunConfig:
    values = json.loads(json.dumps(TINY))
    for section, kv in over.items():
        values.setdefault(section, {}).update(kv)
    values["data"] = {"path": str(data)}
    return config.from_dict(values)


def _finished(out: Path) -> dict[str, str]:
    stages = json.loads((out / "manifest.json").read_text())["stages"]
    return {k: v["finished"] + v["key"] for k, v in stages.items()}


def test_ab_end_to_end_and_stage_cache(tmp_path: Path, tiny_lf: Path, cache: Path):
    out = tmp_path / "run"
    result = run_ab(_cfg(tiny_lf), out, log=lambda s: None)
    for arm in ("base", "lever"):
        m = json.loads((out / arm / "metrics.json").read_text())
        assert {"P@1", "PSP@5", "C@5", "macroF1@5", "nDCG@3"} <= set(m)
        assert all(0.0 <= v <= 1.0 for v in m.values())
    # The +LEVER arm trained on N + L rows with soft values; the base arm on N binary rows.
    targets = sp.load_npz(out / "soft" / "targets.npz")
    assert targets.shape == (60 + 12, 12)
    assert ((targets.data > 0) & (targets.data <= 1)).all()
    # metrics.json is evaluate() of the saved scores against the test truth (independent recomputation)
    from lever_plugins.data import load_dataset

    ds = load_dataset(tiny_lf)
    s = sp.load_npz(out / "lever" / "scores.npz")
    again = evaluate(s, ds.y_tst, train_truth=ds.binary_train(), A=0.55, B=1.5)
    assert again["P@1"] == pytest.approx(result["metrics"]["lever"]["P@1"])
    table = (out / "compare.md").read_text()
    assert "| PSP@5 |" in table and "+LEVER" in table
    assert (out / "deciles.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    man = json.loads((out / "manifest.json").read_text())
    assert {"teacher", "soft_labels", "train_base", "train_lever"} <= set(man["stages"])
    assert man["config"]["seed"] == 3 and "torch" in man["versions"]
    assert any(p["dist"] == "lever-plugins" for p in man["plugins"])

    before = _finished(out)
    run_ab(_cfg(tiny_lf), out, log=lambda s: None)
    assert _finished(out) == before  # nothing recomputed

    # A soft-label setting changes only the soft labels and the +LEVER arm.
    run_ab(_cfg(tiny_lf, soft_labels={"tau_l": 2}), out, log=lambda s: None)
    after = _finished(out)
    assert after["teacher"] == before["teacher"] and after["train_base"] == before["train_base"]
    assert after["soft_labels"] != before["soft_labels"] and after["train_lever"] != before["train_lever"]


def test_corrupted_artefact_is_rebuilt(tmp_path: Path, tiny_lf: Path, cache: Path):
    out = tmp_path / "run"
    cfg = _cfg(tiny_lf, teacher={"train": False})
    run_ab(cfg, out, log=lambda s: None)
    good = sp.load_npz(out / "soft" / "targets.npz")
    (out / "soft" / "targets.npz").write_bytes(b"garbage")
    run_ab(cfg, out, log=lambda s: None)
    rebuilt = sp.load_npz(out / "soft" / "targets.npz")
    assert (rebuilt != good).nnz == 0


def test_holdout_never_reads_test_split(tmp_path: Path, tiny_lf: Path, cache: Path):
    from lever_plugins.stages import load_data

    cfg = _cfg(tiny_lf)
    cfg.data.holdout = 0.25
    ds = load_data(cfg)
    assert ds.y_trn.shape[0] == 45 and ds.y_tst.shape[0] == 15
    full = load_data(_cfg(tiny_lf))
    trn_set = set(full.trn_texts)
    assert set(ds.tst_texts) <= trn_set and set(ds.trn_texts) <= trn_set


def test_cli_stages_and_bad_data(tmp_path: Path, tiny_lf: Path, cache: Path):
    cfg = tmp_path / "c.toml"
    lines = ["seed = 3"]
    for section, kv in TINY.items():
        if isinstance(kv, dict):
            lines.append(f"[{section}]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in kv.items()]
    cfg.write_text("\n".join(lines[1:]) + "\n")
    out = tmp_path / "run"
    env = {"LEVER_CACHE_DIR": str(cache)}
    r = lever("train", "--no-lever", "--data", str(tiny_lf), "--out", str(out), "--config", str(cfg), env=env)
    assert r.returncode == 0, r.stderr
    assert (out / "base" / "metrics.json").exists() and not (out / "soft").exists()
    # Truncated gzip: one line naming the file, exit 2, and no run artefacts.
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in tiny_lf.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    raw = (bad / "trn.json.gz").read_bytes()
    (bad / "trn.json.gz").write_bytes(raw[: len(raw) // 2])
    out2 = tmp_path / "run2"
    r = lever("ab", "--data", str(bad), "--out", str(out2), "--config", str(cfg), env=env)
    assert r.returncode == 2 and "trn.json.gz" in r.stderr and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0
    assert not out2.exists()


def test_lever_raises_tail_coverage_on_tiny_data(tmp_path: Path, tiny_lf: Path, cache: Path):
    """Label rows teach the classifier labels the train set barely has: coverage rises strictly, and the
    labels only +LEVER gets right at 5 are tail labels. A LEVER that changed nothing (same targets, same
    scores) fails every assertion here."""
    from lever_plugins.data import load_dataset

    out = tmp_path / "run"
    r = run_ab(_cfg(tiny_lf, trainer={"epochs": 8}), out, log=lambda s: None)
    assert r["metrics"]["lever"]["C@5"] > r["metrics"]["base"]["C@5"]
    assert np.isfinite(r["bootstrap"]["C@5"]["lo"])
    ds = load_dataset(tiny_lf)
    truth = ds.y_tst.toarray() > 0

    def covered(arm: str) -> set[int]:
        s = sp.load_npz(out / arm / "scores.npz").toarray()
        s[s == 0] = -np.inf
        top = np.argsort(-s, axis=1, kind="stable")[:, :5]
        return {int(j) for i, row in enumerate(top) for j in row if np.isfinite(s[i, j]) and truth[i, j]}

    gained = covered("lever") - covered("base")
    assert gained
    freq = np.asarray(ds.binary_train().sum(axis=0)).ravel()
    assert np.median(freq[sorted(gained)]) <= np.median(freq)  # the gains are in the tail half


def test_plt_reference_row(tmp_path: Path, tiny_lf: Path, cache: Path):
    pytest.importorskip("lever_napkinxc", reason="adapters/napkinxc not installed")
    from lever_napkinxc.reference import plt_reference

    from lever_plugins.data import load_dataset

    out = tmp_path / "run"
    run_ab(_cfg(tiny_lf, teacher={"train": False}, eval={"reference": "plt"}), out, log=lambda s: None)
    ds = load_dataset(tiny_lf)
    ref = plt_reference(ds.trn_texts, ds.binary_train(), ds.tst_texts, top_k=100, seed=3)
    want = evaluate(ref, ds.y_tst, train_truth=ds.binary_train(), A=0.55, B=1.5)
    got = json.loads((out / "reference" / "metrics.json").read_text())
    assert got == pytest.approx(want)
    table = (out / "compare.md").read_text()
    assert f"| napkinXC PLT | {100 * want['P@1']:.2f} |" in table


def test_adapter_options_from_config(tiny_lf: Path):
    from lever_plugins.errors import ConfigError
    from lever_plugins.stages import make_adapter

    cfg = _cfg(tiny_lf, trainer={"options": {"hidden_units": 3}})
    with pytest.raises(ConfigError) as exc:
        make_adapter(cfg)
    assert "'builtin' does not take options ['hidden_units']" in exc.value.line()
    pytest.importorskip("lever_napkinxc", reason="adapters/napkinxc not installed")
    cfg = _cfg(tiny_lf, trainer={"adapter": "napkinxc", "options": {"positive_threshold": 0.3}})
    assert make_adapter(cfg).positive_threshold == 0.3

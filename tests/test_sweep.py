"""lever sweep: a grid on a hold-out of train (never the test split), stages shared across points, a sorted
table, the winner as a config that lever ab accepts; bad grids are one line, exit 2."""

from __future__ import annotations

import csv
import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import lever

import lever_plugins as lever_api
from lever_plugins.metrics import evaluate

TINY = """
seed = 3
[encoder]
max_len = 16
[teacher]
train = false
[soft_labels]
tau_l = 3
tau_d = 4
threshold = 0.7
[trainer]
epochs = 3
batch_size = 32
negatives = "full"
lr = 0.05
[eval]
bootstrap = 20
"""


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("LEVER_CACHE_DIR", str(tmp_path / "cache"))
    return {"LEVER_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}


def test_sweep_on_holdout_shares_stages(tmp_path: Path, tiny_lf: Path, env, one_torch_thread, monkeypatch):
    from lever_plugins.data import load_dataset
    from lever_plugins.teacher import encoder

    cfg = tmp_path / "c.toml"
    cfg.write_text(TINY)
    calls: list[str] = []  # the grid point during which the encoder ran
    real = encoder.Encoder.encode
    lines: list[str] = []

    def counting(self, texts, *a, **kw):
        calls.append(next((x.split()[2].rstrip(":") for x in reversed(lines) if x.startswith("== point")), "none"))
        return real(self, texts, *a, **kw)

    monkeypatch.setattr(encoder.Encoder, "encode", counting)
    out = tmp_path / "sweep"
    res = lever_api.sweep(data=tiny_lf, out=out, config=cfg, grid={"soft_labels.tau_l": [2, 4]}, select="psp@3",
                          log=lines.append)  # fmt: skip

    # The hold-out: 20% of the 60 train rows (seeded permutation, as data.holdout documents); never the 20 test rows
    ds = load_dataset(tiny_lf)
    val = np.sort(np.random.default_rng(3).permutation(60)[:12])
    for i in (0, 1):
        pt = out / "points" / f"{i:03d}"
        s = sp.load_npz(pt / "lever" / "scores.npz")
        assert s.shape == (12, 12)
        want = evaluate(s, ds.y_trn[val], train_truth=ds.binary_train()[np.setdiff1d(np.arange(60), val)],
                        name=ds.name, A=0.55, B=1.5)  # fmt: skip
        assert json.loads((pt / "lever" / "metrics.json").read_text()) == pytest.approx(want)
        assert res.rows[i]["PSP@3"] == pytest.approx(want["PSP@3"])

    # Stages shared: the second point encodes nothing, reuses the teacher and the base arm; its soft labels are new
    first_point = lines.index(next(x for x in lines if x.startswith("== point 2/2")))
    assert "1/2" in calls and "2/2" not in calls  # fresh cache: the first point encodes, the second reads
    assert not any(x.startswith("[soft_labels]") and "cached" in x for x in lines[first_point:])
    assert any(x.startswith("[teacher]") and "(cached)" in x for x in lines[first_point:])
    assert any(x.startswith("[train_base]") and "(cached)" in x for x in lines[first_point:])
    stages2 = json.loads((out / "points" / "001" / "manifest.json").read_text())["stages"]
    assert "from_store" in stages2["teacher"] and "from_store" in stages2["train_base"]
    assert "from_store" not in stages2["soft_labels"]

    # sweep.csv: one row per point; sweep.md sorted by the selected metric; the winner is its argmax
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    assert [r["soft_labels.tau_l"] for r in rows] == ["2", "4"]
    vals = [float(r["PSP@3"]) for r in rows]
    md = (out / "sweep.md").read_text().splitlines()
    order = [int(x.split("|")[1]) for x in md if x.startswith("| ") and x.split("|")[1].strip().isdigit()]
    assert order == sorted(range(2), key=lambda i: -vals[i])
    assert res.best["point"] == int(np.argmax(vals))
    win = [2, 4][res.best["point"]]
    best = tomllib.loads((out / "best.toml").read_text())
    assert best["soft_labels"]["tau_l"] == win and "holdout" not in best["data"]
    assert best["trainer"]["lr"] == 0.05 and best["data"]["path"] == str(tiny_lf)  # the rest of the config kept


def test_select_writes_a_config_lever_ab_accepts(tmp_path: Path, tiny_lf: Path, env):
    cfg = tmp_path / "c.toml"
    cfg.write_text(TINY)
    out = tmp_path / "sweep"
    r = lever("sweep", "--data", str(tiny_lf), "--config", str(cfg), "--grid", "soft_labels.threshold=0.6,0.9",
              "--out", str(out), "--select", "P@1", "--set", "eval.bootstrap=10", env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    win = rows[int(np.argmax([float(x["P@1"]) for x in rows]))]["soft_labels.threshold"]
    ab = tmp_path / "ab"
    r = lever("ab", "--data", str(tiny_lf), "--config", str(out / "best.toml"), "--out", str(ab), env=env)
    assert r.returncode == 0, r.stderr
    used = json.loads((ab / "manifest.json").read_text())["config"]
    assert used["soft_labels"]["threshold"] == float(win) and used["eval"]["bootstrap"] == 10
    assert used["data"]["holdout"] == 0 and used["data"]["max_test"] == 0
    assert json.loads((ab / "manifest.json").read_text())["data"]["n_tst"] == 20  # the test split now


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--grid", "trainer.l3=1,2"], "unknown key 'l3'"),
        (["--grid", "trainer.l2=abc,1e-5"], "expected a number"),
        (["--grid", "trainer.l2="], "has no values"),
        (["--grid", "data.holdout=0,0.2"], "never the test split"),
        (["--grid", "trainer.lr=0.1", "--select", "psp@7"], "unknown metric 'psp@7'"),
    ],
)
def test_bad_grid_is_one_line_exit_2_nothing_written(tmp_path: Path, tiny_lf: Path, args, needle):
    out = tmp_path / "sweep"
    r = lever("sweep", "--data", str(tiny_lf), "--out", str(out), *args)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], r.stderr
    assert not out.exists()


def test_stage_store_shares_intact_stages_only(tmp_path: Path):
    from lever_plugins.runs import Run, stage_store

    store = tmp_path / "sweep" / ".lever" / "stages"
    with Run(tmp_path / "sweep"), stage_store(store):
        with Run(tmp_path / "a") as a:
            (a.root / "soft").mkdir()
            (a.root / "soft" / "t.npz").write_bytes(b"payload")
            a.record_stage("soft_labels", "k1", ["soft/t.npz"], 1.0, stats={"n": 3})
        with Run(tmp_path / "b") as b:
            assert not b.stage_done("soft_labels", "k2", ["soft/t.npz"])  # another key: not shared
            assert b.stage_done("soft_labels", "k1", ["soft/t.npz"])
            assert (b.root / "soft" / "t.npz").read_bytes() == b"payload"
            rec = b.manifest()["stages"]["soft_labels"]
            assert rec["stats"] == {"n": 3} and "from_store" in rec
        stored = store / "soft_labels" / "k1" / "files" / "soft" / "t.npz"
        stored.unlink()
        stored.write_bytes(b"damaged")  # a damaged entry is never used
        with Run(tmp_path / "c") as c:
            assert not c.stage_done("soft_labels", "k1", ["soft/t.npz"])
            assert not (c.root / "soft" / "t.npz").exists()
    with Run(tmp_path / "d") as d:  # outside the block: no store
        assert d.store is None and not d.stage_done("soft_labels", "k1", ["soft/t.npz"])

"""The tracker plugin (plugins/tensorboard, distribution lever-tensorboard) fed by lever_run_event: a tiny
`lever ab` writes per-epoch loss and docs/s of the teacher and of both trainer arms, stage times, metrics
and the artefacts, read back with TensorBoard's own reader and compared with what the run recorded
(manifest stats, metrics.json). The core never names the tracker: the plugin is an installed distribution."""

from __future__ import annotations

import importlib.metadata as md
import json
from pathlib import Path

import pytest
from conftest import lever

CFG = """
seed = 3
[encoder]
max_len = 16
batch_size = 64
[teacher]
train = true
epochs = 2
max_len = 16
batch_size = 8
warmup_steps = 1
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


def test_tensorboard_tracker_gets_per_epoch_scalars(tmp_path: Path, tiny_lf: Path):
    try:
        md.version("lever-tensorboard")
    except md.PackageNotFoundError:
        pytest.skip("lever-tensorboard is not installed (scripts/setup.sh installs plugins/*)")
    ea = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    (tmp_path / "cfg.toml").write_text(CFG)
    out = tmp_path / "run"
    r = lever("ab", "--data", str(tiny_lf), "--out", str(out), "--config", str(tmp_path / "cfg.toml"),
              env={"LEVER_CACHE_DIR": str(tmp_path / "cache"), "LEVER_LOAD_PLUGINS": "lever-tensorboard"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    acc = ea.EventAccumulator(str(out / "tensorboard"), size_guidance={ea.TENSORS: 0, ea.SCALARS: 0})
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])

    def series(tag: str) -> list[tuple[int, float]]:
        return [(s.step, s.value) for s in acc.Scalars(tag)]

    stages = json.loads((out / "manifest.json").read_text())["stages"]
    # teacher: one point per epoch, the losses of its own history
    history = stages["teacher"]["stats"]["history"]
    assert [s for s, _ in series("teacher/loss")] == [1, 2]
    assert [v for _, v in series("teacher/loss")] == pytest.approx([h["loss"] for h in history], rel=1e-6)
    assert all(v > 0 for _, v in series("teacher/docs_per_s"))
    # both trainer arms: one point per epoch, the train_loss the trainer recorded
    for arm in ("base", "lever"):
        stats = stages[f"train_{arm}"]["stats"]
        got = series(f"train_{arm}/loss")
        assert [s for s, _ in got] == [1, 2, 3]
        assert [v for _, v in got] == pytest.approx(stats["train_loss"], rel=1e-6)
        assert [s for s, _ in series(f"train_{arm}/docs_per_s")] == [1, 2, 3]
        metrics = json.loads((out / arm / "metrics.json").read_text())
        assert series(f"metrics/{arm}/P_at_1") == [(0, pytest.approx(metrics["P@1"], rel=1e-6))]
    assert {"stages/teacher_seconds", "stages/train_lever_seconds"} <= scalars
    # the "artifact" events: every artefact of a computed stage, with its path
    texts = {t for t in acc.Tags()["tensors"] if t.startswith("artifacts/")}
    logged = " ".join(
        ev.tensor_proto.string_val[0].decode() for t in texts for ev in acc.Tensors(t)
    )
    for art in ("teacher/embeddings.npz", "soft/targets.npz", "base/scores.npz", "lever/scores.npz"):
        assert f"{art}: {(out / art).resolve()}" in logged

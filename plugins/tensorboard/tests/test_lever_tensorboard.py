"""Events written by the plugin read back with TensorBoard's own reader."""

from types import SimpleNamespace

import pytest
from lever_tensorboard import plugin

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def test_events_become_scalars_and_texts(tmp_path):
    run = SimpleNamespace(root=tmp_path)
    for epoch, loss in ((1, 0.7), (2, 0.5)):
        plugin.lever_run_event(run=run, event="epoch", payload={"stage": "train_base", "epoch": epoch,
                                                                "loss": loss, "docs_per_s": 100.0 * epoch})
    plugin.lever_run_event(run=run, event="metrics", payload={"arm": "base", "metrics": {"P@1": 0.25, "n": True}})
    plugin.lever_run_event(run=run, event="artifact", payload={"stage": "train_base", "name": "base/scores.npz",
                                                               "path": str(tmp_path / "base/scores.npz")})
    plugin.close_all()
    acc = event_accumulator.EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    assert [(s.step, round(s.value, 6)) for s in acc.Scalars("train_base/loss")] == [(1, 0.7), (2, 0.5)]
    assert [s.value for s in acc.Scalars("train_base/docs_per_s")] == [100.0, 200.0]
    assert [s.value for s in acc.Scalars("metrics/base/P_at_1")] == [0.25]
    assert "metrics/base/n" not in acc.Tags()["scalars"]  # booleans are not numbers here

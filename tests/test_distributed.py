"""torch.distributed paths on 2 gloo CPU processes: DDP teacher = one process, sharded kNN and encoding.

Each test starts real processes with torchrun (torch.distributed.run), as a user would.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, lever

from lever_plugins import distributed as dist
from lever_plugins.soft_labels.knn import knn_search

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_shard_bounds_cover_rows_in_order():
    for n in range(0, 12):
        for world in range(1, 5):
            b = dist.shard_bounds(n, world)
            assert b[0][0] == 0 and b[-1][1] == n
            assert all(b[i][1] == b[i + 1][0] for i in range(world - 1))
            sizes = [hi - lo for lo, hi in b]
            assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_single_process_helpers_are_identity():
    x = np.arange(12.0).reshape(4, 3)
    assert not dist.active() and dist.world_size() == 1 and dist.is_main()
    assert dist.gather_rows(x) is x
    assert dist.broadcast_object({"a": 1}) == {"a": 1}
    np.testing.assert_array_equal(dist.encode_sharded(lambda p: np.asarray(p)[:, None] * 2.0, [1, 2, 3]),
                                  [[2.0], [4.0], [6.0]])


def test_sharded_knn_and_gathers_on_two_processes(tmp_path):
    out = tmp_path / "w.npz"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for k in dist.LAUNCH_ENV:
        env.pop(k, None)
    cmd = dist.torchrun_command(2, [str(out)], module="dist_worker")
    r = subprocess.run(cmd, capture_output=True, text=True, env={**env, "PYTHONPATH": str(ROOT / "tests")},
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    z = np.load(out)
    assert int(z["world"]) == 2 and str(z["backend"]) == "gloo" and z["ranks"].tolist() == [0, 1]
    rng = np.random.default_rng(0)
    q = rng.standard_normal((53, 8)).astype(np.float32)
    b = rng.standard_normal((40, 8)).astype(np.float32)
    sc, ids = knn_search(q, b, 7, chunk_size=10)
    np.testing.assert_array_equal(z["ids"], ids)
    np.testing.assert_array_equal(z["scores"], sc)
    # brute force, independently of faiss
    cos = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (b / np.linalg.norm(b, axis=1, keepdims=True)).T
    np.testing.assert_array_equal(z["ids"], np.argsort(-cos, axis=1, kind="stable")[:, :7])
    np.testing.assert_array_equal(z["uneven"], [[0] * 3] * 2 + [[1] * 3] * 3)
    # rows in item order; items 0-5 encoded by rank 0, 6-10 by rank 1
    np.testing.assert_array_equal(z["enc"], [[10.0 * i, 0 if i < 6 else 1] for i in range(11)])
    # the soft-label builder on sharded kNN: the one-process matrix, exactly
    from dist_worker import soft_problem

    from lever_plugins.soft_labels import build_soft_labels

    y, doc, lbl, cfg = soft_problem()
    ref = build_soft_labels(y, doc, lbl, cfg).soft.toarray()
    assert (ref > 0).sum() > 10
    np.testing.assert_array_equal(z["soft"], ref)


@pytest.fixture
def no_dropout_model(tiny_model, tmp_path):
    """The tiny BERT without dropout: DDP ranks draw their own dropout masks, so only a dropout-free model
    can give the one-process result (up to float noise)."""
    from transformers import AutoModel, AutoTokenizer

    path = tmp_path / "bert-nodrop"
    AutoModel.from_pretrained(tiny_model, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0).save_pretrained(
        path)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(path)
    return path


def test_ddp_teacher_on_two_processes_equals_one_process(no_dropout_model, tiny_lf, tmp_path):
    from lever_plugins import config as cfgmod
    from lever_plugins.runs import Run
    from lever_plugins.stages import data_signature, load_data, teacher_stage
    from lever_plugins.teacher.encoder import Encoder

    # 12 labels in batches of 5: 5, 5, 2 → shards 3+2, 3+2, 1+1 (padding); epoch 2 uses clustered batches.
    toml = tmp_path / "t.toml"
    toml.write_text(
        f'[data]\npath = "{tiny_lf}"\n[teacher]\nmodel = "{no_dropout_model}"\ntrain = true\nmax_len = 16\nepochs = 2\n'
        'batch_size = 5\nlr = 2e-3\nwarmup_steps = 2\nnum_negatives = 3\ncluster_size = 4\ndevice = "cpu"\n')
    r = lever("teach", "--out", str(tmp_path / "two"), "--config", str(toml), "--nproc", "2",
              env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    two = np.load(tmp_path / "two" / "teacher" / "embeddings.npz")["lbl"]
    stats2 = json.loads((tmp_path / "two" / "teacher" / "teacher_stats.json").read_text())
    assert stats2["world_size"] == 2 and stats2["backend"] == "gloo" and stats2["steps"] == 6
    assert not (tmp_path / "two" / ".lever" / "lock").exists()

    cfg = cfgmod.load(str(toml), {})
    ds = load_data(cfg)
    with Run(tmp_path / "one") as run:
        one = teacher_stage(run, ds, cfg, data_signature(ds))[0]["lbl"]
    stats1 = json.loads((tmp_path / "one" / "teacher" / "teacher_stats.json").read_text())
    assert stats1["world_size"] == 1
    # same result up to float noise (padding widths and the gradient all-reduce differ)
    np.testing.assert_allclose(two, one, atol=2e-5)
    np.testing.assert_allclose([h["loss"] for h in stats2["history"]], [h["loss"] for h in stats1["history"]],
                               rtol=1e-5)
    assert [h["cluster_size"] for h in stats2["history"]] == [None, 4]
    # and training did move the embeddings: the comparison is not between two untrained encoders
    untrained = Encoder(str(no_dropout_model), 16, device="cpu").encode(ds.lbl_texts, progress=False)
    assert np.abs(untrained - one).max() > 1e-2
    assert Path(tmp_path / "two" / "teacher" / "model" / "config.json").is_file()

"""The CLI as a user meets it: exit codes, one-line errors, files written only on success."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import lever

from lever_plugins.data import write_npz, write_sparse
from lever_plugins.metrics import evaluate


@pytest.fixture
def mats(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    n, L = 40, 30
    truth = sp.random(n, L, density=0.1, random_state=1, format="csr", dtype=np.float32)
    truth.data[:] = 1
    train = sp.random(200, L, density=0.05, random_state=2, format="csr", dtype=np.float32)
    train.data[:] = 1
    scores = sp.csr_matrix(rng.normal(size=(n, L)).astype(np.float32) * (rng.random((n, L)) < 0.3))
    p = {"truth": tmp_path / "tst_X_Y.txt", "train": tmp_path / "trn_X_Y.npz", "scores": tmp_path / "scores.npz"}
    write_sparse(p["truth"], truth)
    write_npz(p["train"], train)
    sp.save_npz(p["scores"], scores)  # raw scipy: scores may be negative logits
    (tmp_path / "filter.txt").write_text("0 1\n3 4\n")
    p["filter"] = tmp_path / "filter.txt"
    return p


def test_eval_matches_library_and_writes_json(tmp_path: Path, mats: dict[str, Path]):
    out = tmp_path / "m.json"
    r = lever(
        "eval", "--scores", str(mats["scores"]), "--truth", str(mats["truth"]), "--train", str(mats["train"]),
        "--filter", str(mats["filter"]), "--out", str(out),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    got = json.loads(out.read_text())
    want = evaluate(
        sp.load_npz(mats["scores"]), _read(mats["truth"]),
        train_truth=sp.load_npz(mats["train"]), A=0.55, B=1.5, filter_pairs=np.array([[0, 1], [3, 4]]),
    )  # fmt: skip
    assert got == pytest.approx(want)
    assert "PSP@5" in r.stdout


def _read(path: Path) -> sp.csr_matrix:
    from lever_plugins.data import read_sparse

    return read_sparse(path)


def test_eval_shape_mismatch_is_one_line_and_writes_nothing(tmp_path: Path, mats: dict[str, Path]):
    small = tmp_path / "small.npz"
    sp.save_npz(small, sp.csr_matrix((5, 30), dtype=np.float32))
    out = tmp_path / "m.json"
    r = lever("eval", "--scores", str(small), "--truth", str(mats["truth"]), "--out", str(out))
    assert r.returncode == 2 and "shape" in r.stderr and r.stderr.strip().count("\n") == 0
    assert not out.exists()


def test_eval_missing_file(tmp_path: Path, mats: dict[str, Path]):
    r = lever("eval", "--scores", str(tmp_path / "nope.npz"), "--truth", str(mats["truth"]))
    assert r.returncode == 2 and "nope.npz" in r.stderr and "Traceback" not in r.stderr


def test_data_validate_and_convert_roundtrip(tmp_path: Path, mats: dict[str, Path]):
    r = lever("data", "validate", str(mats["truth"]))
    assert r.returncode == 0 and "rows 40" in r.stdout
    dst = tmp_path / "truth.npz"
    r = lever("data", "convert", str(mats["truth"]), str(dst))
    assert r.returncode == 0, r.stderr
    assert (sp.load_npz(dst) != _read(mats["truth"])).nnz == 0


def test_data_validate_bad_line(tmp_path: Path):
    bad = tmp_path / "bad.txt"
    bad.write_text("2 5\n0:1 3:1\n1:1 7:1\n")
    r = lever("data", "validate", str(bad))
    assert r.returncode == 2
    assert f"{bad}:3" in r.stderr and r.stderr.strip().count("\n") == 0


def test_plugins_json():
    r = lever("plugins", "--json")
    assert r.returncode == 0
    data = json.loads(r.stdout)
    assert data["teachers"]["siamese"]["dist"] == "lever-plugins"
    assert "builtin" in data["adapters"]

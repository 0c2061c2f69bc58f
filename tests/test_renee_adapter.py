"""The renee adapter (adapters/renee) on test stand-ins of Renée's dl_base/main.py and of pyxclib (written
for these tests, tests/standins/): patch numerics against torch autograd, soft values in the batch,
propensity from the original matrix, reversibility, doctor, files, score collection, and `lever ab
--adapter renee` end to end with the stand-in's main.py training in a torch.multiprocessing.spawn child."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from conftest import lever
from lever_renee import files
from lever_renee import patches as rp
from lever_renee.adapter import ReneeAdapter, flag_value
from renee_checks import (
    STANDIN_RENEE,
    STANDIN_XCLIB,
    check_default_impl_plugin_loss,
    check_fp16_backward,
    check_plugin_loss_backward,
    check_reader_and_propensity,
    check_reversible,
    check_soft_backward,
    check_unpatched_binarises,
    default_impl_targets,
    focal_loss,
    jain_inv_propensity,
    loss_patches,
    pos_weighted_bce,
    soft_backward,
    upstream_modules,
)

from lever_plugins.wrap import patched


@pytest.fixture
def standin(one_torch_thread):
    with upstream_modules(STANDIN_RENEE, STANDIN_XCLIB) as dl_base:
        assert Path(dl_base.__file__).parent == STANDIN_RENEE
        yield dl_base


# ------------------------------------------------------------------------------------------ numerics


@pytest.mark.parametrize(("accum", "use_custom"), [(1, False), (3, False), (1, True)])
def test_patched_backward_is_autograd_of_soft_bce(standin, tmp_path: Path, accum: int, use_custom: bool):
    out = check_soft_backward(standin, tmp_path, accum, use_custom)
    assert out["batch"]["zv"].dtype == torch.float32 and (out["batch"]["zv"] < 1).any()


@pytest.mark.parametrize(("accum", "use_custom", "loss"),
                         [(1, False, focal_loss), (3, False, focal_loss), (1, True, pos_weighted_bce)])
def test_plugin_loss_backward_is_autograd_of_that_loss(standin, tmp_path: Path, accum: int, use_custom: bool, loss):
    check_plugin_loss_backward(standin, tmp_path, accum, use_custom, loss)


def test_default_impl_takes_the_plugin_loss(standin):
    check_default_impl_plugin_loss(standin, focal_loss)


@pytest.mark.parametrize("accum", [1, 3])
def test_fp16xfc_backward_is_renees_own_path(standin, tmp_path: Path, accum: int):
    check_fp16_backward(standin, tmp_path, accum)


def test_unpatched_backward_binarises(standin, tmp_path: Path):
    check_unpatched_binarises(standin, tmp_path)


def test_backward_refuses_batches_without_soft_values(standin, tmp_path: Path):
    # gather_embed and xfc_backward patched, the collator not: an error, never silently binary targets.
    with patched(loss_patches()[1:]), pytest.raises(rp.SoftTargetError, match="batch\\['zv'\\] missing"):
        soft_backward(standin, tmp_path, 1, False)


def test_default_impl_already_gets_the_values(standin, tmp_path: Path):
    yfull, dense = default_impl_targets(standin, tmp_path)
    np.testing.assert_array_equal(yfull.numpy(), dense)


def test_patches_are_reversible(standin, tmp_path: Path):
    check_reversible(standin, tmp_path)
    assert ReneeAdapter().patches({"soft": False}) == []  # the base arm is Renée as shipped


def test_reader_and_propensity_patches(standin, tmp_path: Path):
    check_reader_and_propensity(tmp_path)


# ------------------------------------------------------------------------------------------ files


def test_files_helpers(tmp_path: Path):
    names = ("paraphrase-distilroberta-base-v2", "x/msmarco-distilbert-v4", "all-MiniLM-L6-v2", "my/model")
    expected = ["roberta-base", "bert-base-uncased", "miniLM_L6", "my/model"]
    assert [files.tokenizer_dir_name(t) for t in names] == expected
    for L in (1, 12, 99, 100, 111, 112, 613, 624):
        p = files.padded_labels(L)
        assert p % 16 == 0 and p > L and p >= 100 and p - 16 < max(L + 1, 100)
    assert flag_value(["--tf", "a", "--maxlen=64", "--tf", "b"], "--tf") == "b"
    assert flag_value(["--maxlen=64"], "--maxlen") == "64" and flag_value([], "--x", "d") == "d"


def test_read_scores_drops_padding_filters_and_cuts(tmp_path: Path):
    rng = np.random.default_rng(2)
    n, L, Lp, K = 7, 20, 32, 12
    logits = rng.standard_normal((n, Lp)).astype(np.float32)
    top = np.argsort(-logits, axis=1)[:, :K]
    inds = np.where(top >= 24, Lp - 1, top)  # Renée clamps padded labels to numy - 1: duplicates there
    data = np.take_along_axis(logits, top, 1)
    sp.save_npz(tmp_path / "s.npz", sp.csr_matrix((data.ravel(), inds.ravel(), np.arange(0, n * K + 1, K)), (n, Lp)))
    filt = np.array([[0, top[0, 0]], [3, top[3, 1]]])
    got = files.read_scores(tmp_path / "s.npz", n, L, filter_pairs=filt, top_k=5)
    assert got.shape == (n, L)
    for i in range(n):  # brute force: the top-5 real, unfiltered labels among the saved top-K
        cand = [j for j in top[i] if j < L and not any((filt == [i, j]).all(1))][:5]
        row = got[i]
        assert sorted(row.indices.tolist()) == sorted(int(j) for j in cand)
        np.testing.assert_array_equal(row.toarray().ravel()[cand], logits[i, cand])
    with pytest.raises(Exception, match="wrote no score matrix"):
        files.read_scores(tmp_path / "none.npz", n, L)


def test_token_files_match_renee_layout(tmp_path: Path, tiny_model: Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    texts = ["audio editor", "", "a much longer text " * 20]
    files.write_tokens(tmp_path, "trn_doc", texts, tok, 8)
    assert (tmp_path / "trn_doc_input_ids.dat").stat().st_size == 3 * 8 * 8
    ii = files.read_memmap(tmp_path / "trn_doc_input_ids.dat", 3, 8)
    am = files.read_memmap(tmp_path / "trn_doc_attention_mask.dat", 3, 8)
    ref = tok(texts[0], max_length=8, padding="max_length", truncation=True)
    assert ii[0].tolist() == ref["input_ids"] and am[0].tolist() == ref["attention_mask"]
    assert am[2].all() and ii[2, -1] == tok.sep_token_id  # truncated, ends with [SEP]
    assert not list(tmp_path.glob(".*"))  # no temp files left


# ------------------------------------------------------------------------------------------ doctor


def test_doctor_on_standin_and_drifted_copies(tmp_path: Path):
    r = lever("doctor", "renee", "--upstream", str(STANDIN_RENEE))
    assert r.returncode == 0, r.stderr
    assert "not a tested commit (tested: 7c7c9910422c)" in r.stdout
    assert r.stdout.count("ok  ") == len(ReneeAdapter().contract())

    drifted = tmp_path / "renee"
    shutil.copytree(STANDIN_RENEE, drifted, ignore=shutil.ignore_patterns("__pycache__"))
    dl = drifted / "dl_base.py"
    old = "def xfc_backward(self, embed_out, out, pos_x, pos_y, grad_input, use_custom)"
    dl.write_text(dl.read_text().replace(old, old.replace(", use_custom", "")))
    r = lever("doctor", "renee", "--upstream", str(drifted))
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "dl_base.BCELossMultiNode.xfc_backward" in err[0] and "signature changed" in err[0]
    dl.write_text(dl.read_text().replace("def gather_embed(self, embed, batch_data)", "def gather(self, e, b)"))
    r = lever("doctor", "renee", "--upstream", str(drifted))
    assert r.returncode == 2 and "FAIL dl_base.BCELossMultiNode.gather_embed: not defined" in r.stdout
    (drifted / "main.py").unlink()
    r = lever("doctor", "renee", "--upstream", str(drifted))
    assert r.returncode == 2 and "FAIL main.start: module not found" in r.stdout


def test_no_gpu_is_one_clear_error_before_anything_runs(tiny_lf: Path, tmp_path: Path):
    env = {"PYTHONPATH": os.pathsep.join([str(STANDIN_XCLIB), os.environ.get("PYTHONPATH", "")])}
    r = lever("wrap", "renee", "--data", str(tiny_lf), "--out", str(tmp_path / "run"), "--upstream",
              str(STANDIN_RENEE), env=env)  # fmt: skip
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "Renée cannot run on this machine: it needs a CUDA GPU" in err[0]
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------ end to end


def test_ab_through_renee_standin_in_spawned_child(tiny_lf: Path, tiny_model: Path, tmp_path: Path):
    """`lever ab --adapter renee`: both arms through the stand-in's main.py (spawned child), soft values
    reaching its loss in the +LEVER arm only, propensity from the original matrix, scores back."""
    upstream = tmp_path / "renee"
    shutil.copytree(STANDIN_RENEE, upstream, ignore=shutil.ignore_patterns("__pycache__"))
    before = {p.name: p.read_bytes() for p in upstream.iterdir()}
    args = ["--tf", str(tiny_model), "--maxlen", "16", "--epochs", "2", "--batch-size", "16", "--lr1", "0.5"]
    (tmp_path / "cfg.toml").write_text(
        f'[teacher]\nmodel = "{tiny_model}"\ntrain = false\nmax_len = 16\n'
        "[soft_labels]\ntau_l = 3\ntau_d = 4\nthreshold = 0.5\n[eval]\nbootstrap = 50\n"
        f"[trainer]\nupstream_args = {json.dumps(args)}\noptions = {{ require_cuda = false }}\n"
    )
    env = {
        "PYTHONPATH": os.pathsep.join([str(STANDIN_XCLIB), os.environ.get("PYTHONPATH", "")]),
        "LEVER_CACHE_DIR": str(tmp_path / "cache"),
    }
    out = tmp_path / "ab"
    r = lever("ab", "--data", str(tiny_lf), "--out", str(out), "--adapter", "renee", "--upstream", str(upstream),
              "--config", str(tmp_path / "cfg.toml"), env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    from lever_plugins.data import load_dataset

    ds = load_dataset(tiny_lf)
    y = ds.binary_train()
    N, L = y.shape
    Lp = files.padded_labels(L)
    targets = sp.load_npz(out / "soft/targets.npz").tocsr()
    assert targets.shape[0] == N + L and (targets.data < 1).any()
    y_pad = sp.csr_matrix((y.data, y.indices, y.indptr), shape=(N, Lp))
    for arm, rows, target_sum in (("lever", N + L, targets.sum()), ("base", N, y.nnz)):
        root = out / arm / "upstream"
        probe = json.loads(next(root.glob("Results/Bert-XC/dataset/renee-exp/renee-exp_probe.json")).read_text())
        assert probe["pid"] != os.getpid() and probe["trn_shape"] == [rows, Lp]
        # Each epoch visits every row once: the targets the loss used sum to the arm's target values.
        np.testing.assert_allclose(probe["target_sum"], [target_sum] * 2, rtol=1e-4)
        # Propensity from the ORIGINAL binary N × L matrix in both arms.
        np.testing.assert_allclose(probe["inv_prop"], jain_inv_propensity(y_pad, 0.55, 1.5), rtol=1e-6)
        tok = root / "dataset" / "bert-base-uncased-16"
        assert (tok / "trn_doc_input_ids.dat").stat().st_size == rows * 16 * 8
        assert (tok / "tst_doc_attention_mask.dat").stat().st_size == len(ds.tst_texts) * 16 * 8
        scores = sp.load_npz(out / arm / "scores.npz")
        assert scores.shape == (len(ds.tst_texts), L) and scores.getnnz(axis=1).min() >= 5
        assert json.loads((out / arm / "metrics.json").read_text())["P@1"] >= 0
    assert probe["target_sum"][0] != pytest.approx(targets.sum())  # the base arm really was binary
    assert (out / "compare.md").is_file()
    assert {p.name: p.read_bytes() for p in upstream.iterdir() if p.is_file()} == before  # checkout untouched


def test_prepare_writes_renee_inputs_without_touching_its_inputs(tmp_path: Path, tiny_model: Path, monkeypatch):
    from transformers import AutoTokenizer

    from lever_plugins.data import read_sparse
    from lever_plugins.wrap import Arm

    monkeypatch.syspath_prepend(str(STANDIN_XCLIB))  # prepare checks that xclib is importable
    rng = np.random.default_rng(4)
    N, L, n_tst = 9, 5, 4
    y = (rng.random((N, L)) < 0.4).astype(np.float32)
    y[np.arange(N), rng.integers(0, L, N)] = 1
    targets = sp.vstack([sp.csr_matrix(y * 0.75), sp.identity(L, format="csr", dtype=np.float32)]).tocsr()
    y_test = sp.csr_matrix(np.eye(n_tst, L, dtype=np.float32) * 0.5)  # non-binary: mutation would show
    lbl = [f"label {j}" for j in range(L)]
    ctx = Arm(
        workdir=tmp_path / "w", name="lever", upstream=STANDIN_RENEE,
        upstream_args=["--tf", str(tiny_model), "--maxlen=12", "--expname", "x"], targets=targets.copy(),
        support=targets.copy(), y_train=sp.csr_matrix(y), y_test=y_test.copy(),
        trn_texts=[f"doc {i}" for i in range(N)] + lbl, tst_texts=[f"test {i}" for i in range(n_tst)],
        lbl_texts=lbl, tst_filter=np.array([[1, 2], [3, 0]]), seed=7,
    )  # fmt: skip
    ctx.workdir.mkdir()
    spec = ReneeAdapter(require_cuda=False).prepare(ctx)
    data = Path(spec.argv[spec.argv.index("--data-dir") + 1])
    assert spec.script == "main.py" and spec.argv[-2:] == ["--seed", "7"]
    Lp = files.padded_labels(L)
    np.testing.assert_array_equal(read_sparse(data / "trn_X_Y.txt").toarray(), files.pad_columns(targets, Lp).toarray())
    assert read_sparse(data / "tst_X_Y.txt").toarray()[:, :L].tolist() == np.eye(n_tst, L).tolist()
    assert (data / "tst_filter_labels.txt").read_text() == "1 2\n3 0\n"
    tok = AutoTokenizer.from_pretrained(tiny_model)
    ii = files.read_memmap(data / "bert-base-uncased-12" / "trn_doc_input_ids.dat", N + L, 12)
    assert ii[N + 3].tolist() == tok("label 3", max_length=12, padding="max_length", truncation=True)["input_ids"]
    lbl_ids = files.read_memmap(data / "bert-base-uncased-12" / "lbl_input_ids.dat", L, 12)
    assert lbl_ids[3].tolist() == ii[N + 3].tolist()
    assert spec.payload["soft"] and spec.payload["target_shape"] == [N + L, Lp]
    assert spec.payload["score_path"].endswith("Results/Bert-XC/dataset/x/x_score_mat.npz")
    # the arm's matrices are untouched
    np.testing.assert_array_equal(ctx.y_test.toarray(), y_test.toarray())
    np.testing.assert_array_equal(ctx.targets.toarray(), targets.toarray())

"""The bad-input matrix (tests/README.md): every row through the real ``lever`` CLI in a subprocess.

Each row builds one malformed input from a good template and runs one command on it. Expected: exit code 2,
exactly one stderr line ``error: <file>[:<line>]...: <what> (<fix>)`` naming the file and position, no
traceback, and nothing written or changed anywhere (no run folder, no output file, no temp file).
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import lever

N_LABELS = 4


def gz_lines(path: Path, lines: list) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for x in lines:
            fh.write((x if isinstance(x, str) else json.dumps(x)) + "\n")


def doc(i: int, ind: list, rel: list | None = None) -> dict:
    return {"uid": f"d{i}", "title": f"doc {i}", "content": "", "target_ind": ind,
            "target_rel": rel if rel is not None else [1.0] * len(ind)}  # fmt: skip


def lf(root: Path, trn: list | None = None, tst: list | None = None, lbl: list | None = None) -> Path:
    """A valid 4-label LF folder unless a split is given: trn.json.gz line i+1 is document i."""
    f = root / "lf"
    f.mkdir()
    gz_lines(f / "lbl.json.gz", lbl if lbl is not None else [{"uid": f"l{j}", "title": f"label {j}"} for j in range(4)])
    gz_lines(f / "trn.json.gz", trn if trn is not None else [doc(0, [0]), doc(1, [1, 2]), doc(2, [3])])
    gz_lines(f / "tst.json.gz", tst if tst is not None else [doc(0, [2]), doc(1, [0])])
    return f


def raw(root: Path, trn_xy: str = "3 4\n0:1\n1:1 2:1\n3:1\n", y_txt: bytes = b"l0\nl1\nl2\nl3\n") -> Path:
    f = root / "raw"
    f.mkdir()
    (f / "trn_X.txt").write_text("a\nb\nc\n")
    (f / "tst_X.txt").write_text("d\ne\n")
    (f / "Y.txt").write_bytes(y_txt)
    (f / "trn_X_Y.txt").write_text(trn_xy)
    (f / "tst_X_Y.txt").write_text("2 4\n2:1\n0:1\n")
    return f


def cfg(root: Path, body: str) -> Path:
    p = root / "c.toml"
    p.write_text(body)
    return p


def truncated(path: Path) -> Path:
    raw_bytes = path.read_bytes()
    path.write_bytes(raw_bytes[: len(raw_bytes) * 2 // 3])
    return path


def lf_big_trn(root: Path) -> Path:
    """An LF folder whose trn.json.gz is long enough (2000 lines) to be cut inside the deflate stream."""
    return lf(root, trn=[doc(i, [i % N_LABELS]) for i in range(2000)])


def good_mats(root: Path) -> tuple[Path, Path]:
    sp.save_npz(root / "scores.npz", sp.csr_matrix(np.array([[0.9, 0.1, 0, 0], [0, 0.2, 0.8, 0]], np.float32)))
    (root / "truth.txt").write_text("2 4\n0:1\n2:1\n")
    return root / "scores.npz", root / "truth.txt"


@dataclass
class Row:
    """``build(tmp)`` makes the inputs and returns the argv; ``where`` and ``what`` must be in the line."""

    id: str
    build: Callable[[Path], list[str]]
    where: str  # regex for the position: file name and line (escaped by the caller as needed)
    what: str  # plain substring of the message


def ab(data: Path, root: Path, *extra: str) -> list[str]:
    return ["ab", "--data", str(data), "--out", str(root / "run"), *extra]


def _not_gzip(t: Path) -> list[str]:
    f = lf(t)
    (f / "tst.json.gz").write_text(json.dumps(doc(0, [1])) + "\n")
    return ["data", "validate", str(f)]


def _raw_rows(t: Path) -> list[str]:
    f = raw(t)
    (f / "trn_X.txt").write_text("a\nb\n")
    return ab(f, t)


def _xc_gz(t: Path) -> list[str]:
    p = t / "y.txt.gz"
    p.write_bytes(gzip.compress(("2000 4\n" + "0:1 3:0.5\n" * 2000).encode()))
    truncated(p)
    return ["data", "validate", str(p)]


def _npz_corrupt(t: Path) -> list[str]:
    sp.save_npz(t / "y.npz", sp.csr_matrix(np.eye(4, dtype=np.float32)))
    raw_bytes = bytearray((t / "y.npz").read_bytes())
    raw_bytes[len(raw_bytes) // 2] ^= 0xFF
    (t / "y.npz").write_bytes(bytes(raw_bytes))
    return ["data", "validate", str(t / "y.npz")]


def _npz_nan(t: Path) -> list[str]:
    s, _ = good_mats(t)
    sp.save_npz(t / "truth.npz", sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 0, np.inf, 0]], np.float32)))
    return ["eval", "--scores", str(s), "--truth", str(t / "truth.npz"), "--out", str(t / "m.json")]


def _eval_shape(t: Path) -> list[str]:
    s, _ = good_mats(t)
    (t / "truth.txt").write_text("2 5\n0:1\n2:1\n")
    return ["eval", "--scores", str(s), "--truth", str(t / "truth.txt"), "--out", str(t / "m.json")]


def _eval_scores_nan(t: Path) -> list[str]:
    _, tr = good_mats(t)
    (t / "scores.txt").write_text("2 4\n0:0.9 1:-0.5\n2:nan\n")
    return ["eval", "--scores", str(t / "scores.txt"), "--truth", str(tr), "--out", str(t / "m.json")]


def _eval_filter(t: Path) -> list[str]:
    s, tr = good_mats(t)
    (t / "f.txt").write_text("0 1\n1 x\n")
    return ["eval", "--scores", str(s), "--truth", str(tr), "--filter", str(t / "f.txt"), "--out", str(t / "m.json")]


def _eval_train_cols(t: Path) -> list[str]:
    s, tr = good_mats(t)
    (t / "trn.txt").write_text("1 3\n0:1\n")
    return ["eval", "--scores", str(s), "--truth", str(tr), "--train", str(t / "trn.txt")]


def _convert_file(t: Path) -> list[str]:
    (t / "y.txt").write_text("2 4\n0:1\n1:1 7:1\n")
    return ["data", "convert", str(t / "y.txt"), str(t / "y.npz")]


def _convert_folder(t: Path) -> list[str]:
    f = lf(t, trn=[doc(0, [0]), '{"uid": "d1", "title": '])
    return ["data", "convert", str(f), str(t / "converted")]


def _filter(t: Path) -> list[str]:
    f = lf(t)
    (f / "tst_filter_labels.txt").write_text("0 1\n1 4\n")
    return ab(f, t)


def _blank_inside(t: Path) -> list[str]:
    return ab(lf(t, tst=[doc(0, [1]), "", doc(2, [1])]), t)


def _missing_tst(t: Path) -> list[str]:
    f = lf(t)
    (f / "tst.json.gz").unlink()
    return ab(f, t)


def _with_cfg(body: str, *extra: str) -> Callable[[Path], list[str]]:
    return lambda t: ab(lf(t), t, "--config", str(cfg(t, body)), *extra)


STANDIN_CASCADEXML = Path(__file__).parent / "standins" / "cascadexml"


def _drifted_upstream(t: Path) -> list[str]:
    import shutil

    up = t / "cascadexml-copy"
    shutil.copytree(STANDIN_CASCADEXML, up)
    ds = up / "src" / "dataset.py"
    ds.write_text(ds.read_text().replace("def __getitem__(self, idx)", "def __getitem__(self, index)"))
    return ab(lf(t), t, "--adapter", "cascadexml", "--upstream", str(up))


# --- issue 17's classes: parser and library errors on user input, values of the wrong type or range,
# huge declarations, broken model folders, paths leaving --out; each must be one line before any stage.


def _xc_huge_int(t: Path) -> list[str]:
    return ab(raw(t, trn_xy="3 4\n0:1\n1:1 " + "9" * 5000 + ":1\n3:1\n"), t)


def _npz_is_npy(t: Path) -> list[str]:
    np.save(t / "y.npy", np.eye(4))
    (t / "y.npy").rename(t / "y.npz")
    return ["data", "validate", str(t / "y.npz")]


def _npz_members(t: Path, **members) -> list[str]:
    np.savez(t / "y.npz", format=b"csr", **members)
    return ["data", "validate", str(t / "y.npz")]


def _npz_indptr_decreasing(t: Path) -> list[str]:
    return _npz_members(t, shape=np.array([4, 4]), data=np.ones(4, np.float32), indices=np.arange(4),
                        indptr=np.array([0, 2, 1, 3, 4]))  # fmt: skip


def _npz_huge_shape(t: Path) -> list[str]:
    argv = _npz_members(t, shape=np.array([200_000_000_000, 4]), data=np.ones(1, np.float32),
                        indices=np.array([0]), indptr=np.array([0, 1]))  # fmt: skip
    assert (t / "y.npz").stat().st_size < 2000  # about a kilobyte declaring 8·10^11 cells
    return argv


def _npz_float_indices(t: Path) -> list[str]:
    return _npz_members(t, shape=np.array([2, 4]), data=np.ones(2, np.float32), indices=np.array([0.0, 2.5]),
                        indptr=np.array([0, 1, 2]))  # fmt: skip


def _eval_a_nan(t: Path) -> list[str]:
    s, truth = good_mats(t)
    return ["eval", "--scores", str(s), "--truth", str(truth), "--out", str(t / "m.json"), "-A", "nan"]


def _model_empty_config(t: Path) -> list[str]:
    m = t / "model"
    m.mkdir()
    (m / "config.json").write_text("")
    return ab(lf(t), t, "--config", str(cfg(t, f"[encoder]\nmodel = '{m}'\n")))


def _model_truncated_weights(t: Path) -> list[str]:
    from conftest import save_random_bert

    m = save_random_bert(t / "model")
    w = m / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    return ab(lf(t), t, "--config", str(cfg(t, f"[encoder]\nmodel = '{m}'\n")))


def _out_parent_is_a_file(t: Path) -> list[str]:
    (t / "f").write_text("x")
    return ["ab", "--data", str(lf(t)), "--out", str(t / "f" / "run")]


STANDIN_ELIAS = Path(__file__).parent / "standins" / "elias"
STANDIN_RENEE = Path(__file__).parent / "standins" / "renee"


BAD = "bad JSON"
ROWS = [
    # --- LF json.gz folders
    Row("lf-truncated-gzip", lambda t: ab(truncated(lf_big_trn(t) / "trn.json.gz").parent, t),
        r"trn\.json\.gz:\d+", "truncated gzip file: it ends inside line"),
    Row("lf-not-gzip", _not_gzip, r"tst\.json\.gz", "not a valid gzip file"),
    Row("lf-bad-json", lambda t: ["teach", "--data", str(lf(t, trn=[doc(0, [0]), '{"uid": 1, "title": "x",'])),
                                  "--out", str(t / "run")], r"trn\.json\.gz:2", BAD),
    Row("lf-not-an-object", lambda t: ab(lf(t, trn=[doc(0, [0]), "[1, 2]"]), t), r"trn\.json\.gz:2",
        "line is not a JSON object"),
    Row("lf-id-out-of-range", lambda t: ["soften", "--data", str(lf(t, trn=[doc(0, [0]), doc(1, [1, 4])])),
                                         "--out", str(t / "run")], r"trn\.json\.gz:2", "label id 4 out of range"),
    Row("lf-id-negative", lambda t: ["train", "--data", str(lf(t, tst=[doc(0, [-1])])), "--out", str(t / "run")],
        r"tst\.json\.gz:1", "label id -1 out of range"),
    Row("lf-id-not-integer", lambda t: ab(lf(t, trn=[doc(0, [0]), doc(1, [1.5])]), t), r"trn\.json\.gz:2",
        "label id 1.5 is not an integer"),
    Row("lf-nan-value", lambda t: ab(lf(t, trn=[doc(0, [0]), '{"uid": "x", "title": "t", "target_ind": [1], '
                                                  '"target_rel": [NaN]}']), t),
        r"trn\.json\.gz:2", "non-finite target_rel nan"),
    Row("lf-inf-value", lambda t: ["data", "validate", str(lf(t, trn=[
        doc(0, [0]), doc(1, [1]), '{"uid": "x", "title": "t", "target_ind": [2], "target_rel": [Infinity]}']))],
        r"trn\.json\.gz:3", "non-finite target_rel inf"),
    Row("lf-negative-value", lambda t: ab(lf(t, trn=[doc(0, [0, 1], [1.0, -0.5])]), t), r"trn\.json\.gz:1",
        "negative target_rel -0.5"),
    Row("lf-duplicate-label", lambda t: ab(lf(t, trn=[doc(0, [2, 0, 2])]), t), r"trn\.json\.gz:1",
        "duplicate label id 2 in one row"),
    Row("lf-rel-length", lambda t: ab(lf(t, trn=[doc(0, [0, 1], [1.0])]), t), r"trn\.json\.gz:1",
        "target_rel has 1 entries but target_ind has 2"),
    Row("lf-missing-title", lambda t: ab(lf(t, lbl=[{"uid": "a", "title": "x"}, {"uid": "b"}, {"title": "c"},
                                                   {"title": "d"}]), t), r"lbl\.json\.gz:2",
        "missing or non-string 'title'"),
    Row("lf-all-label-texts-empty", lambda t: ab(lf(t, lbl=[{"title": ""}, {"title": " "}, {"title": ""},
                                                            {"title": "", "content": ""}]), t),
        r"lbl\.json\.gz", "all 4 label texts are empty"),
    Row("lf-blank-line-inside", _blank_inside, r"tst\.json\.gz:2", "blank line inside the file"),
    Row("lf-missing-file", _missing_tst, r"tst\.json\.gz", "missing tst.json.gz"),
    Row("lf-filter-out-of-range", _filter, r"tst_filter_labels\.txt:2", "filter pair (1, 4) out of range"),
    Row("data-folder-missing", lambda t: ab(t / "absent", t), r"absent", "data folder not found"),
    # --- raw-text folders and XC sparse text / npz matrices
    Row("xc-wrong-header", lambda t: ab(raw(t, trn_xy="x y\n0:1\n1:1\n3:1\n"), t), r"trn_X_Y\.txt:1", "bad header"),
    Row("xc-header-row-count", lambda t: ab(raw(t, trn_xy="4 4\n0:1\n1:1\n3:1\n"), t), r"trn_X_Y\.txt:1",
        "the header says 4 rows but the file has 3"),
    Row("xc-id-out-of-range", lambda t: ab(raw(t, trn_xy="3 4\n0:1\n1:1 4:1\n3:1\n"), t), r"trn_X_Y\.txt:3",
        "column index 4 out of range"),
    Row("xc-nan-value", lambda t: ab(raw(t, trn_xy="3 4\n0:nan\n1:1\n3:1\n"), t), r"trn_X_Y\.txt:2",
        "non-finite value nan"),
    Row("xc-inf-value", lambda t: ab(raw(t, trn_xy="3 4\n0:1\n1:1\n3:inf\n"), t), r"trn_X_Y\.txt:4",
        "non-finite value inf"),
    Row("xc-negative-value", lambda t: ab(raw(t, trn_xy="3 4\n0:1\n1:-1\n3:1\n"), t), r"trn_X_Y\.txt:3",
        "negative value -1.0"),
    Row("xc-malformed-token", lambda t: ab(raw(t, trn_xy="3 4\n0:1\n1-1\n3:1\n"), t), r"trn_X_Y\.txt:3",
        "malformed token '1-1'"),
    Row("xc-truncated-gzip", _xc_gz, r"y\.txt\.gz:\d+", "cannot read"),
    Row("raw-row-count", _raw_rows, r"trn_X\.txt", "trn_X.txt has 2 lines but trn_X_Y.txt has 3 rows"),
    Row("raw-bad-utf8", lambda t: ab(raw(t, y_txt=b"l0\nl\xff1\nl2\nl3\n"), t), r"Y\.txt:2", "invalid UTF-8"),
    Row("raw-label-count", lambda t: ab(raw(t, y_txt=b"l0\nl1\nl2\n"), t), r"trn_X_Y\.txt",
        "has 4 label columns but Y.txt has 3 lines"),
    Row("npz-corrupt", _npz_corrupt, r"y\.npz", "not a readable scipy sparse .npz"),
    Row("npz-inf-value", _npz_nan, r"truth\.npz", "non-finite value inf at row 1, column 2"),
    # --- lever eval
    Row("eval-shape-mismatch", _eval_shape, r"scores\.npz", "scores shape (2, 4) != truth shape (2, 5)"),
    Row("eval-scores-nan", _eval_scores_nan, r"scores\.txt:3", "non-finite value nan"),
    Row("eval-filter-malformed", _eval_filter, r"f\.txt:2", "malformed filter line '1 x'"),
    Row("eval-train-columns", _eval_train_cols, r"trn\.txt", "train has 3 labels, truth 4"),
    # --- lever data convert: the destination must not appear
    Row("convert-bad-matrix", _convert_file, r"y\.txt:3", "column index 7 out of range"),
    Row("convert-bad-folder", _convert_folder, r"trn\.json\.gz:2", BAD),
    # --- configuration (TOML file and options)
    Row("cfg-unknown-key", _with_cfg("seed = 1\n[soft_labels]\ntau = 4\n"), r"c\.toml:3 \[soft_labels\]",
        "unknown key 'tau' (did you mean 'tau_l'?)"),
    Row("cfg-unknown-section", _with_cfg("[sfot_labels]\ntau_l = 4\n"), r"c\.toml:1",
        "unknown key 'sfot_labels' (did you mean 'soft_labels'?)"),
    Row("cfg-wrong-type", _with_cfg("[teacher]\nlr = 1e-4\nepochs = 'three'\n"), r"c\.toml:3 \[teacher\] epochs",
        "expected an integer, got str 'three'"),
    Row("cfg-wrong-type-bool", _with_cfg("[trainer]\nfinetune = 1\n"), r"c\.toml:2 \[trainer\] finetune",
        "expected true or false"),
    Row("cfg-nan", _with_cfg("[soft_labels]\nthreshold = nan\n"), r"c\.toml:2 \[soft_labels\] threshold",
        "expected a finite number, got nan"),
    Row("cfg-out-of-range", _with_cfg("[teacher]\nepochs = -1\n"), r"c\.toml:2", "teacher.epochs = -1 must be >= 0"),
    Row("cfg-encoder-lr", _with_cfg("[trainer]\nfinetune = true\nencoder_lr = -1e-5\n"), r"c\.toml:3",
        "trainer.encoder_lr = -1e-05 must be >= 0"),
    Row("cfg-finetune-adapter", _with_cfg("[trainer]\nfinetune = true\n", "--adapter", "napkinxc"),
        r"\[trainer\] finetune", "adapter 'napkinxc' cannot fine-tune the encoder"),
    Row("cfg-lbfgs-shortlist", _with_cfg("[trainer]\nsolver = 'lbfgs'\nnegatives = 'shortlist'\n"),
        r"\[trainer\] solver", "fits a linear head on frozen features over all labels, but negatives = 'shortlist'"),
    Row("cfg-negative-seed", _with_cfg("seed = -5\n"), r"c\.toml:1", "seed = -5 must be in [0, 2**63)"),
    Row("cfg-bad-choice", _with_cfg("[teacher]\nloss = 'hinge'\n"), r"c\.toml:2",
        "teacher.loss = 'hinge' is not one of triplet, logistic"),
    Row("cfg-invalid-toml", _with_cfg("seed = [\n"), r"c\.toml", "invalid TOML"),
    Row("cfg-missing-file", lambda t: ab(lf(t), t, "--config", str(t / "nope.toml")), r"nope\.toml",
        "config file not found"),
    Row("cfg-unknown-adapter", lambda t: ab(lf(t), t, "--adapter", "nope"), r"trainer\.adapter",
        "unknown adapter 'nope'"),
    Row("cfg-adapter-options", _with_cfg("[trainer]\noptions = { hidden_units = 3 }\n"), r"\[trainer\] options",
        "adapter 'builtin' does not take options ['hidden_units']"),
    Row("cfg-missing-model", _with_cfg("[encoder]\nmodel = '/nonexistent/model'\n"), r"encoder\.model",
        "model folder not found: /nonexistent/model"),
    # --- command line
    Row("cli-bad-option-value", lambda t: ab(lf(t), t, "--seed", "abc"), r"lever ab",
        "Invalid value for '--seed': 'abc' is not a valid integer"),
    Row("cli-unknown-option", lambda t: ab(lf(t), t, "--sed", "3"), r"lever ab", "No such option '--sed'"),
    # --- upstream checkouts (wrapping adapters; checked from the source before any stage runs)
    Row("upstream-missing-path", lambda t: ab(lf(t), t, "--adapter", "cascadexml", "--upstream", str(t / "absent")),
        r"absent", "cascadexml upstream checkout not found"),
    Row("upstream-no-path", lambda t: ab(lf(t), t, "--adapter", "cascadexml"), r"--upstream",
        "adapter 'cascadexml' needs the upstream checkout"),
    Row("upstream-wrong-version", _drifted_upstream, r"dataset\.py",
        "upstream drift: dataset.MultiXMLGeneral.__getitem__: signature changed"),
    Row("cli-out-is-a-file", lambda t: ["ab", "--data", str(lf(t)), "--out", str(cfg(t, ""))], r"c\.toml",
        "the output path exists and is not a folder"),
    # --- issue 17: tracebacks that were, bad values that were accepted, escapes, late checks
    Row("cli-out-parent-is-a-file", _out_parent_is_a_file, r"f/run",
        "cannot create the output folder: a parent is a file"),
    Row("xc-huge-int", _xc_huge_int, r"trn_X_Y\.txt:3", "column index of 5000 digits out of range"),
    Row("lf-deep-json", lambda t: ab(lf(t, trn=[doc(0, [0]), "[" * 100_000 + "]" * 100_000, doc(2, [3])]), t),
        r"trn\.json\.gz:2", "bad JSON (nested too deeply)"),
    Row("lf-id-boolean", lambda t: ab(lf(t, trn=[doc(0, [0]), doc(1, [True, 2]), doc(2, [3])]), t),
        r"trn\.json\.gz:2", "label id true is a boolean, not an integer"),
    Row("npz-is-npy", _npz_is_npy, r"y\.npz", "a .npy array, not a .npz archive"),
    Row("npz-indptr-decreasing", _npz_indptr_decreasing, r"y\.npz", "indptr decreases"),
    Row("npz-huge-shape", _npz_huge_shape, r"y\.npz", "indptr has 2 entries, expected 200000000001"),
    Row("npz-float-indices", _npz_float_indices, r"y\.npz", "member 'indices' has dtype float64"),
    Row("eval-A-nan", _eval_a_nan, r"lever eval -A", "propensity A = nan must be a finite number > 0"),
    Row("cfg-eval-A-negative", _with_cfg("[eval]\nA = -1\n"), r"c\.toml:2", "eval.A = -1.0 must be > 0"),
    Row("cfg-knn-alpha-high", _with_cfg("[trainer]\nknn_alpha = 7\n"), r"c\.toml:2",
        "trainer.knn_alpha = 7.0 must be in [0, 1]"),
    Row("cfg-knn-alpha-negative", _with_cfg("[trainer]\nknn_alpha = -5\n"), r"c\.toml:2",
        "trainer.knn_alpha = -5.0 must be in [0, 1]"),
    Row("cfg-knn-k-zero", _with_cfg("[trainer]\nknn_alpha = 0.5\nknn_k = 0\n"), r"c\.toml:3",
        "trainer.knn_k = 0 must be >= 1"),
    Row("cfg-sigmoid-overflow", _with_cfg("[soft_labels]\ncalibration = 'sigmoid'\nsigmoid_a = 1e308\n"),
        r"c\.toml:3", "do not give finite scores for cosines in [-1, 1]"),
    Row("cfg-select-unknown-metric", _with_cfg("[soft_labels]\ncalibration_select = 'P@1+Q@5'\n"), r"c\.toml:2",
        "soft_labels.calibration_select = 'P@1+Q@5': 'Q@5' is not a metric name"),
    Row("cfg-holdout-empty-train", _with_cfg("[data]\nholdout = 0.999\n"), r"\[data\] holdout",
        "leaves an empty train part"),
    Row("cfg-device-unavailable", _with_cfg("[trainer]\ndevice = 'cuda'\n"), r"trainer\.device",
        "CUDA requested but not available"),
    Row("model-empty-config", _model_empty_config, r"model/config\.json", "cannot load the model's config"),
    Row("model-truncated-weights", _model_truncated_weights, r"model/model\.safetensors", "cannot load the weights"),
    Row("wrap-expname-escape", lambda t: ["wrap", "renee", "--data", str(lf(t)), "--out", str(t / "run"), "--upstream",
                                         str(STANDIN_RENEE), "--", "--expname", "../../x"],
        r"upstream arguments --expname", "--expname '../../x' must be a plain name"),
    Row("elias-tf-escape", _with_cfg("[trainer]\nadapter = 'elias'\n[trainer.options]\ntf = '../../../../../../../x'\n",
                                     "--upstream", str(STANDIN_ELIAS)),
        r"\[trainer\] options\.tf", "would make ELIAS's token files land outside the run folder"),
]  # fmt: skip


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input_row(tmp_path: Path, row: Row) -> None:
    argv = row.build(tmp_path)
    before = tree(tmp_path)
    r = lever(*argv, env={"LEVER_CACHE_DIR": str(tmp_path / "cache")})
    assert r.returncode == 2, (r.stdout, r.stderr)
    line = r.stderr.strip()
    assert "\n" not in line and "Traceback" not in line, r.stderr
    assert line.startswith("error: ")
    assert re.search(row.where + r"[:\s]", line), f"position {row.where!r} not in {line!r}"
    assert row.what in line, line
    # Nothing written, nothing changed: no run folder, output file, converted folder, cache or temp file.
    assert tree(tmp_path) == before
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]


def test_matrix_table_lists_every_row() -> None:
    """tests/README.md documents every row of this module (and the TODO rows the adapters will fill)."""
    table = (Path(__file__).parent / "README.md").read_text()
    missing = [r.id for r in ROWS if f"`{r.id}`" not in table]
    assert not missing, f"rows missing from tests/README.md: {missing}"


def test_some_empty_label_texts_are_one_warning_line(tmp_path: Path) -> None:
    """A few labels without text (some real sets have them) are allowed: one warning line naming the first."""
    f = lf(tmp_path, lbl=[{"title": "a"}, {"title": ""}, {"title": "c"}, {"title": " "}])
    r = lever("data", "validate", str(f))
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == (
        f"warning: {f / 'lbl.json.gz'}:2: 2 of 4 label texts are empty (the first is label 1); "
        "LEVER gives them no teacher neighbours"
    )


def test_eval_without_train_scores_what_needs_no_propensity(tmp_path: Path) -> None:
    """``--train`` is optional (README): without it, P@k and nDCG@k are computed, PSP is left out with a note."""
    s, truth = good_mats(tmp_path)
    r = lever("eval", "--scores", str(s), "--truth", str(truth), "--out", str(tmp_path / "m.json"))
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "m.json").read_text())
    # by hand: row 0 ranks label 0 first (true), row 1 label 2 (true); each row has one true label of 4
    assert m["P@1"] == 1.0 and m["P@3"] == pytest.approx(1 / 3)
    assert not [k for k in m if k.startswith("PS")]
    assert "no --train" in r.stderr and "Traceback" not in r.stderr

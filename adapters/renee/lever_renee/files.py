"""Renée's input files and its score matrix, written and read without Renée's code.

Layout (as ``main.start`` reads a ``--data-dir D``):

- ``D/trn_X_Y.txt``, ``D/tst_X_Y.txt``: pyxclib sparse text ("rows cols" header, then ``label:value``);
- ``D/tst_filter_labels.txt``: "doc label" pairs, one a line (the file must exist, even empty);
- ``D/{tok}-{maxlen}/{trn_doc,tst_doc,lbl}_{input_ids,attention_mask}.dat``: headerless C-order int64
  memmaps of shape (rows, maxlen), as ``utils/CreateTokenizedFiles.py`` writes them (padding to
  ``max_length``, truncation, special tokens). ``trn_doc`` has one row per target row: for +LEVER the
  N documents then the label texts, the way ``utils/CreateAugData.py`` stacks them.

Outputs: ``./Results/Bert-XC/<basename of D>/<expname>/<expname>_score_mat.npz`` under Renée's working
directory: top-K raw logits per test row (K = 100 at the last evaluation), unfiltered, label ids
clamped to ``numy - 1`` where Renée padded the label space.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from lever_plugins.errors import UpstreamError
from lever_plugins.runs import atomic_path, atomic_write

TOKENIZE_CHUNK = 4096
MIN_TOPK_COLUMNS = 100  # FullPredictor takes torch.topk(out, 100) over one GPU's labels at the last evaluation


def tokenizer_dir_name(tf: str) -> str:
    """The folder name ``main.start`` derives from ``--tf`` (a guess of the tokenizer family)."""
    if "roberta" in tf:
        return "roberta-base"
    if "bert" in tf:
        return "bert-base-uncased"
    if "MiniLM" in tf:
        return "miniLM_L6"
    return tf


def token_dir(data_dir: Path, tf: str, maxlen: int) -> Path:
    # The same string main.start builds (a --tf with slashes gives nested folders, as there).
    return Path(f"{data_dir}/{tokenizer_dir_name(tf)}-{maxlen}")


def padded_labels(n_labels: int) -> int:
    """Label columns to write: a multiple of 16 (Renée's own per-GPU rounding, so one GPU adds none),
    at least one spare column (Renée clamps padded labels' predictions to ``numy - 1``: that is then a
    spare, never a real label) and at least 100 (the last evaluation's top-100 per GPU)."""
    return 16 * -(-max(n_labels + 1, MIN_TOPK_COLUMNS) // 16)


def pad_columns(m: sp.spmatrix, n_cols: int) -> sp.csr_matrix:
    """A float32 copy of ``m`` with ``n_cols`` columns (never a view: callers edit its values)."""
    m = sp.csr_matrix(m, dtype=np.float32)
    return sp.csr_matrix((m.data.copy(), m.indices.copy(), m.indptr.copy()), shape=(m.shape[0], n_cols))


def write_filter(path: Path, pairs: np.ndarray | None) -> None:
    pairs = np.zeros((0, 2), np.int64) if pairs is None else np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    with atomic_write(path, "w", encoding="utf-8") as fh:
        fh.writelines(f"{r} {c}\n" for r, c in pairs)


def write_tokens(folder: Path, prefix: str, texts: Sequence[str], tokenizer: object, maxlen: int) -> None:
    """``{prefix}_input_ids.dat`` and ``{prefix}_attention_mask.dat``: int64 (len(texts), maxlen)."""
    folder.mkdir(parents=True, exist_ok=True)
    n = len(texts)
    with (
        atomic_path(folder / f"{prefix}_input_ids.dat") as ii_path,
        atomic_path(folder / f"{prefix}_attention_mask.dat") as am_path,
    ):
        shape = (max(n, 1), maxlen)  # np.memmap refuses an empty file
        ii = np.memmap(ii_path, dtype=np.int64, mode="w+", shape=shape)
        am = np.memmap(am_path, dtype=np.int64, mode="w+", shape=shape)
        for start in range(0, n, TOKENIZE_CHUNK):
            enc = tokenizer(  # type: ignore[operator]
                [t if t else " " for t in texts[start : start + TOKENIZE_CHUNK]],
                add_special_tokens=True,
                max_length=maxlen,
                padding="max_length",
                truncation=True,
                return_attention_mask=True,
                return_tensors="np",
            )
            ii[start : start + len(enc["input_ids"])] = enc["input_ids"]
            am[start : start + len(enc["input_ids"])] = enc["attention_mask"]
        ii.flush()
        am.flush()
        del ii, am
        if n == 0:
            os.truncate(ii_path, 0)
            os.truncate(am_path, 0)


def read_memmap(path: Path, rows: int, maxlen: int) -> np.ndarray:
    """A token file as ``PreTokBertDataset.get_fts`` opens it (shape (rows, maxlen), int64)."""
    return np.memmap(path, mode="r", dtype=np.int64, shape=(rows, maxlen))


def score_path(workdir: Path, data_dir: Path, expname: str) -> Path:
    return workdir / "Results" / "Bert-XC" / data_dir.name / expname / f"{expname}_score_mat.npz"


def read_scores(
    path: Path, n_test: int, n_labels: int, filter_pairs: np.ndarray | None = None, top_k: int = 100
) -> sp.csr_matrix:
    """Renée's score matrix as ``n_test × n_labels`` CSR: spare/padded columns dropped (Renée's clamped
    duplicates land there), filter pairs removed, the ``top_k`` highest logits per row kept."""
    if not path.is_file():
        raise UpstreamError(
            "Renée wrote no score matrix",
            where=str(path),
            fix="Renée saves <expname>_score_mat.npz at its evaluations (every 5 epochs and the last); "
            "--infer saves none: drop it",
        )
    s = sp.load_npz(path).tocsr()
    if s.shape[0] != n_test or s.shape[1] < n_labels:
        raise UpstreamError(
            f"Renée's score matrix has shape {s.shape}, expected {n_test} rows and >= {n_labels} columns",
            where=str(path),
            fix="it is from another data set or run: remove the workdir and run again",
        )
    coo = s.tocoo()
    keep = coo.col < n_labels
    rows, cols, vals = coo.row[keep], coo.col[keep], coo.data[keep].astype(np.float32)
    if filter_pairs is not None and len(filter_pairs):
        fp = np.asarray(filter_pairs, dtype=np.int64).reshape(-1, 2)
        drop = np.isin(rows.astype(np.int64) * n_labels + cols, fp[:, 0] * n_labels + fp[:, 1])
        rows, cols, vals = rows[~drop], cols[~drop], vals[~drop]
    # Per row, highest score first (ties: lower label), then cut to top_k.
    order = np.lexsort((cols, -vals, rows))
    rows, cols, vals = rows[order], cols[order], vals[order]
    start = np.searchsorted(rows, rows, side="left")
    rank = np.arange(len(rows)) - start
    keep = rank < top_k
    out = sp.csr_matrix((vals[keep], (rows[keep], cols[keep])), shape=(n_test, n_labels), dtype=np.float32)
    out.sort_indices()
    return out

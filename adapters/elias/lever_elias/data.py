"""ELIAS's input files, written by LEVER (own code; formats as ELIAS @ 724b5fe reads them).

``Datasets/<ds>/`` relative to ELIAS's working directory:

- ``Y.trn.npz`` / ``Y.tst.npz``: scipy CSR label matrices (``sp.load_npz``). Values are read: the
  classification loss uses the stored value of every (row, label) pair as its BCE target.
- ``raw/trn_X.<tok>_<len>.dat`` + ``.meta``: int64 memmaps (rows × len) of token ids, padded to ``len``
  with the tokenizer's pad id, special tokens added, truncated; ``.meta`` is one line ``rows len int64``
  (``data_tokenization: offline``). ``<tok>`` is ELIAS's tokenizer name for its encoder ``tf``
  (:func:`token_type`). ``raw/{trn,tst}_X.txt`` (one text a line) serve ``data_tokenization: online``.
- ``X.trn.npz`` / ``X.tst.npz``: bag-of-words CSR (``elias_utils.py gen_cluster_A`` and its sparse ranker).
- ``filter_labels_test.txt``: ``row label`` pairs, whitespace separated, removed before ELIAS's metrics.
- ``val_inds_<n>.npy``: the validation rows ELIAS takes out of training when ``num_val_points = n``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from lever_plugins.runs import atomic_write, new_temp_file, remove_temp


def token_type(tf: str) -> str:
    """The tokenizer ELIAS loads for encoder ``tf`` (and names its token files after)."""
    if "roberta" in tf:
        return "roberta-base"
    if "bert" in tf:
        return "bert-base-uncased"
    return tf


def token_file(data_dir: Path, split: str, tf: str, max_len: int) -> Path:
    """``Datasets/<ds>/raw/<split>_X.<tok>_<len>.dat`` exactly as ELIAS formats it (a local encoder path
    as ``tf`` makes ``<tok>`` a path, hence sub-folders: the string is kept, not sanitised)."""
    return Path(f"{data_dir}/raw/{split}_X.{token_type(tf)}_{max_len}.dat")


def save_npz(path: Path, m: sp.spmatrix) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as fh:
        sp.save_npz(fh, sp.csr_matrix(m), compressed=True)


def write_lines(path: Path, texts: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w", encoding="utf-8") as fh:
        for t in texts:
            fh.write(" ".join(str(t).split()) + "\n")


def write_tokens(path: Path, texts: list[str], tokenizer, max_len: int, batch: int = 4096) -> np.ndarray:
    """Token ids of ``texts`` as ELIAS's offline memmap (+ ``.meta``); returns the array written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = new_temp_file(path)
    try:
        ids = np.memmap(tmp, dtype="int64", mode="w+", shape=(max(len(texts), 1), max_len))
        for s in range(0, len(texts), batch):
            enc = tokenizer(
                [" ".join(str(t).split()) for t in texts[s : s + batch]],
                add_special_tokens=True,
                max_length=max_len,
                padding="max_length",
                truncation=True,
                return_tensors="np",
            )
            ids[s : s + len(enc["input_ids"])] = enc["input_ids"]
        ids.flush()
        out = np.array(ids[: len(texts)])
        del ids
        os.replace(tmp, path)
    except BaseException:
        remove_temp(tmp)
        raise
    with atomic_write(Path(f"{path}.meta"), "w", encoding="utf-8") as fh:
        fh.write(f"{len(texts)} {max_len} int64\n")
    return out


def write_filter(path: Path, pairs: np.ndarray) -> None:
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w", encoding="utf-8") as fh:
        for r, c in pairs:
            fh.write(f"{r} {c}\n")


def val_rows(n_docs: int, n_val: int, seed: int) -> np.ndarray:
    """``n_val`` validation rows drawn from the ORIGINAL documents only (never label rows)."""
    if not 0 < n_val < n_docs:
        raise ValueError(f"num_val_points must be in [1, {n_docs - 1}], got {n_val}")
    return np.sort(np.random.default_rng(seed).choice(n_docs, size=n_val, replace=False)).astype(np.int64)


def bow(trn_texts: list[str], tst_texts: list[str]) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """TF-IDF bag of words (the ``X.*.npz`` files), fitted on the training rows."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(sublinear_tf=True, dtype=np.float32, max_features=1 << 18)
    x_trn = vec.fit_transform(trn_texts).tocsr()
    return x_trn, vec.transform(tst_texts).tocsr()


def num_clusters(num_labels: int, max_leaf: int) -> int:
    """ELIAS's cluster count C = 2**ceil(log2(L / max_leaf)) (what its cluster classifier has)."""
    return int(2 ** np.ceil(np.log2(num_labels / max_leaf)))


def cluster_matrix(
    hard: sp.csr_matrix, x_bow: sp.csr_matrix, max_leaf: int, seed: int, dims: int = 256
) -> sp.csr_matrix:
    """ELIAS's initial cluster–label matrix (C × L, one 1 per label), built here instead of by
    ``elias_utils.py gen_cluster_A`` (libpecos): balanced 2-means on label centroids, centroid of label j =
    normalised sum of the (normalised) BOW rows with a HARD entry for j — soft teacher pairs do not move
    labels between clusters. Same C as ELIAS computes from ``max_leaf``."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.preprocessing import normalize

    from lever_plugins.teacher.clustering import balanced_clusters

    n_labels = hard.shape[1]
    c = num_clusters(n_labels, max_leaf)
    binary = sp.csr_matrix(hard, dtype=np.float32, copy=True)
    binary.data[:] = 1.0
    centroids = normalize(binary.T.tocsr() @ normalize(x_bow)).astype(np.float32)
    n_comp = min(dims, min(centroids.shape) - 1)  # never a dense L × vocabulary array
    if centroids.shape[1] > dims and n_comp >= 2:
        feats = TruncatedSVD(n_components=n_comp, random_state=seed).fit_transform(centroids)
    else:
        feats = centroids.toarray()
    # Labels without rows get a random direction rather than all landing in one cluster.
    rng = np.random.default_rng(seed)
    empty = np.linalg.norm(feats, axis=1) < 1e-12
    feats[empty] = rng.standard_normal((int(empty.sum()), feats.shape[1]))
    groups = balanced_clusters(feats.astype(np.float32), max_leaf, rng)
    if len(groups) != c:  # L <= max_leaf: ELIAS still wants C clusters
        groups = [g for g in np.array_split(np.concatenate(groups), c)]
    rows = np.concatenate([np.full(len(g), i) for i, g in enumerate(groups)])
    cols = np.concatenate(groups)
    return sp.csr_matrix((np.ones(len(cols), np.float32), (rows, cols)), shape=(c, n_labels))

"""Plain PLT on TF-IDF: the reference row of ``lever ab --reference plt``."""

from __future__ import annotations

import scipy.sparse as sp

from lever_napkinxc.adapter import train_predict_texts


def plt_reference(
    trn_texts: list[str], y_trn: sp.spmatrix, tst_texts: list[str], top_k: int = 100, seed: int = 13
) -> sp.csr_matrix:
    """napkinXC PLT (defaults) on TF-IDF of the texts, trained on the binary ``y_trn``; top-k scores
    as CSR n_test × L. The same code path as the napkinxc adapter's base arm."""
    y = sp.csr_matrix(y_trn, copy=True)
    y.data = (y.data > 0).astype(y.data.dtype)  # any stored relevance counts as a positive
    scores, _ = train_predict_texts(list(trn_texts), y, list(tst_texts), top_k=top_k, seed=seed)
    return scores

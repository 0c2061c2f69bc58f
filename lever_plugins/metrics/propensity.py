"""Inverse propensity weights (Jain et al. 2016) and the per-dataset A/B constants."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from lever_plugins.errors import ConfigError, DataError


def binarise(y: sp.spmatrix, where: str = "labels") -> sp.csr_matrix:
    """CSR copy of ``y`` with every stored non-zero set to 1 (explicit zeros and duplicates removed)."""
    if not sp.issparse(y):
        raise DataError(f"expected a scipy sparse matrix, got {type(y).__name__}", where=where,
                        fix="pass a scipy.sparse CSR matrix")
    out = sp.csr_matrix(y, dtype=np.float64, copy=True)
    out.sum_duplicates()  # also sorts indices: later code relies on row-major, label-ascending order
    out.data[:] = out.data != 0  # a +1/-1 pair summed to 0 is not a label either
    out.eliminate_zeros()
    return out


def inv_propensity(y_train: sp.spmatrix, A: float, B: float) -> np.ndarray:
    """Inverse propensity w_l = 1 + C (n_l + B)^-A with C = (ln N - 1)(B + 1)^A (pyxclib's formula).

    ``n_l`` is the column sum of the BINARISED train matrix (pyxclib sums the stored values, which is
    wrong for soft or augmented matrices), ``N`` its row count. Labels absent from train get
    the largest weight, 1 + C B^-A.
    """
    if B <= 0 and A > 0:
        raise ConfigError(f"propensity B must be > 0, got {B}", where="eval.B", fix="use e.g. B = 1.5")
    y = binarise(y_train, where="train labels")
    n = y.shape[0]
    if n < 1:
        raise DataError("train label matrix has no rows", where="train labels",
                        fix="pass the original train matrix")
    freqs = np.asarray(y.sum(axis=0), dtype=np.float64).ravel()
    c = (np.log(n) - 1.0) * (B + 1.0) ** A
    return 1.0 + c * np.power(freqs + B, -A)


def propensity_ab(dataset_name: str) -> tuple[float, float]:
    """(A, B) picked by dataset name, as Renée does: "amazon" 0.6/2.6, "wiki" 0.5/0.4, else 0.55/1.5.

    Case-insensitive substring match, "amazon" first. ELIAS (with the LEVER PR) differs: it uses
    0.55/1.5 for WikiSeeAlso and WikiHierarchy, so pass A/B explicitly to reproduce its tables.
    """
    low = dataset_name.lower()
    if "amazon" in low:
        return 0.6, 2.6
    if "wiki" in low:
        return 0.5, 0.4
    return 0.55, 1.5

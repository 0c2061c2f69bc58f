"""Inverse propensity weights (Jain et al. 2016) and the per-dataset A/B constants."""

from __future__ import annotations

import math

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
    check_ab(A, B)
    y = binarise(y_train, where="train labels")
    n = y.shape[0]
    if n < 1:
        raise DataError("train label matrix has no rows", where="train labels",
                        fix="pass the original train matrix")
    freqs = np.asarray(y.sum(axis=0), dtype=np.float64).ravel()
    c = (np.log(n) - 1.0) * (B + 1.0) ** A
    return 1.0 + c * np.power(freqs + B, -A)


def check_ab(A: float | None, B: float | None, where: tuple[str, str] = ("eval.A", "eval.B")) -> None:
    """Propensity A and B (None: not given) must be finite and > 0: A = -1 or NaN would give
    plausible-looking wrong PSP."""
    for name, v, at in (("A", A, where[0]), ("B", B, where[1])):
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise ConfigError(f"propensity {name} = {v!r} must be a finite number > 0", where=at,
                              fix="use e.g. A = 0.55, B = 1.5 (or leave them out: picked by the data-set name)")


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

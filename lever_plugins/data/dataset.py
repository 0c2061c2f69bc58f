"""The in-memory data set every stage consumes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp


@dataclass
class Dataset:
    """Texts and label matrices of one XC data set.

    ``y_trn``/``y_tst``: CSR float32 (rows × L), values as stored in the files (binary for LF sets).
    ``*_filter``: int64 array (k, 2) of (row, label) pairs removed from predictions before scoring.
    """

    name: str
    trn_texts: list[str]
    tst_texts: list[str]
    lbl_texts: list[str]
    y_trn: sp.csr_matrix
    y_tst: sp.csr_matrix
    trn_filter: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=np.int64))
    tst_filter: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=np.int64))
    trn_uids: list[str] | None = None
    tst_uids: list[str] | None = None
    lbl_uids: list[str] | None = None
    # After a slice (max_train, max_test, hold-out): each row's index in the split it was taken from (the
    # test rows' split is ``tst_from``: "test", or "train" for a hold-out); None when the split is whole.
    trn_rows: np.ndarray | None = None
    tst_rows: np.ndarray | None = None
    tst_from: str = "test"

    @property
    def num_labels(self) -> int:
        return self.y_trn.shape[1]

    def binary_train(self) -> sp.csr_matrix:
        """The ORIGINAL train matrix binarised: the only input propensities may be computed from."""
        y = self.y_trn.copy().tocsr()
        y.eliminate_zeros()
        y.data[:] = 1.0
        return y.astype(np.float32)

"""Stand-in for ``xclib.data.data_utils``: the sparse text reader with pyxclib's signature."""

import numpy as np
import scipy.sparse as sp


def read_sparse_file(file, n_features=None, dtype="float32", zero_based=True, query_id=False, offset=0,
                     length=-1, header=True, force_header=True, safe_read=True):
    """A "rows cols" header, then one line per row of ``label:value`` pairs -> CSR (values kept)."""
    with open(file, encoding="utf-8") as fh:
        n_rows, n_cols = map(int, fh.readline().split())
        indptr, indices, data = [0], [], []
        for line in fh:
            for pair in line.split():
                j, v = pair.split(":")
                indices.append(int(j))
                data.append(float(v))
            indptr.append(len(indices))
    return sp.csr_matrix((np.asarray(data, dtype=dtype), np.asarray(indices), np.asarray(indptr)), (n_rows, n_cols))

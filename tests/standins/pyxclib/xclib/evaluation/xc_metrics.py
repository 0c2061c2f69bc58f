"""Stand-in for ``xclib.evaluation.xc_metrics``: inverse propensity of Jain et al. (2016)."""

import numpy as np


def compute_inv_propesity(labels, A, B):
    """1 + C (n_l + B)^-A with C = (log N - 1)(B + 1)^A; n_l = the column sums of ``labels`` (stored values)."""
    n = labels.shape[0]
    freqs = np.ravel(np.asarray(labels.sum(axis=0)))
    c = (np.log(n) - 1) * np.power(B + 1, A)
    return 1.0 + c * np.power(freqs + B, -A)

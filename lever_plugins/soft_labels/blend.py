"""Blend hard targets and teacher soft labels into one sparse BCE target matrix.

The paper trains on λ·BCE(z, y) + (1−λ)·BCE(z, p̂). BCE is affine in its target, so per entry this is
exactly BCE(z, λ·y + (1−λ)·p̂): one BCE against a blended target (the form every trainer can take).

What is p̂ at a ground-truth pair? The builder stores teacher scores only for pairs it ADDS, never for
ground truth. We take p̂ = 1 there: the teacher is trained on exactly these pairs and is meant to agree
with them, and LEVER only ever adds mass (ground truth is never lowered). Then

* ``mode="paper"``: ground truth λ·1 + (1−λ)·1 = 1; teacher-only pairs λ·0 + (1−λ)·p̂ = (1−λ)·p̂;
  everything else 0. λ = 1 gives back y; λ = 0 gives the union matrix.
* ``mode="union"``: the matrix the official code releases (notes/upstream-lever_official.md §3–4):
  1 at ground truth, p̂ at teacher-only pairs, 0 elsewhere, i.e. no λ at all (λ = 0 above).

A value stored in ``soft`` at a ground-truth pair (a third-party provider might) is ignored in both
modes: ground truth stays 1.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from lever_plugins.errors import ConfigError, DataError

MODES = ("paper", "union")


def blend(y: sp.spmatrix, soft: sp.spmatrix, lam: float, mode: str = "paper") -> sp.csr_matrix:
    """CSR float32 targets: 1 at ``y``'s stored entries, (1−lam)·p̂ ("paper") or p̂ ("union") at
    teacher-only entries of ``soft``; no explicit zeros, sorted indices. See the module doc."""
    if mode not in MODES:
        raise ConfigError(f"blend mode {mode!r} is not one of {', '.join(MODES)}", where="blend")
    if not 0.0 <= lam <= 1.0:
        raise ConfigError(f"blend lambda = {lam} must be in [0, 1]", where="soft_labels.blend_lambda")
    if y.shape != soft.shape:
        raise DataError(f"soft labels have shape {soft.shape} but targets {y.shape}", where="blend")
    yb = sp.csr_matrix(y, dtype=np.float32, copy=True)
    yb.eliminate_zeros()
    yb.data[:] = 1.0
    s = sp.csr_matrix(soft, dtype=np.float32, copy=True)
    s.eliminate_zeros()
    if s.nnz and (s.data.min() < 0.0 or s.data.max() > 1.0 or not np.isfinite(s.data).all()):
        raise DataError("soft label scores must lie in [0, 1]", where="blend", fix="calibrate them")
    # drop teacher values at ground-truth pairs: there the target is 1 whatever the teacher says
    s = s - s.multiply(yb)
    weight = 1.0 if mode == "union" else 1.0 - lam
    out = (yb + s * np.float32(weight)).tocsr().astype(np.float32)
    out.eliminate_zeros()
    out.sum_duplicates()
    out.sort_indices()
    return out

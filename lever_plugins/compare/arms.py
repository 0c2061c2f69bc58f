"""Are base and +LEVER a fair A/B? Compare what each arm's trainer actually received.

An A/B run must differ only in LEVER's settings: the +LEVER arm may add rows (label texts as documents) and
teacher pairs, and its targets come from the teacher and soft-label settings. Everything else must be the
same in both arms: adapter and trainer settings, seed, encoder, data split, the features and texts of the N
training documents, the test features and texts, and the targets on the ground-truth pairs of the N
document rows (LEVER keeps ground truth at 1; a blend that dropped or lowered one would show here).

:func:`arm_settings` fingerprints one arm (plain JSON: settings as values, arrays as sha256);
:func:`arm_differences` lists every key that differs, one readable line each.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

# What LEVER itself changes (listed in the report, never counted as a difference).
LEVER_ONLY = ("extra_rows", "teacher_pairs_in_document_rows")


def _sha(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def _sha_texts(texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(hashlib.sha256(t.encode("utf-8")).digest())
    return h.hexdigest()[:16]


def _sha_csr(m: sp.csr_matrix) -> str:
    m = sp.csr_matrix(m, dtype=np.float32)
    m.sort_indices()
    return _sha(m.indptr.astype(np.int64), m.indices.astype(np.int64), m.data)


def arm_settings(
    *,
    adapter: str,
    trainer: Any,
    encoder: Any,
    seed: int,
    data_signature: str,
    truth: sp.spmatrix,
    x_train: np.ndarray,
    targets: sp.spmatrix,
    x_test: np.ndarray,
    texts: tuple[Sequence[str], Sequence[str]] | None = None,
) -> dict[str, Any]:
    """Fingerprint of what one arm's trainer received. ``truth``: the N×L binarised training ground truth
    (the first N rows of ``x_train``/``targets`` are its documents; rows after N are LEVER's)."""
    n = truth.shape[0]
    t = sp.csr_matrix(targets, dtype=np.float32)
    yb = sp.csr_matrix(truth, dtype=np.float32)
    yb.data[:] = 1.0
    docs = t[:n]
    on_truth = docs.multiply(yb).tocsr()  # targets at the ground-truth pairs (a dropped one is absent)
    on_truth.eliminate_zeros()
    s = {
        "adapter": adapter,
        "trainer": dataclasses.asdict(trainer) if dataclasses.is_dataclass(trainer) else dict(trainer),
        "encoder": dataclasses.asdict(encoder) if dataclasses.is_dataclass(encoder) else dict(encoder),
        "seed": int(seed),
        "data_split": data_signature,
        "document_rows": int(n),
        "label_columns": int(t.shape[1]),
        "document_features": _sha(np.asarray(x_train[:n], dtype=np.float32)),
        "test_features": _sha(np.asarray(x_test, dtype=np.float32)),
        "truth_targets_on_document_rows": _sha_csr(on_truth),
        "extra_rows": int(t.shape[0] - n),
        "teacher_pairs_in_document_rows": int(docs.nnz - on_truth.nnz),
    }
    if texts is not None:
        s["document_texts"] = _sha_texts(list(texts[0])[:n])
        s["test_texts"] = _sha_texts(texts[1])
    return s


def _flat(d: dict[str, Any]) -> dict[str, Any]:
    """``{"trainer": {"lr": 0.1}}`` -> ``{"trainer.lr": 0.1}`` (one level: a setting's own dict is one value)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update({f"{k}.{kk}": vv for kk, vv in v.items()})
        else:
            out[k] = v
    return out


def arm_differences(base: dict[str, Any], lever: dict[str, Any]) -> list[str]:
    """One line per setting that differs between the arms (LEVER's own are not differences)."""
    a, b = _flat(base), _flat(lever)
    out = []
    for key in sorted(set(a) | set(b)):
        if key in LEVER_ONLY:
            continue
        va, vb = a.get(key, "(absent)"), b.get(key, "(absent)")
        if va != vb:
            out.append(f"{key}: base {va!r}, +LEVER {vb!r}")
    return out


def report(base: dict[str, Any], lever: dict[str, Any], lever_settings: dict[str, Any]) -> dict[str, Any]:
    """The manifest's ``ab_check``: differences (should be none), LEVER's own settings, both fingerprints."""
    diffs = arm_differences(base, lever)
    return {
        "fair": not diffs,
        "differences": diffs,
        "lever_only": {**lever_settings, **{k: lever.get(k) for k in LEVER_ONLY}},
        "arms": {"base": base, "lever": lever},
    }


def summary(check: dict[str, Any]) -> str:
    """One line for the log and compare.md."""
    lo = check["lever_only"]
    if check["fair"]:
        return (
            "A/B check: the arms differ only in LEVER's settings "
            f"(+LEVER: {lo.get('extra_rows', 0)} label rows, {lo.get('teacher_pairs_in_document_rows', 0)} teacher "
            "pairs in document rows; same trainer, seed, encoder, split, document and test features, ground truth)."
        )
    return "WARNING: base and +LEVER differ in more than LEVER's settings: " + "; ".join(check["differences"])

"""Top-k selection with ties broken by id: the one rule every ranked output of the project follows.

``torch.topk`` and ``np.argpartition`` say nothing about WHICH of several equal scores they keep at the
k-th place, nor in which order equal scores come out; the choice can change with the number of threads,
the library version or the device. Here every row is ordered by (score descending, id ascending) and,
when equal scores straddle the k-th place, the lowest ids are kept: the result is exactly "sort the row
by (-score, id), take k", whatever did the selection. Rows whose k-th and (k+1)-th scores differ (almost
all) cost one ``torch.topk`` of k + 1 and a sort of the k kept; only rows with a tie at the cut are
re-selected from the whole row.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def order_rows(vals: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorder each row by (value descending, id ascending); NaN goes last. Returns new arrays."""
    if vals.shape[1] < 2:
        return vals, ids
    key = np.where(np.isnan(vals), -np.inf, vals)
    order = np.lexsort((ids, -key), axis=-1)  # lexsort's last key is primary
    return np.take_along_axis(vals, order, axis=1), np.take_along_axis(ids, order, axis=1)


def topk_by_id(x: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` of every row of ``x`` (a 2-D torch tensor on any device, or a numpy array) as numpy
    ``(values float32 [n, k'], ids int64 [n, k'])``, k' = min(k, columns), ordered by (-value, id), with
    the lowest ids kept among values tied at the k-th place (module doc)."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
    n, m = t.shape
    k = min(int(k), m)
    if n == 0 or k == 0:
        return np.zeros((n, k), np.float32), np.zeros((n, k), np.int64)
    kk = min(k + 1, m)
    v, i = torch.topk(t, kk, dim=1, sorted=True)
    vals = v.float().cpu().numpy()
    ids = i.cpu().numpy().astype(np.int64, copy=False)
    if kk > k:
        tie = np.flatnonzero(vals[:, k] == vals[:, k - 1])
        vals, ids = vals[:, :k].copy(), ids[:, :k].copy()
        if tie.size:
            vals[tie], ids[tie] = _reselect(t[torch.from_numpy(tie).to(t.device)], vals[tie, k - 1], k)
    return order_rows(vals, ids)


def _reselect(rows: Any, kth: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows with equal scores at the cut: everything above the k-th value, then the lowest ids equal to it."""
    import torch

    r = rows.float().cpu()
    kv = torch.from_numpy(kth.astype(np.float32))[:, None]
    gt, eq = r > kv, r == kv
    need = k - gt.sum(1, keepdim=True)
    take = gt | (eq & (torch.cumsum(eq.to(torch.int32), 1) <= need))
    nz = torch.nonzero(take)  # row-major, so each row's ids come out ascending
    ids = nz[:, 1].reshape(r.shape[0], k)
    return torch.gather(r, 1, ids).numpy(), ids.numpy().astype(np.int64)

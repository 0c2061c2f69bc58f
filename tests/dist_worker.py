"""Run under torchrun by tests/test_distributed.py: sharded kNN, ordered gathers, sharded encoding.

Rank 0 writes what every rank computed to ``sys.argv[1]`` (npz); the test compares it with one process.
"""

from __future__ import annotations

import sys

import numpy as np

from lever_plugins import distributed as dist
from lever_plugins.config import SoftLabelConfig
from lever_plugins.soft_labels import build_soft_labels
from lever_plugins.soft_labels.knn import knn_search


def soft_problem() -> tuple:
    """Shared with the test: a small soft-label problem whose kNN needs several rounds of chunks."""
    rng = np.random.default_rng(1)
    y = (rng.random((60, 30)) < 0.05).astype(np.float32)
    lbl = rng.standard_normal((30, 5)).astype(np.float32)
    doc = (y @ lbl + 0.3 * rng.standard_normal((60, 5))).astype(np.float32)
    return y, doc, lbl, SoftLabelConfig(tau_l=4, tau_d=4, k=8, threshold=0.7, chunk_size=7)


def main(out: str) -> None:
    with dist.process_group():
        rng = np.random.default_rng(0)  # the same inputs on every rank
        q = rng.standard_normal((53, 8)).astype(np.float32)
        b = rng.standard_normal((40, 8)).astype(np.float32)
        # 53 queries in chunks of 10: 6 chunks, 3 rounds on 2 ranks; the last chunk has 3 rows.
        sc, ids = knn_search(q, b, 7, chunk_size=10, distributed=True)
        me, world = dist.rank(), dist.world_size()
        # uneven slices: rank r contributes r + 2 rows of value r
        uneven = dist.gather_rows(np.full((me + 2, 3), me, dtype=np.int64))
        # each rank encodes its slice of 11 items; the gather is in item order
        enc = dist.encode_sharded(lambda part: np.array([[x * 10.0, me] for x in part]), list(range(11)))
        ranks_seen = np.array(dist.gather_rows(np.array([[me]])).ravel())
        y, doc, lbl, cfg = soft_problem()
        soft = build_soft_labels(y, doc, lbl, cfg, distributed=True).soft.toarray()
        if dist.is_main():
            np.savez(out, scores=sc, ids=ids, uneven=uneven, enc=enc, world=world, ranks=ranks_seen,
                     backend=dist.backend(), soft=soft)


if __name__ == "__main__":
    main(sys.argv[1])

"""The label tree CascadeXML's dataset loads (``--cluster_name``), built and written by the adapter.

CascadeXML reads a pickled ``tree.build_tree.__dict__`` whose ``hash_map_array[d].clusters`` lists, for
depth ``d``, one array of label ids per cluster, and whose ``b_factors`` has one entry per depth (its
dataset then uses every depth when ``len(--topk) == len(b_factors)``). Clusters at depth ``d + 1``
must nest inside those at depth ``d``, every coarse cluster must have the same number of children
(the model ``np.stack``s them) and every leaf cluster at least one label.

Balanced spherical 2-means, applied to every cluster at once until a depth has ``2**b`` clusters,
gives exactly that. The features are the same for both arms (label text plus the centroid of the
label's ORIGINAL training documents, TF-IDF), so base and +LEVER differ only in their targets.
The entries are ``types.SimpleNamespace`` objects: they unpickle without the upstream's classes.
"""

from __future__ import annotations

import math
import pickle
import types
from pathlib import Path

import numpy as np

from lever_plugins.errors import ConfigError
from lever_plugins.runs import atomic_write

# Runner.test keeps the top 20 leaf candidates of every test row; Runner.predict takes the top 5 at every level.
PRED_WIDTH = 20
TOP_K = 5


def leaf_sizes(num_labels: int, b_last: int) -> list[int]:
    """Leaf cluster sizes of the balanced tree (each split halves a cluster, the first half the larger)."""
    sizes = [num_labels]
    while len(sizes) < 2**b_last:
        sizes = [s for n in sizes for s in ((n + 1) // 2, n // 2)]
    return sizes


def default_shape(num_labels: int, levels: int = 3) -> tuple[list[int], list[int]]:
    """(tree_depth, topk) for ``levels`` model levels (2 or 3 cluster levels + the labels): leaf
    clusters of about 8 labels, coarse levels 3 halvings apart, shortlists as wide as allowed up to 64/128/256."""
    b_last = min(max(round(math.log2(max(num_labels / 8, 1))), levels + 1), int(math.log2(num_labels)))
    depth = [max(b_last - 3 * (levels - 2 - i), 3 + i) for i in range(levels - 1)]
    topk: list[int] = []
    width = 2 ** depth[0]
    for i, cap in enumerate((64, 128, 256)[: levels - 1]):
        k = min(width, cap)
        if i == levels - 2:  # the leaf level needs >= PRED_WIDTH real candidates
            k = min(width, max(k, _needed(num_labels, depth[-1])))
        topk.append(k)
        if i + 1 < len(depth):
            width = k * 2 ** (depth[i + 1] - depth[i])
    return depth, topk


def _needed(num_labels: int, b_last: int) -> int:
    sizes = sorted(leaf_sizes(num_labels, b_last))
    total = 0
    for k, s in enumerate(sizes, 1):
        total += s
        if total >= PRED_WIDTH:
            return k
    return len(sizes)


def check_shape(num_labels: int, depth: list[int], topk: list[int]) -> None:
    """Refuse a tree/shortlist shape the upstream would crash on, before anything is written."""
    where = "[trainer] options tree_depth / topk"
    if len(topk) not in (2, 3) or len(depth) != len(topk):
        raise ConfigError(
            f"CascadeXML needs 2 or 3 cluster levels with one topk each, got tree_depth={depth}, topk={topk}",
            where=where,
            fix="e.g. tree_depth = [3, 6], topk = [8, 32] (the model has 3 or 4 levels, labels included)",
        )
    if depth[0] < 3 or any(b <= a for a, b in zip(depth, depth[1:], strict=False)):
        raise ConfigError(
            f"tree_depth must increase from >= 3 (>= 8 top clusters: the upstream takes the top 5), got {depth}",
            where=where,
            fix="use increasing log2 cluster counts, e.g. [3, 6]",
        )
    if 2 ** depth[-1] > num_labels:
        raise ConfigError(
            f"tree_depth {depth[-1]} gives {2 ** depth[-1]} leaf clusters for {num_labels} labels "
            "(some would be empty)",
            where=where,
            fix=f"use a last tree_depth <= {int(math.log2(num_labels))}",
        )
    width = 2 ** depth[0]
    for i, k in enumerate(topk):
        if not TOP_K <= k <= width:
            raise ConfigError(
                f"topk[{i}] = {k} must lie in [{TOP_K}, {width}] (the candidates of level {i})",
                where=where,
                fix=f"use topk[{i}] <= {width}",
            )
        if i + 1 < len(depth):
            width = k * 2 ** (depth[i + 1] - depth[i])
    need = _needed(num_labels, depth[-1])
    if topk[-1] < need:
        raise ConfigError(
            f"topk[-1] = {topk[-1]} leaf clusters may hold fewer than {PRED_WIDTH} labels "
            "(the upstream's test loop keeps the top 20)",
            where=where,
            fix=f"use topk[-1] >= {need}",
        )


def _normalize(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(n, 1e-12)


def _split(x: np.ndarray, idx: np.ndarray, rng: np.random.Generator, iters: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Two halves of ``idx`` (sizes ceil/floor) by balanced spherical 2-means on rows ``x[idx]``."""
    f = x[idx]
    half = (len(idx) + 1) // 2
    seeds = rng.choice(len(idx), size=2, replace=False)
    cent = f[seeds]
    best = -np.inf
    order = np.arange(len(idx))
    for _ in range(iters):
        sim = f @ cent.T
        order = np.argsort(sim[:, 1] - sim[:, 0], kind="stable")
        a, b = order[:half], order[half:]
        score = sim[a, 0].sum() + sim[b, 1].sum()
        if score <= best + 1e-6:
            break
        best = score
        cent = _normalize(np.vstack([f[a].mean(axis=0), f[b].mean(axis=0)]))
    return np.sort(idx[order[:half]]), np.sort(idx[order[half:]])


def build_tree(features: np.ndarray, depth: list[int], seed: int) -> list[list[np.ndarray]]:
    """Per depth, the clusters (arrays of label ids) of a balanced hierarchical 2-means tree."""
    x = _normalize(np.asarray(features, dtype=np.float64))
    rng = np.random.default_rng(seed)
    clusters = [np.arange(x.shape[0])]
    out = []
    for b in depth:
        while len(clusters) < 2**b:
            clusters = [h for c in clusters for h in _split(x, c, rng)]
        out.append([c.astype(np.int64) for c in clusters])
    return out


def write_tree(path: Path, levels: list[list[np.ndarray]], depth: list[int], num_labels: int) -> None:
    """Pickle the tree as the ``__dict__`` CascadeXML's ``build_tree.load`` assigns."""
    state = {
        "b_factors": list(depth),
        "C": [max(len(c) for c in lv) for lv in levels],
        "leaf_size": num_labels,
        "force_shallow": True,
        "height": 2,
        "num_labels": num_labels,
        "hash_map_array": [
            types.SimpleNamespace(
                clusters=lv, padding_idx=None, total_elements=len(lv), size=len(lv), weights=None,
                hash_map=np.arange(len(lv)),
            )  # fmt: skip
            for lv in levels
        ],
    }
    with atomic_write(path, "wb") as fh:
        pickle.dump(state, fh, protocol=4)

"""Where P@k comes from: contributions of label-frequency bins (tail first), and their bar plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from lever_plugins.errors import ConfigError, DataError
from lever_plugins.metrics.propensity import binarise
from lever_plugins.metrics.ranking import _lookup, topk_labels
from lever_plugins.runs import atomic_path


def label_bins(train_freq: np.ndarray, bins: int = 10, mode: str = "labels") -> np.ndarray:
    """Bin id (0 = rarest) of every label, labels ordered by train frequency (ties: lower id first).

    ``labels``: equal label counts per bin. ``mass``: equal positive mass; a label goes to the bin
    holding the midpoint of its mass, so a single very frequent label can leave a bin empty.
    """
    if bins < 1:
        raise ConfigError(f"bins must be >= 1, got {bins}", where="bins", fix="e.g. bins = 10")
    L = len(train_freq)
    order = np.argsort(train_freq, kind="stable")
    out = np.empty(L, dtype=np.int64)
    if mode == "labels":
        out[order] = np.arange(L) * bins // max(L, 1)
    elif mode == "mass":
        f = train_freq[order].astype(np.float64)
        total = f.sum()
        if total <= 0:
            raise DataError("train label matrix has no positives", where="train labels",
                            fix="pass the original train matrix")
        mid = np.cumsum(f) - f / 2
        out[order] = np.minimum((mid / total * bins).astype(np.int64), bins - 1)
    else:
        raise ConfigError(f"unknown decile mode {mode!r}", where="mode", fix='use "labels" or "mass"')
    return out


def decile_contributions(scores: sp.spmatrix, truth: sp.spmatrix, train_truth: sp.spmatrix, k: int = 5,
                         bins: int = 10, mode: str = "labels",
                         filter_pairs: np.ndarray | None = None) -> dict[str, Any]:
    """Split labels into ``bins`` train-frequency bins (tail first); each bin's share of P@k.

    contribution[b] = hits in the top-k on bin b's labels / (n k), so the contributions sum to P@k.
    Returns JSON-ready lists: ``edges`` ([min, max] train frequency per bin, None when empty),
    ``label_count``, ``train_mass`` (sum of train frequencies), ``test_positives``, ``contribution``,
    and the total ``P@k``.
    """
    y = binarise(truth, where="truth")
    ytr = binarise(train_truth, where="train labels")
    if ytr.shape[1] != y.shape[1]:
        raise DataError(f"train has {ytr.shape[1]} labels, test {y.shape[1]}", where="train labels",
                        fix="use the train matrix of the same data set")
    if not sp.issparse(scores) or scores.shape != y.shape:
        raise DataError(f"scores and truth {y.shape} differ in shape", where="scores",
                        fix="predict for every test row over the full label set")
    freq = np.asarray(ytr.sum(axis=0)).ravel()
    bin_of = label_bins(freq, bins, mode)
    top = topk_labels(scores, k, filter_pairs)
    hits = _lookup(y, top)
    n = y.shape[0]
    hit_bins = np.bincount(bin_of[top[hits]], minlength=bins)
    contribution = hit_bins / (n * k) if n else np.zeros(bins)
    edges: list[list[int] | None] = []
    for b in range(bins):
        fb = freq[bin_of == b]
        edges.append([int(fb.min()), int(fb.max())] if len(fb) else None)
    return {
        "k": k,
        "bins": bins,
        "mode": mode,
        "n": n,
        "edges": edges,
        "label_count": np.bincount(bin_of, minlength=bins).tolist(),
        "train_mass": np.bincount(bin_of, weights=freq, minlength=bins).astype(int).tolist(),
        "test_positives": np.bincount(bin_of[y.indices], minlength=bins).tolist(),
        "contribution": [float(c) for c in contribution],
        f"P@{k}": float(contribution.sum()),
    }


def plot_deciles(results: dict[str, dict[str, Any]], path: str | Path, title: str = "",
                 formats: tuple[str, ...] = ("png",)) -> Path:
    """Grouped bars (one group per bin, one bar per run) of each bin's contribution to P@k.

    ``results``: run name -> ``decile_contributions`` output; all must share bins, mode and k.
    Written atomically as ``path`` with each suffix of ``formats`` (png, pdf, svg); returns ``path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not results:
        raise ConfigError("no decile results to plot", where="plot_deciles", fix="pass {run name: result}")
    first = next(iter(results.values()))
    for name, r in results.items():
        if (r["bins"], r["mode"], r["k"]) != (first["bins"], first["mode"], first["k"]):
            raise ConfigError(f"run {name!r} has different bins/mode/k", where="plot_deciles",
                              fix="compute every run's deciles with the same settings")
    bins, k = first["bins"], first["k"]
    x = np.arange(bins)
    width = 0.8 / len(results)
    fig = Figure(figsize=(max(6.0, 0.9 * bins), 4.0))
    FigureCanvasAgg(fig)  # Agg canvas without pyplot: no global state, no display needed
    ax = fig.add_subplot()
    for i, (name, r) in enumerate(results.items()):
        ax.bar(x + (i - (len(results) - 1) / 2) * width, 100 * np.asarray(r["contribution"]), width,
               label=f"{name} (P@{k} {100 * r[f'P@{k}']:.2f})")
    ticks = [f"{e[0]}-{e[1]}\n({c})" if e else "empty" for e, c in zip(first["edges"], first["label_count"],
                                                                      strict=True)]
    ax.set_xticks(x, ticks, fontsize=7)
    ax.set_xlabel(f"train frequency range (labels per bin), {first['mode']} bins, tail first")
    ax.set_ylabel(f"contribution to P@{k} (%)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    import matplotlib

    # SVG and PDF keep their text as text (editable, searchable in a paper's figure), no creation date
    with matplotlib.rc_context({"svg.fonttype": "none", "pdf.fonttype": 42, "svg.hashsalt": "lever"}):
        for fmt in formats:
            with atomic_path(path.with_suffix(f".{fmt}")) as tmp:
                meta = {"Date": None} if fmt == "svg" else {"CreationDate": None} if fmt == "pdf" else None
                fig.savefig(tmp, format=fmt, dpi=120, metadata=meta)
    return path

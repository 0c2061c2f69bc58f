"""A/B comparison of two runs on the same test set: paired bootstrap confidence intervals."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from lever_plugins.errors import ConfigError
from lever_plugins.metrics.ranking import RankedEval, _as_ks, _resolve_ps

DEFAULT_METRICS = ("P@1", "P@3", "P@5", "PSP@1", "PSP@3", "PSP@5", "C@5", "macroF1@5")


def bootstrap_weights(n: int, seed: int, replicates: Sequence[int]) -> np.ndarray:
    """(len(replicates), n) row multiplicities, one Multinomial(n, 1/n) draw per replicate.

    Replicate i is drawn from its own stream (SeedSequence(seed).spawn), so a replicate does not
    depend on how replicates are batched and a test can regenerate any single one.
    """
    children = np.random.SeedSequence(seed).spawn(max(replicates) + 1 if len(replicates) else 0)
    out = np.empty((len(replicates), n), dtype=np.float64)
    for j, i in enumerate(replicates):
        # n uniform row draws counted per row = one multinomial sample, faster than rng.multinomial
        out[j] = np.bincount(np.random.default_rng(children[i]).integers(0, n, n), minlength=n)
    return out


def paired_bootstrap(scores_a: sp.spmatrix, scores_b: sp.spmatrix, truth: sp.spmatrix,
                     train_truth: sp.spmatrix | None,
                     metrics: Sequence[str] = DEFAULT_METRICS, n_boot: int = 1000,
                     confidence: float = 0.95, seed: int = 0, filter_pairs: np.ndarray | None = None,
                     A: float | None = None, B: float | None = None, name: str = "",
                     return_replicates: bool = False) -> dict[str, dict[str, Any]]:
    """Paired bootstrap of run B against run A: {metric: {"a", "b", "delta", "lo", "hi"}}.

    Test rows are resampled with replacement; both runs see the SAME resample in each replicate,
    so row difficulty cancels. ``delta`` = b - a on the full test set; [lo, hi] is the percentile
    interval of the replicate deltas at ``confidence``, shifted by ``bias`` = mean(replicate deltas)
    - delta so that it is centred on ``delta`` (for means such as P@k the shift is ~0; coverage and
    macro metrics are biased low on a resample, which holds only ~63% of the distinct rows).
    Ratio metrics (PSP, coverage, macro) are recomputed on each resample, not averaged per row.
    Values are fractions in [0, 1].
    With ``return_replicates`` each entry also holds the arrays ``a_boot`` and ``b_boot``.
    """
    if n_boot < 1:
        raise ConfigError(f"n_boot must be >= 1, got {n_boot}", where="eval.bootstrap", fix="e.g. 1000")
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence}", where="eval.confidence",
                          fix="e.g. 0.95")
    metrics = list(metrics)
    try:
        ks = _as_ks(int(m.partition("@")[2]) for m in metrics)
    except ValueError:
        raise ConfigError(f"metric names must look like 'P@5', got {metrics}", where="metrics",
                          fix="e.g. P@1, PSP@5, C@5, macroF1@5") from None
    inv_ps = _resolve_ps(train_truth, A, B, name)
    evs = [RankedEval(s, truth, ks, inv_ps, filter_pairs) for s in (scores_a, scores_b)]
    for m in metrics:
        evs[0].parse_key(m)  # unknown metric: one ConfigError before any work
    n = evs[0].n
    point = [ev.summarise_many(np.ones((1, n)), metrics) for ev in evs]
    # Replicates in blocks: each block is one dense (b x n) weight matrix; the label-side arrays
    # are (labels present x b), so the block shrinks for label-rich test sets.
    block = int(max(1, min(128, 4e7 // max(1, evs[0].n_truth_labels + n))))
    boot = {m: np.empty((2, n_boot)) for m in metrics}
    for start in range(0, n_boot, block):
        reps = range(start, min(n_boot, start + block))
        W = bootstrap_weights(n, seed, reps)
        for side, ev in enumerate(evs):
            vals = ev.summarise_many(W, metrics)
            for m in metrics:
                boot[m][side, reps.start:reps.stop] = vals[m]
    alpha = (1 - confidence) / 2
    out: dict[str, dict[str, Any]] = {}
    for m in metrics:
        a, b = float(point[0][m][0]), float(point[1][m][0])
        deltas = boot[m][1] - boot[m][0]
        # Centred on the full-sample delta: set-based metrics (coverage, macro) are biased low on a
        # resample (it holds ~63% of distinct rows), so raw percentiles can miss the point delta.
        shift = float(deltas.mean()) - (b - a)
        lo, hi = np.quantile(deltas - shift, [alpha, 1 - alpha])
        out[m] = {"a": a, "b": b, "delta": b - a, "lo": float(lo), "hi": float(hi),
                  "bias": shift, "confidence": confidence, "n_boot": n_boot}
        if return_replicates:
            out[m]["a_boot"], out[m]["b_boot"] = boot[m][0].copy(), boot[m][1].copy()
    return out


def format_table(result: dict[str, dict[str, Any]], names: tuple[str, str] = ("base", "+LEVER")) -> str:
    """Markdown table: metric, both runs and the delta with its CI, in percent with 2 decimals."""
    conf = next(iter(result.values()), {}).get("confidence", 0.95)
    head = f"| metric | {names[0]} | {names[1]} | Δ [{100 * conf:g}% CI] |"
    lines = [head, "|---|---:|---:|---|"]
    for m, r in result.items():
        lines.append(f"| {m} | {100 * r['a']:.2f} | {100 * r['b']:.2f} | "
                     f"{100 * r['delta']:+.2f} [{100 * r['lo']:+.2f}, {100 * r['hi']:+.2f}] |")
    return "\n".join(lines) + "\n"

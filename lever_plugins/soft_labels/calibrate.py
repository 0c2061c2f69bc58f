"""Map teacher cosines to probabilities in [0, 1].

Difference from the official script (anirudhb11/LEVER ``create_teacher_distilled_dataset.py``): there
the sigmoid is applied to the ALREADY linear-mapped score s = (1 + cos)/2, as 1/(1 + exp(-a·s + b)),
and for labels to -s, so label scores DEcrease with similarity (a sign bug) and never exceed 0.5 for
a = 1, b = 0. Here the sigmoid takes the cosine itself, 1/(1 + exp(-(a·cos + c))), identically for
documents and labels: monotone increasing in cos whenever a > 0.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from lever_plugins.errors import ConfigError

METHODS = ("linear", "sigmoid")
# calibration = "auto" (the default). Small dense runs choose between AUTO_CANDIDATES on a train hold-out
# (auto_selects, stages.calibration_stage); above calibration_select_max the label count decides: dense
# targets on more than AUTO_LINEAR_MAX labels take the sharp sigmoid, everything else the linear map. Measured
# on train hold-outs (docs/distillation.md): linear wins on debtags (613 labels, full and 1,400-document
# slices); the sigmoid wins on WordNet at 17,157 labels (linear gives each of 17K columns 0.25-0.45 and the
# positives drown) and on WordNet label subsets of 750 and 2,000 labels. What decides is the teacher, not L:
# the rule is only the fallback for runs too large for the extra fits.
AUTO_LINEAR_MAX = 3000
AUTO_SIGMOID = (20.0, -14.0)
# the hold-out candidates: on debtags slices (a weak teacher, P@1 28 against the base's 65) either sigmoid
# costs 3-7 P@1; on WordNet subsets of 750-2,000 labels (a strong teacher) they gain 2-5 P@1, and which of
# the two steps (cos 0.7 or 0.6) is better differs from subset to subset (docs/distillation.md)
AUTO_CANDIDATES = (("linear", 1.0, 0.0), ("sigmoid", *AUTO_SIGMOID), ("sigmoid", 20.0, -12.0))
SELECT_HOLDOUT = 0.2


def candidate_name(method: str, a: float, c: float) -> str:
    """A hold-out candidate's name in stage names and the run header: "linear", "sigmoid" (AUTO_SIGMOID),
    or "sigmoid_a<a>_c<c>"."""
    if method == "linear":
        return "linear"
    return "sigmoid" if (a, c) == AUTO_SIGMOID else f"sigmoid_a{a:g}_c{c:g}"


def auto_selects(soft: Any, n_rows: int, n_labels: int, adapter: str = "builtin", finetune: bool = False) -> bool:
    """Whether ``calibration = "auto"`` is chosen on a train hold-out (one extra student fit per candidate)
    rather than by the label-count rule: dense targets, the built-in trainer on frozen features (an upstream
    trainer's or an encoder fine-tuning fit costs far more), and at most ``calibration_select_max`` training
    documents × labels, where those fits take seconds."""
    return (
        soft.calibration == "auto"
        and soft.mode == "dense"
        and adapter == "builtin"
        and not finetune
        and 0 < n_rows * n_labels <= soft.calibration_select_max
    )


def resolve(method: str, a: float, c: float, n_labels: int, dense: bool) -> tuple[str, float, float]:
    """(method, a, c) with ``"auto"`` made concrete for ``n_labels`` labels: linear for sparse soft labels
    and for dense targets on up to AUTO_LINEAR_MAX labels, σ(20·cos − 14) for dense targets above."""
    if method != "auto":
        return method, a, c
    if dense and n_labels > AUTO_LINEAR_MAX:
        return ("sigmoid", *AUTO_SIGMOID)
    return "linear", a, c


def resolved(soft: Any, n_labels: int, chosen: dict | None = None) -> Any:
    """A copy of the SoftLabelConfig ``soft`` with ``calibration = "auto"`` made concrete: ``chosen`` (the
    hold-out choice, {"method", "a", "c"}) when given, else :func:`resolve`'s rule."""
    if soft.calibration == "auto" and chosen is not None:
        method, a, c = chosen["method"], chosen["a"], chosen["c"]
    else:
        method, a, c = resolve(soft.calibration, soft.sigmoid_a, soft.sigmoid_c, n_labels, soft.mode == "dense")
    if method == soft.calibration:
        return soft
    return dataclasses.replace(soft, calibration=method, sigmoid_a=a, sigmoid_c=c)


def calibrate(cos: np.ndarray, method: str = "linear", a: float = 1.0, c: float = 0.0) -> np.ndarray:
    """Calibrated score of each cosine: ``linear`` (1 + cos)/2, ``sigmoid`` 1/(1 + exp(-(a·cos + c))).

    Returns float32 of the same shape. -inf (kNN padding) maps to -inf (linear) or 0 (sigmoid), below
    any usable threshold either way.
    """
    # Float rounding gives cosines of unit vectors a hair outside [-1, 1]; scores must stay probabilities.
    # -inf (padding for missing neighbours) is kept so that it stays below every threshold.
    x = np.asarray(cos, dtype=np.float32)
    x = np.where(np.isfinite(x), np.clip(x, -1.0, 1.0), x)
    if method == "linear":
        return ((1.0 + x) / 2.0).astype(np.float32, copy=False)
    if method == "sigmoid":
        if a <= 0:
            raise ConfigError(
                f"sigmoid_a = {a} must be > 0 (the score must grow with the cosine)",
                where="soft_labels.sigmoid_a",
            )
        z = np.float32(a) * x + np.float32(c)
        with np.errstate(over="ignore"):  # exp(+large) -> inf -> score 0, which is the right limit
            return (1.0 / (1.0 + np.exp(-z))).astype(np.float32, copy=False)
    raise ConfigError(f"calibration {method!r} is not one of {', '.join(METHODS)}", where="soft_labels.calibration")


def threshold_cosine(threshold: float, method: str = "linear", a: float = 1.0, c: float = 0.0) -> float:
    """The cosine at which :func:`calibrate` reaches ``threshold`` (its inverse): neighbours below it can
    never become soft labels. -1 for a threshold of 0 or below, above 1 for a threshold >= 1 (sigmoid)."""
    if method == "linear":
        return 2.0 * float(threshold) - 1.0
    if method == "sigmoid":
        if threshold <= 0.0:
            return -1.0
        if threshold >= 1.0:
            return 2.0
        return (float(np.log(threshold / (1.0 - threshold))) - c) / a
    raise ConfigError(f"calibration {method!r} is not one of {', '.join(METHODS)}", where="soft_labels.calibration")

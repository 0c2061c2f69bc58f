"""The adapter contract: what one arm's trainer receives (:class:`Arm`) and what it must be (:class:`Adapter`).

The pipeline builds one frozen :class:`Arm` per arm ("base", "lever") and calls
``adapter.train_predict(arm, config, loss)``; it never inspects an adapter's signature. What an adapter
can do is declared by its capability attributes, checked by :func:`lever_plugins.stages.preflight`
before any stage runs:

- ``needs_features``: the pipeline encodes texts with the ``[encoder]`` (else ``x_train``/``x_test``
  are zero-width: trainers that encode text themselves);
- ``takes_sparse``: it uses ``arm.x_sparse`` (``[encoder] tfidf = true`` is refused otherwise);
- ``supports_finetune``: it trains the encoder itself (``[trainer] finetune = true``);
- ``takes_loss_hook``: it calls the ``loss`` it is given (the ``lever_loss`` hook) in its training loss.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import scipy.sparse as sp

#: ``loss(logits, targets) -> scalar`` torch tensor: the ``lever_loss`` hook bound to the run's
#: TrainerConfig (a MEAN over the batch × candidates entries).
LossFn = Callable[[Any, Any], Any]


@dataclass(frozen=True, eq=False)
class Arm:
    """Everything one arm hands to a trainer. Row i < ``n_docs`` of ``targets`` is train document i; rows
    after it are label rows (label ``i - n_docs``'s text as a document)."""

    name: str  # "base" or "lever"
    workdir: Path  # the arm's own folder (OUT/<arm>): a trainer writes its files below it
    targets: sp.csr_matrix  # training targets: binary (base) or blended soft (+LEVER), rows × L
    support: sp.csr_matrix  # hard augmented matrix: ground truth and label rows at 1 (teacher pairs absent)
    y_train: sp.csr_matrix  # ORIGINAL binary train labels, N × L: propensity and validation come from it
    y_test: sp.csr_matrix
    trn_texts: list[str]  # one per target row
    tst_texts: list[str]
    lbl_texts: list[str]
    tst_filter: np.ndarray  # (row, label) pairs removed before metrics
    seed: int
    x_train: np.ndarray | None = None  # frozen-encoder features of the target rows (zero-width unless needs_features)
    x_test: np.ndarray | None = None
    x_sparse: tuple[sp.csr_matrix, sp.csr_matrix] | None = None  # TF-IDF (train rows, test rows) with tfidf
    dataset: str = ""  # the data set's name
    encoder: Any = None  # the run's EncoderConfig (trainers that fine-tune it)
    encoder_dir: Path | None = None  # where a fine-tuned encoder is saved (OUT/<arm>/encoder)
    upstream: Path | None = None  # the upstream checkout ([trainer] upstream), resolved; None when unset
    upstream_args: tuple[str, ...] | list[str] = ()  # extra arguments for the upstream entry point
    top_k: int = 100  # predictions to keep per test document
    # [soft_labels] mode = "dense": a lever_plugins.soft_labels.dense.DenseTargets giving the target of every
    # (row, label) pair on demand; trainers that cannot take it train on ``targets`` (its sparse top-k export)
    dense: Any = None

    @property
    def n_docs(self) -> int:
        return self.y_train.shape[0]

    @property
    def lever(self) -> bool:
        return self.name == "lever"


@runtime_checkable
class Adapter(Protocol):
    """A trainer for one arm. ``factory(**options)`` (``[trainer] options``) builds it."""

    name: str
    upstream: str  # where the trainer comes from (repository URL, PyPI name); "" for in-process code
    needs_features: bool
    takes_sparse: bool
    supports_finetune: bool
    takes_loss_hook: bool

    def preflight(self, config: Any) -> None:
        """Raise a LeverError (one line: what, where, fix) if the run cannot train; called before any stage
        with the run's TrainerConfig. Cheap: no training, no data."""

    def train_predict(self, arm: Arm, config: Any, loss: LossFn) -> tuple[sp.csr_matrix, dict[str, Any]]:
        """Train on ``arm`` and return its test scores (CSR, n_test × L, top ``config.top_k`` per row) and
        JSON-able stats. ``loss`` is the ``lever_loss`` hook bound to ``config``."""
        ...


__all__ = ["Adapter", "Arm", "LossFn"]

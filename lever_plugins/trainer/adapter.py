"""The built-in adapter: the embedded OvA trainer, no upstream code needed."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from lever_plugins.adapter import Arm, LossFn
from lever_plugins.errors import ConfigError


class BuiltinAdapter:
    """Adapter for the in-process OvA trainer of :mod:`lever_plugins.trainer.ova` (implements
    :class:`lever_plugins.adapter.Adapter`).

    It trains on the arm's encoder features (and TF-IDF with ``[encoder] tfidf``), takes its loss from the
    ``lever_loss`` hook, and with ``[trainer] finetune = true`` also trains the ``[encoder]``
    (:mod:`lever_plugins.trainer.finetune`).
    """

    name = "builtin"
    upstream = ""
    needs_features = True
    takes_sparse = True
    supports_finetune = True
    takes_loss_hook = True

    def __init__(self, progress: bool = True):
        self.progress = progress

    def preflight(self, config: Any) -> None:
        if config.upstream_args:
            raise ConfigError(
                f"adapter {self.name!r} takes no upstream arguments {list(config.upstream_args)}",
                where="[trainer] upstream_args",
                fix="drop them",
            )
        if config.solver == "lbfgs":
            from lever_plugins.trainer.lbfgs import check_config

            check_config(config, finetune=config.finetune)

    def train_predict(self, arm: Arm, config: Any, loss: LossFn) -> tuple[sp.csr_matrix, dict[str, Any]]:
        """:func:`lever_plugins.trainer.ova.train_predict` on ``arm.x_train`` (torch imported only here), or,
        with ``config.finetune``, :func:`lever_plugins.trainer.finetune.train_predict` on the arm's texts
        (``arm.x_train`` seeds the head; the fine-tuned encoder is saved to ``arm.encoder_dir``)."""
        if config.finetune:
            from lever_plugins.trainer import finetune

            return finetune.train_predict(
                (arm.trn_texts, arm.tst_texts), arm.targets, config, arm.encoder, seed=arm.seed, loss_fn=loss,
                progress=self.progress, x_sparse=arm.x_sparse, x_init=arm.x_train, encoder_dir=arm.encoder_dir,
                dense=arm.dense,
            )  # fmt: skip
        from lever_plugins.trainer import ova

        return ova.train_predict(
            np.asarray(arm.x_train), arm.targets, np.asarray(arm.x_test), config, seed=arm.seed, loss_fn=loss,
            progress=self.progress, x_sparse=arm.x_sparse, dense=arm.dense,
        )  # fmt: skip

"""The built-in adapter: the embedded OvA trainer, no upstream code needed."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import scipy.sparse as sp

from lever_plugins.errors import LeverError


class BuiltinAdapter:
    """Adapter for the in-process OvA trainer of :mod:`lever_plugins.trainer.ova`.

    Nothing to check and nothing to patch: it takes its loss from the ``lever_loss`` hook directly.
    With ``[trainer] finetune = true`` it also trains the ``[encoder]`` (:mod:`lever_plugins.trainer.finetune`).
    """

    name = "builtin"
    upstream = None
    supports_finetune = True  # the pipeline refuses finetune = true for adapters without this

    def check(self, upstream_dir: Any = None) -> list[str]:
        return []

    def patch(self, run: Any) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def launch(self, run: Any, argv: list[str]) -> None:
        raise LeverError(
            "the builtin adapter has no upstream entry point to launch",
            where="trainer.adapter = builtin",
            fix="it runs in-process: use `lever train` or `lever ab`",
        )

    def train_predict(
        self,
        x_train: np.ndarray,
        targets: sp.spmatrix,
        x_test: np.ndarray,
        config: Any,
        seed: int,
        loss_fn: Any = None,
        progress: bool = True,
        x_valid: np.ndarray | None = None,
        y_valid: sp.spmatrix | None = None,
        x_sparse: tuple[sp.spmatrix, sp.spmatrix] | None = None,
        texts: tuple[list[str], list[str]] | None = None,
        encoder: Any = None,
        encoder_dir: Any = None,
    ) -> tuple[sp.csr_matrix, dict[str, Any]]:
        """Delegates to :func:`lever_plugins.trainer.ova.train_predict` (torch imported only here), or, with
        ``config.finetune``, to :func:`lever_plugins.trainer.finetune.train_predict`, which needs ``texts``
        (training rows, test rows) and ``encoder`` (the ``[encoder]`` settings), saves the fine-tuned
        encoder to ``encoder_dir`` and uses ``x_train`` only to seed the head."""
        if getattr(config, "finetune", False):
            from lever_plugins.trainer import finetune

            return finetune.train_predict(
                texts, targets, config, encoder, seed=seed, loss_fn=loss_fn, progress=progress,
                x_sparse=x_sparse, x_init=x_train, encoder_dir=encoder_dir,
            )  # fmt: skip
        from lever_plugins.trainer import ova

        return ova.train_predict(
            x_train, targets, x_test, config, seed=seed, loss_fn=loss_fn, progress=progress,
            x_valid=x_valid, y_valid=y_valid, x_sparse=x_sparse,
        )  # fmt: skip

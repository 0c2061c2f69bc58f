"""The built-in soft-label provider "knn": faiss kNN in teacher space, calibration, τ_l/τ_d rules."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from lever_plugins.config import SoftLabelConfig
from lever_plugins.soft_labels.augment import SoftLabels, build_soft_labels


class KnnProvider:
    """Registered by the built-in plugin as provider "knn"; ``config`` is the run's SoftLabelConfig."""

    name = "knn"

    def __init__(self, config: SoftLabelConfig | None = None):
        self.config = config or SoftLabelConfig()

    def build(
        self,
        y_train: sp.spmatrix,
        doc_emb: np.ndarray | None,
        lbl_emb: np.ndarray,
        has_text: np.ndarray | None = None,
    ) -> SoftLabels:
        """Hard augmented (N+L)×L targets and the teacher's soft matrix (see ``build_soft_labels``)."""
        return build_soft_labels(y_train, doc_emb, lbl_emb, self.config, has_text=has_text)

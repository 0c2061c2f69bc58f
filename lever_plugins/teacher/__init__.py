"""Siamese teacher: shared text encoder, label-wise batches, clustered hard negatives, embedding cache.

Names resolve lazily so that importing this package (plugin listing, CLI start-up) never loads torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "SiameseTeacher": "lever_plugins.teacher.siamese",
    "triplet_ohnm_loss": "lever_plugins.teacher.siamese",
    "logistic_ohnm_loss": "lever_plugins.teacher.siamese",
    "Encoder": "lever_plugins.teacher.encoder",
    "embed_cached": "lever_plugins.teacher.encoder",
    "resolve_model": "lever_plugins.teacher.encoder",
    "balanced_clusters": "lever_plugins.teacher.clustering",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Built-in OvA trainer (``ova``) and its adapter. Nothing heavy is imported until first use."""

from __future__ import annotations

from typing import Any

__all__ = ["BuiltinAdapter", "OvAModel", "train", "train_predict"]


def __getattr__(name: str) -> Any:  # lazy: listing plugins must not pull in torch
    if name == "BuiltinAdapter":
        from lever_plugins.trainer.adapter import BuiltinAdapter

        return BuiltinAdapter
    if name in ("OvAModel", "train", "train_predict"):
        from lever_plugins.trainer import ova

        return getattr(ova, name)
    raise AttributeError(f"module 'lever_plugins.trainer' has no attribute {name!r}")

"""Training helpers shared by the Siamese teacher and the fine-tuning trainer: deterministic CPU kernels,
the warm-up/decay schedule and the atomic save of a Hugging Face model folder."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from lever_plugins.runs import atomic_dir, write_json


@contextlib.contextmanager
def deterministic(enabled: bool) -> Iterator[None]:
    """Deterministic kernels for the duration of training, restoring the caller's setting after.

    Used on CPU only: on CUDA the deterministic kernels cost throughput and need CUBLAS_WORKSPACE_CONFIG.
    """
    if not enabled:
        yield
        return
    import torch.utils.deterministic as tud

    was = torch.are_deterministic_algorithms_enabled()
    warn = torch.is_deterministic_algorithms_warn_only_enabled()
    fill = tud.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    # NaN-filling every torch.empty only helps find reads of uninitialised memory; it costs bandwidth.
    tud.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was, warn_only=warn)
        tud.fill_uninitialized_memory = fill


def save_model_dir(encoder: Any, dest: Path, meta: dict[str, Any], meta_name: str = "lever_teacher.json") -> None:
    """save_pretrained into a temp folder, then swap it in by rename (the old one is moved aside first)."""
    with atomic_dir(dest, replace=True) as tmp:
        encoder.model.save_pretrained(tmp)
        encoder.tokenizer.save_pretrained(tmp)
        write_json(tmp / meta_name, meta)


def linear_warmup_decay(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / (warmup + 1)  # never a zero learning rate on the first step
    return max(0.0, (total - step) / max(total - warmup, 1))

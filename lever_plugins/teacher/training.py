"""Training helpers shared by the Siamese teacher and the fine-tuning trainer: deterministic CPU kernels,
the warm-up/decay schedule and the atomic save of a Hugging Face model folder."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from lever_plugins.runs import write_json


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
    """save_pretrained into a temp folder beside ``dest``, then swap it in by rename."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    old: Path | None = None
    try:
        encoder.model.save_pretrained(tmp)
        encoder.tokenizer.save_pretrained(tmp)
        write_json(tmp / meta_name, meta)
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old-{time.time_ns()}")
            dest.rename(old)
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not dest.exists():
            old.rename(dest)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def linear_warmup_decay(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / (warmup + 1)  # never a zero learning rate on the first step
    return max(0.0, (total - step) / max(total - warmup, 1))

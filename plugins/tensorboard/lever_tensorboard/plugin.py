"""The ``lever_run_event`` observer that writes a run's events as TensorBoard scalars and texts.

One ``SummaryWriter`` per run folder, created on the run's first event (importing this module stays cheap:
torch and tensorboard load then), flushed after every event (events are few: per stage and per epoch)
and closed at exit. Tags: see README.md.
"""

from __future__ import annotations

import atexit
import math
import os
import re
from pathlib import Path
from typing import Any

from lever_plugins import hookimpl

ENV_DIR = "LEVER_TENSORBOARD_DIR"
SUBDIR = "tensorboard"

_writers: dict[Path, Any] = {}
_artifacts: dict[Path, int] = {}


def log_dir(run: Any) -> Path:
    """``<run folder>/tensorboard``, or ``$LEVER_TENSORBOARD_DIR/<run folder name>`` when that is set."""
    root = Path(run.root)
    base = os.environ.get(ENV_DIR)
    return Path(base) / root.resolve().name if base else root / SUBDIR


def tag(*parts: str) -> str:
    """A TensorBoard tag (letters, digits, ``-_./``): ``@`` becomes ``_at_``, anything else ``_``."""
    return re.sub(r"[^-/\w.]", "_", "/".join(p for p in parts if p).replace("@", "_at_"))


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _main_rank() -> bool:
    return os.environ.get("RANK", "0") == "0"


def writer(run: Any) -> Any:
    key = Path(run.root).resolve()
    w = _writers.get(key)
    if w is None:
        from torch.utils.tensorboard import SummaryWriter

        w = SummaryWriter(log_dir=str(log_dir(run)), flush_secs=30)
        _writers[key] = w
    return w


@atexit.register
def close_all() -> None:
    for w in _writers.values():
        w.close()
    _writers.clear()


@hookimpl
def lever_run_event(run, event, payload):
    if not _main_rank():
        return
    stage = str(payload.get("stage", ""))
    w = writer(run)
    if event == "epoch":
        for key in ("loss", "docs_per_s"):
            if _number(payload.get(key)):
                w.add_scalar(tag(stage, key), float(payload[key]), int(payload["epoch"]))
    elif event == "valid" and _number(payload.get("valid_p1")):
        w.add_scalar(tag(stage, "valid_p1"), float(payload["valid_p1"]), int(payload["epoch"]))
    elif event == "stage_end":
        seconds = 0.0 if payload.get("cached") else float(payload.get("seconds", 0.0))
        w.add_scalar(tag("stages", f"{stage}_seconds"), seconds, 0)
        if payload.get("cached"):
            w.add_text(tag("stages", stage), f"{stage}: cached (key {payload.get('key', '')})", 0)
    elif event == "metrics":
        arm = str(payload.get("arm", ""))
        for name, value in (payload.get("metrics") or {}).items():
            if _number(value):
                w.add_scalar(tag("metrics", arm, name), float(value), 0)
    elif event == "artifact":
        key = Path(run.root).resolve()
        step = _artifacts.get(key, 0)
        _artifacts[key] = step + 1
        w.add_text(tag("artifacts", stage), f"{payload.get('name', '')}: {payload.get('path', '')}", step)
    else:
        return
    w.flush()

"""Per-rank proof that the targets reaching an upstream's loss carry LEVER's soft values.

Off unless ``LEVER_PROBE_DIR`` is set in the environment of ``lever wrap`` / ``lever ab --adapter`` (it is
inherited by every launched upstream process and rank). Adapters install a probe on the loss's target
path only then (:func:`enabled`); each call of :func:`record` updates, atomically, one JSON per
(arm, adapter, process) in that folder::

    <arm>.<adapter>.rank<R>.<pid>.json
    {"arm", "adapter", "rank", "world_size", "pid", "device", "calls", "nonbinary_calls",
     "nonbinary_values", "max_target", "example"}

``nonbinary_values`` counts target entries strictly between 0 and 1 (a hard 0/1 target has none; a
blended λy + (1−λ)p target has them wherever a teacher pair was stored), ``example`` keeps up to five
of them. ``rank`` and ``world_size`` come from ``torch.distributed`` when a process group is
initialised, else from the launcher's ``RANK`` / ``WORLD_SIZE``. The test suite (and
``benchmarks/gpu_check.py``) read these files to check every rank, on the device the loss ran on.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

PROBE_ENV = "LEVER_PROBE_DIR"

_state: dict[tuple[str, str], dict[str, Any]] = {}


def enabled() -> bool:
    return bool(os.environ.get(PROBE_ENV))


def _rank_world() -> tuple[int, int]:
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return int(dist.get_rank()), int(dist.get_world_size())
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def record(adapter: str, targets: Any, where: str = "loss") -> None:
    """Count the soft (0 < t < 1) entries of one target tensor that reaches ``adapter``'s loss."""
    folder = os.environ.get(PROBE_ENV)
    if not folder:
        return
    import torch

    t = targets.detach()
    soft = (t > 0) & (t < 1)
    n_soft = int(soft.sum().item())
    arm = os.environ.get("LEVER_ARM", "run")
    st = _state.setdefault((arm, adapter), {
        "arm": arm, "adapter": adapter, "pid": os.getpid(), "calls": 0, "nonbinary_calls": 0,
        "nonbinary_values": 0, "max_target": 0.0, "example": [], "where": where,
    })  # fmt: skip
    rank, world = _rank_world()
    st.update(rank=rank, world_size=world, device=str(t.device))
    st["calls"] += 1
    st["nonbinary_calls"] += int(n_soft > 0)
    st["nonbinary_values"] += n_soft
    if t.numel():
        st["max_target"] = max(st["max_target"], float(t.max().item()))
    if n_soft and len(st["example"]) < 5:
        st["example"] += [round(float(v), 6) for v in t[soft].flatten()[: 5 - len(st["example"])].to(torch.float32)]
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{arm}.{adapter}.rank{rank}.{os.getpid()}.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(st), encoding="utf-8")
    os.replace(tmp, path)


def read(folder: str | Path) -> list[dict[str, Any]]:
    """Every probe record in ``folder`` (sorted by arm, adapter, rank)."""
    recs = [json.loads(p.read_text(encoding="utf-8")) for p in Path(folder).glob("*.json")]
    return sorted(recs, key=lambda r: (r["arm"], r["adapter"], r["rank"], r["pid"]))

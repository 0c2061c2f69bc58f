"""``lever teach --nproc K`` and ``torchrun --nproc-per-node K -m lever_cli teach``: the teacher stage on K
processes (DDP, NCCL on GPUs, gloo on CPU). Rank 0 owns the run directory (lock, manifest, artefacts)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lever_plugins import distributed as dist
from lever_plugins.errors import LeverError


def teach(cfg: Any, out: str, nproc: int, relaunch_args: Sequence[str], log: Callable[[str], Any]) -> None:
    """Train the teacher (cached by config hash in ``out``); ``nproc`` > 1 relaunches under torchrun."""
    from lever_plugins.runs import Run
    from lever_plugins.stages import data_signature, load_data, teacher_stage

    if nproc > 1 and not dist.launched():
        log(f"launching {nproc} processes: {' '.join(dist.torchrun_command(nproc, ['teach', *relaunch_args]))}")
        rc = dist.launch(nproc, ["teach", *relaunch_args])
        if rc != 0:
            sys.exit(rc)
        return
    with dist.process_group():
        main = dist.is_main()
        ds = load_data(cfg)
        run = Run(out)
        problem = None
        if main:
            try:
                run.lock()
            except LeverError as exc:
                problem = exc
        # Every rank stops on rank 0's lock error instead of waiting for it in a collective.
        line = dist.broadcast_object(problem.line() if problem else None)
        if problem is not None:
            raise problem
        if line is not None:
            raise LeverError(line)
        try:
            teacher_stage(run, ds, cfg, data_signature(ds), log=log if main else None)
        finally:
            if main:
                run.unlock()
        if main and dist.world_size() > 1:
            log(f"teacher trained on {dist.world_size()} processes ({dist.backend()}) -> {Path(out) / 'teacher'}")


def relaunch_args(data: str | None, out: str, config: str | None, seed: int | None) -> list[str]:
    """The ``teach`` options to hand to each torchrun process (everything but ``--nproc``)."""
    args = ["--out", str(out)]
    for flag, value in (("--data", data), ("--config", config), ("--seed", seed)):
        if value is not None:
            args += [flag, str(value)]
    return args

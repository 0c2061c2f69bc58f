"""Multi-process ELIAS (``[trainer.options] processes = K``) and the per-rank loss probe.

ELIAS's ``train.py`` builds an ``accelerate.Accelerator`` at import and wraps net, optimisers and the
train loader with ``accelerator.prepare``; run under ``accelerate launch`` it trains data-parallel
(NCCL on GPUs, gloo on the CPU with ``ACCELERATE_USE_CPU=1``). The adapter launches it that way
(:class:`lever_plugins.wrap.LaunchSpec` ``processes``/``launcher``) and every rank starts through
``lever_plugins.wrap.run``, so every rank has the patches of :mod:`lever_elias.patches`: each rank's
loader slice carries the blended values and the hard support, each rank's loss is the LEVER loss.

- :func:`ddp_find_unused` — ``accelerate:Accelerator.__init__``: DDP with ``find_unused_parameters=True``
  unless the caller passed DDP kwargs, as LEVER's own ELIAS branch (ELIAS PR #1) does in ``train.py``
  for its multi-GPU runs (ELIAS's shortlist path leaves some parameters without a gradient in a step).
- :func:`probe_criterion` — ``losses:ELIASLoss.__init__``: a forward pre-hook on the loss's BCE
  ``criterion`` hands every target tensor that reaches it to :func:`lever_plugins.wrap.probe.record`
  (only when ``LEVER_PROBE_DIR`` is set).
"""

from __future__ import annotations

import functools
from typing import Any


def ddp_find_unused(original: Any) -> Any:
    @functools.wraps(original)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        from accelerate.utils import DistributedDataParallelKwargs

        handlers = list(kwargs.get("kwargs_handlers") or [])
        if not any(isinstance(h, DistributedDataParallelKwargs) for h in handlers):
            kwargs["kwargs_handlers"] = [*handlers, DistributedDataParallelKwargs(find_unused_parameters=True)]
        original(self, *args, **kwargs)

    return __init__


def probe_criterion(original: Any) -> Any:
    @functools.wraps(original)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        from lever_plugins.wrap import probe

        self.criterion.register_forward_pre_hook(lambda _mod, inputs: probe.record("elias", inputs[1]))

    return __init__

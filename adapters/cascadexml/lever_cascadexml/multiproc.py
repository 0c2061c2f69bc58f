"""Multi-process CascadeXML (``[trainer.options] processes = K``) and the per-rank loss probe.

CascadeXML's own DDP path: ``main.py --distributed`` started by torchrun joins the process group
(``init_process_group("nccl")``), shards the train set with a ``DistributedSampler``, and
``Runner.train`` wraps the model in ``DistributedDataParallel(device_ids=[local_rank])``; rank 0 tests.
The adapter launches it that way (:class:`lever_plugins.wrap.LaunchSpec` ``processes``/``launcher``),
every rank through ``lever_plugins.wrap.run``, so every rank has the adapter's patches: each rank's
dataset yields the soft leaf targets, each rank's forward computes the LEVER leaf term.

On a machine without CUDA (CI, a CPU test) the path is kept and moved to the CPU with gloo:

- :func:`gloo_without_cuda` — ``torch.distributed:init_process_group``: NCCL becomes gloo;
- :func:`set_device_without_cuda` — ``torch.cuda:set_device``: a no-op (``Runner.train`` pins the rank);
- :func:`ddp_without_cuda` — ``torch.nn.parallel:DistributedDataParallel.__init__``: no ``device_ids`` /
  ``output_device`` for a CPU module (DDP refuses them there);
- ``Runner:Runner.fit_one_epoch`` gets its ``cuda:<rank>`` device mapped to the CPU
  (:func:`lever_cascadexml.shims.cpu_device_arg`).

With CUDA each wrapper calls straight through. Probe (only with ``LEVER_PROBE_DIR``,
:mod:`lever_plugins.wrap.probe`): :func:`probe_loss_fn` records the labels of every call of the model's
``loss_fn`` (the upstream's BCE: coarse levels, and the leaf without LEVER), :func:`probe_soft_target`
the blended leaf target the LEVER leaf term is computed against.
"""

from __future__ import annotations

import functools
from typing import Any


def _no_cuda() -> bool:
    import torch

    return not torch.cuda.is_available()


def gloo_without_cuda(original: Any) -> Any:
    @functools.wraps(original)
    def init_process_group(backend: Any = None, *args: Any, **kwargs: Any) -> Any:
        if _no_cuda() and str(backend).lower() == "nccl":
            backend = "gloo"
        return original(backend, *args, **kwargs)

    return init_process_group


def set_device_without_cuda(original: Any) -> Any:
    @functools.wraps(original)
    def set_device(device: Any) -> None:
        if _no_cuda():
            return None
        return original(device)

    return set_device


def ddp_without_cuda(original: Any) -> Any:
    @functools.wraps(original)
    def __init__(self, module: Any, *args: Any, **kwargs: Any) -> None:
        if _no_cuda():
            kwargs.pop("device_ids", None)
            kwargs.pop("output_device", None)
            args = ()  # device_ids, output_device are the first positional ones
        original(self, module, *args, **kwargs)

    return __init__


def probe_loss_fn(original: Any) -> Any:
    @functools.wraps(original)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        from lever_plugins.wrap import probe

        self.loss_fn.register_forward_pre_hook(lambda _mod, inputs: probe.record("cascadexml", inputs[1]))

    return __init__


def probe_soft_target(original: Any) -> Any:
    @functools.wraps(original)
    def soft_target(*args: Any, **kwargs: Any) -> Any:
        from lever_plugins.wrap import probe

        out = original(*args, **kwargs)
        probe.record("cascadexml", out, where="leaf")
        return out

    return soft_target

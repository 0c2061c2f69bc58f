"""Multi-process helpers on ``torch.distributed``: process group, sharding, ordered gathers, torchrun launch.

Processes are started by ``torchrun`` (``torch.distributed.run``), which sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` and the rendezvous address; :func:`process_group` joins them with NCCL when CUDA is present
and gloo otherwise. Everything here is a no-op in a single process, so library code calls these helpers
unconditionally: ``world_size() == 1`` takes the plain single-process path.

Sharding is contiguous and deterministic: rank r of K owns rows ``shard_bounds(n, K)[r]`` (the first
``n % K`` ranks hold one row more). :func:`gather_rows` concatenates the per-rank slices in rank order, so
the gathered array equals what one process would have produced.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from lever_plugins.errors import ConfigError

LAUNCH_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def launched() -> bool:
    """True when this process was started by torchrun with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def _dist() -> Any:
    import torch.distributed as dist

    return dist


def active() -> bool:
    """A process group with more than one process is initialised."""
    if "torch" not in sys.modules:  # never import torch just to answer "no"
        return False
    dist = _dist()
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return _dist().get_rank() if active() else 0


def world_size() -> int:
    return _dist().get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def backend() -> str:
    """"nccl" when every local rank can have its own GPU, "gloo" otherwise (CPU)."""
    import torch

    local = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return "nccl" if gpus >= local and gpus > 0 and _dist().is_nccl_available() else "gloo"


@contextlib.contextmanager
def process_group(backend_name: str | None = None) -> Iterator[None]:
    """Join the torchrun process group for the duration of the block (no-op without torchrun).

    NCCL ranks are pinned to ``cuda:LOCAL_RANK`` first, so every later ``torch.device("cuda")`` is that GPU.
    """
    if not launched() or active():
        yield
        return
    import torch

    dist = _dist()
    name = backend_name or backend()
    if name == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=name)
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


def barrier() -> None:
    if active():
        _dist().barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` from rank ``src`` on every rank (pickled; for small control data: clusters, flags, RNG states)."""
    if not active():
        return obj
    box = [obj if rank() == src else None]
    _dist().broadcast_object_list(box, src=src)
    return box[0]


def shard_bounds(n: int, world: int | None = None) -> list[tuple[int, int]]:
    """Contiguous [lo, hi) row ranges of ``n`` rows over ``world`` ranks (sizes differ by at most one)."""
    world = world_size() if world is None else world
    sizes = np.full(world, n // world, dtype=np.int64)
    sizes[: n % world] += 1
    ends = np.cumsum(sizes)
    return [(int(e - s), int(e)) for s, e in zip(sizes, ends, strict=True)]


def my_shard(n: int) -> tuple[int, int]:
    return shard_bounds(n)[rank()]


def _device_for_collectives() -> Any:
    import torch

    return torch.device("cuda", torch.cuda.current_device()) if backend() == "nccl" else torch.device("cpu")


def gather_rows(local: np.ndarray, n_total: int | None = None) -> np.ndarray:
    """All ranks' row blocks of a numpy array, concatenated in rank order, on every rank.

    ``local`` is this rank's slice (any number of rows, same trailing shape and dtype on every rank). Rows
    are padded to the largest slice for one ``all_gather`` and the padding is dropped afterwards.
    """
    if not active():
        return local
    import torch

    dist = _dist()
    dev = _device_for_collectives()
    counts = torch.tensor([local.shape[0]], dtype=torch.int64, device=dev)
    all_counts = [torch.zeros_like(counts) for _ in range(world_size())]
    dist.all_gather(all_counts, counts)
    sizes = [int(c.item()) for c in all_counts]
    pad = max(sizes)
    buf = np.zeros((pad, *local.shape[1:]), dtype=local.dtype)
    buf[: local.shape[0]] = local
    t = torch.from_numpy(buf).to(dev)
    parts = [torch.empty_like(t) for _ in sizes]
    dist.all_gather(parts, t)
    out = np.concatenate([p[:s].cpu().numpy() for p, s in zip(parts, sizes, strict=True)], axis=0)
    if n_total is not None and out.shape[0] != n_total:
        raise RuntimeError(f"gathered {out.shape[0]} rows, expected {n_total}")
    return out


def _gather_autograd() -> Any:
    import torch

    class _GatherPadded(torch.autograd.Function):
        """all_gather of equally sized (padded) blocks with a gradient: backward sums every rank's
        gradient of the gathered tensor (all_reduce) and returns this rank's block."""

        @staticmethod
        def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
            parts = [torch.empty_like(x) for _ in range(world_size())]
            _dist().all_gather(parts, x.contiguous())
            ctx.rows = x.shape[0]
            return torch.cat(parts, dim=0)

        @staticmethod
        def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
            grad = grad.contiguous()
            _dist().all_reduce(grad)
            r = rank()
            return grad[r * ctx.rows : (r + 1) * ctx.rows]

    return _GatherPadded


def gather_tensor_rows(x: Any, sizes: Sequence[int]) -> Any:
    """Differentiable gather: ``x`` is this rank's block padded to ``max(sizes)`` rows; returns the real
    rows of every rank in rank order. Used by the DDP teacher so that in-batch negatives span the whole
    global batch; gradients flow back to the rank that computed each row."""
    import torch

    full = _gather_autograd().apply(x)
    pad = x.shape[0]
    keep = torch.cat([torch.arange(r * pad, r * pad + s) for r, s in enumerate(sizes)]).to(full.device)
    return full.index_select(0, keep)


def encode_sharded(encode: Callable[[Sequence[Any]], np.ndarray], items: Sequence[Any]) -> np.ndarray:
    """``encode(items)`` with the rows split over the ranks: each encodes its contiguous slice, results are
    gathered in order (every rank gets all rows). One process: ``encode(items)``."""
    if not active():
        return encode(items)
    lo, hi = my_shard(len(items))
    return gather_rows(np.ascontiguousarray(encode(items[lo:hi])), n_total=len(items))


def torchrun_command(nproc: int, args: Sequence[str], module: str = "lever_cli") -> list[str]:
    """``python -m torch.distributed.run --standalone --nproc-per-node K -m MODULE ARGS`` (torchrun)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={int(nproc)}",
            "-m", module, *args]


def launch(nproc: int, args: Sequence[str], module: str = "lever_cli") -> int:
    """Run ``module args`` in ``nproc`` processes under torchrun and wait; returns its exit code.

    Single-threaded math per rank unless OMP_NUM_THREADS is set (torchrun's default too), so K ranks on
    a K-core machine do not oversubscribe it.
    """
    if nproc < 1:
        raise ConfigError(f"--nproc {nproc} must be >= 1", where="--nproc")
    env = dict(os.environ)
    for k in LAUNCH_ENV:  # a nested launch starts its own group
        env.pop(k, None)
    env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.call(torchrun_command(nproc, args, module), env=env)


__all__ = ["launched", "active", "rank", "world_size", "is_main", "backend", "process_group", "barrier",
           "broadcast_object", "shard_bounds", "my_shard", "gather_rows", "gather_tensor_rows",
           "encode_sharded", "torchrun_command", "launch"]

"""The patches that make Renée train on LEVER's soft targets, each named for the upstream symbol it replaces.

They run inside the launched Renée processes (installed on import by the wrap framework, so the
``torch.multiprocessing.spawn`` children get them too) and are plain functions of the original, so
tests apply them with :func:`lever_plugins.wrap.patched` to the real ``dl_base`` classes as well.

Why each is needed (facts from ``dl_base.py`` / ``main.py`` at the tested commit):

- ``XCCollator.__call__`` builds ``batch['z']`` (2 × nnz: row, local label) from
  ``labels[full_ids].tocoo()`` and throws the COO values away. The wrapper adds ``batch['zv']``:
  those values, float32, in the same order (checked against ``z``'s columns).
- ``BCELossMultiNode.gather_embed`` is the one call per batch that sees the batch dictionary before
  the classifier's hand-written forward/backward; the wrapper stashes ``zv`` there and resets the
  offset into it.
- ``BCELossMultiNode.xfc_backward`` computes σ(x) and subtracts **1.0** at every stored entry, and its
  sampled loss value uses Σ x at the positives: BCE against binarised targets. The replacement
  subtracts the target value t (σ(x) − t, the gradient of BCE(x, t)) and reports
  Σ max(x, 0) − Σ t·x + Σ log(1 + e^−|x|); it consumes ``len(pos_x)`` values per call, so
  ``--accum`` chunks (contiguous slices of ``z``) line up. Matmuls, dtypes, AMP scale and all-reduces
  are as upstream: with ``--fp16xfc`` the scale is the alpha of the fp16 input-gradient GEMM (where
  Renée scales), and the fp32 weight gradient is accumulated in place over the chunks (an fp16
  product added into it; an in-place addmm in fp32). With binary targets it computes exactly what
  Renée does. ``--custom-cuda`` (a fused matmul+sigmoid kernel) is replaced by the torch matmul.
- ``xclib.data.data_utils.read_sparse_file`` returns the adapter's exact float32 target matrix (N + L
  rows, soft values, no stored zeros) for this run's ``trn_X_Y.txt`` and passes other paths through.
- ``xclib.evaluation.xc_metrics.compute_inv_propesity`` sums stored values and counts rows: on the
  soft augmented matrix it would give other propensities. For that matrix it is computed from the
  ORIGINAL binary N × L train labels instead.

A loss plugin (``lever_loss`` answered by a plugin, not the built-in BCE) reaches both arms: ``xfc_backward``
then takes the gradient of each chunk by autograd of the hook's loss on the chunk's logits and dense
target (mean × entries: the sum over the chunk, as Renée's own BCE), and ``GenericModel.__init__`` makes
``--default-impl``'s ``default_loss`` the hook's loss (mean × entries, Renée's sum). With the default loss
nothing changes: the hand-written σ(x) − t fast path runs.

``--default-impl`` needs no patch for soft targets: its collator path (``csr_to_pad_tensor``) carries the stored
values into ``batch['y']`` and ``GenericModel.fit`` scatters them into the dense target of
``default_loss`` (BCEWithLogits, sum), so the soft matrix from ``read_sparse_file`` reaches it as is.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp

from lever_plugins.wrap.patching import Patch

DL_BASE = "dl_base"
DATA_UTILS = "xclib.data.data_utils"
XC_METRICS = "xclib.evaluation.xc_metrics"
STASH = "_lever_zv"
OFFSET = "_lever_zv_offset"


class SoftTargetError(RuntimeError):
    """The soft values and Renée's positive indices are out of step (a patch did not run)."""


# ------------------------------------------------------------------------------------------ collator


def xccollator_call(original: Callable[..., Any]) -> Callable[..., Any]:
    """``dl_base.XCCollator.__call__``: also return ``zv``, the target values aligned with ``z``."""
    import torch

    def __call__(self: Any, batch: Any) -> Any:
        out = original(self, batch)
        if not isinstance(out, dict) or out.get("z") is None:
            return out  # test batches carry no targets
        coo = self.dataset.labels[np.asarray(batch)].tocoo()
        z = out["z"]
        if coo.nnz != z.shape[1] or not np.array_equal(coo.col, z[1].numpy()):
            raise SoftTargetError(
                f"LEVER: XCCollator targets changed order ({coo.nnz} values for {z.shape[1]} positives)"
            )
        out["zv"] = torch.from_numpy(np.ascontiguousarray(coo.data, dtype=np.float32))
        return out

    return __call__


# ------------------------------------------------------------------------------------------ loss


def gather_embed(original: Callable[..., Any]) -> Callable[..., Any]:
    """``dl_base.BCELossMultiNode.gather_embed``: stash the batch's ``zv`` for the backward passes."""

    def wrapper(self: Any, embed: Any, batch_data: Any) -> Any:
        setattr(self, STASH, batch_data.get("zv") if isinstance(batch_data, dict) else None)
        setattr(self, OFFSET, 0)
        return original(self, embed, batch_data)

    return wrapper


def take_targets(loss_model: Any, n: int) -> Any:
    """The next ``n`` soft values of the current batch (the positives of one ``xfc_backward`` call)."""
    zv = getattr(loss_model, STASH, None)
    if zv is None:
        raise SoftTargetError(
            "LEVER: xfc_backward got no soft values (batch['zv'] missing: is the XCCollator.__call__ patch active?)"
        )
    off = getattr(loss_model, OFFSET, 0)
    t = zv[off : off + n]
    if t.shape[0] != n:
        raise SoftTargetError(f"LEVER: {n} positives but only {zv.shape[0] - off} soft values left in the batch")
    setattr(loss_model, OFFSET, off + n)
    return t


def dense_targets(out: Any, pos_x: Any, pos_y: Any, t: Any) -> Any:
    """The chunk's dense fp32 target: t at (pos_x, pos_y), 0 elsewhere (padded label columns included)."""
    import torch

    dense = torch.zeros(out.shape, dtype=torch.float32, device=out.device)
    dense.index_put_((pos_x, pos_y), t.float(), accumulate=True)
    return dense


def plugin_gradient(loss: Callable[[Any, Any], Any], logits: Any, dense: Any) -> tuple[Any, Any]:
    """(d value / d logits, value) with value = ``loss(logits, dense)`` × entries: the hook answers a MEAN
    over the chunk's entries, Renée's loss is their SUM. Autograd on a detached fp32 copy of the logits."""
    import torch

    x = logits.detach().float().requires_grad_(True)
    with torch.enable_grad():
        value = loss(x, dense)
        if not isinstance(value, torch.Tensor) or value.dim() != 0:
            raise TypeError(f"lever_loss must return a scalar tensor, got {type(value).__name__}")
        value = value * x.numel()
        (grad,) = torch.autograd.grad(value, x)
    return grad, value.detach().float()


def xfc_backward(original: Callable[..., Any], loss: Callable[[Any, Any], Any] | None = None) -> Callable[..., Any]:
    """``dl_base.BCELossMultiNode.xfc_backward``: σ(x) − t at the stored entries instead of σ(x) − 1; with
    ``loss`` (a plugin's ``lever_loss``), autograd of that loss on the chunk instead."""
    import torch
    import torch.distributed as dist

    dl_base = sys.modules.get(getattr(original, "__module__", "") or DL_BASE)

    def replacement(self: Any, embed_out: Any, out: Any, pos_x: Any, pos_y: Any, grad_input: Any, use_custom: Any):
        model = self.model
        t = take_targets(self, int(pos_x.shape[0])).to(device=out.device)
        if use_custom:  # the fused kernel did matmul + sigmoid; without it the forward is still due
            self.xfc_forward(embed_out, out)
        freq = getattr(dl_base, "LOSS_SAMPLE_FREQ", 100)
        sample = model.compute_loss and model.count % freq == 0
        loss_work = None
        if loss is not None:  # a plugin loss: its gradient on this chunk, by autograd
            grad, value = plugin_gradient(loss, out, dense_targets(out, pos_x, pos_y, t))
            if sample:
                self.loss = value
                if model.world_size > 1:
                    loss_work = dist.all_reduce(self.loss, dist.ReduceOp.SUM, async_op=True)
            out.copy_(grad)  # in out's dtype, where Renée keeps σ(x) − t
        else:
            if sample:  # as upstream: fp32 sums straight from out's dtype
                value = out.clamp(min=0.0).sum(dtype=torch.float32)
                value -= (t.float() * out[pos_x, pos_y].float()).sum()
                value += torch.log1p(torch.exp(-out.float().abs())).sum()
                self.loss = value
                if model.world_size > 1:
                    loss_work = dist.all_reduce(self.loss, dist.ReduceOp.SUM, async_op=True)
            torch.sigmoid(out, out=out)
            out.index_put_((pos_x, pos_y), -t.to(out.dtype), accumulate=True)  # σ(x) − t, in out's dtype
        if model.xfc_weight.grad is None:
            model.scaler.scale(self.loss)  # as upstream: the scaler's scale is created lazily here
            self.scale_bwd = model.scaler.get_scale()
        # Input gradient: the AMP scale is the GEMM's alpha, as upstream (with --fp16xfc an fp16 GEMM,
        # so a tiny gradient is scaled before it is rounded to fp16 and a huge one overflows to inf for
        # the GradScaler to catch; scaling in fp32 afterwards would change both)
        if getattr(model, "fp16xfc", False):
            grad_input.copy_(torch.addmm(model.dummy, out, self.xfc_weight, beta=0, alpha=self.scale_bwd))
        else:
            torch.addmm(model.dummy, out, self.xfc_weight, beta=0, alpha=self.scale_bwd, out=grad_input)
        if loss_work is not None:
            loss_work.wait()
        work = dist.all_reduce(grad_input, dist.ReduceOp.SUM, async_op=True) if model.world_size > 1 else None
        # Weight gradient: fp32, created on the first chunk, then accumulated IN PLACE (as upstream): an
        # fp16 product is added into the fp32 gradient without an fp32 (labels × d) temporary
        grad = model.xfc_weight.grad
        if grad is None:
            model.xfc_weight.grad = out.t().mm(embed_out).to(torch.float32)
        elif out.dtype != grad.dtype:
            grad.add_(out.t().mm(embed_out))
        else:
            torch.addmm(grad, out.t(), embed_out, beta=1, alpha=1, out=grad)
        if work is not None:
            work.wait()
        return self.loss

    replacement.__name__ = "xfc_backward"
    replacement.__qualname__ = "BCELossMultiNode.xfc_backward"
    return replacement


def sum_of_mean(loss: Callable[[Any, Any], Any]) -> Any:
    """``--default-impl``'s ``default_loss`` (BCEWithLogits, sum) as the plugin loss: mean × entries. A module,
    since ``default_loss`` is a registered child of ``GenericModel``."""
    from torch import nn

    class SumOfMeanLoss(nn.Module):
        def forward(self, logits: Any, targets: Any) -> Any:
            return loss(logits, targets) * logits.numel()

    return SumOfMeanLoss()


def model_init(loss: Callable[[Any, Any], Any]) -> Callable[[Any], Any]:
    """``dl_base.GenericModel.__init__``: ``default_loss`` (used by ``--default-impl``) is the plugin loss."""

    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            original(self, *args, **kwargs)
            self.default_loss = sum_of_mean(loss)

        return __init__

    return make


# ------------------------------------------------------------------------------------------ data


def _load_csr(path: str) -> sp.csr_matrix:
    m = sp.load_npz(path).tocsr().astype(np.float32)
    m.sum_duplicates()
    m.eliminate_zeros()  # a stored zero would become a positive in z
    return m


def read_sparse_file(trn_path: str, targets_path: str) -> Callable[[Any], Any]:
    """``xclib.data.data_utils.read_sparse_file``: this run's ``trn_X_Y.txt`` is the adapter's matrix."""
    want = os.path.realpath(trn_path)

    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(file: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(file, (str, os.PathLike)) and os.path.realpath(file) == want:
                return _load_csr(targets_path)
            return original(file, *args, **kwargs)

        return wrapper

    return make


def compute_inv_propesity(y_train_path: str, target_shape: tuple[int, int]) -> Callable[[Any], Any]:
    """``xclib.evaluation.xc_metrics.compute_inv_propesity``: from the ORIGINAL binary train labels."""
    shape = tuple(target_shape)

    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(labels: Any, A: Any, B: Any) -> Any:
            if getattr(labels, "shape", None) == shape:
                y = _load_csr(y_train_path)
                y.data[:] = 1.0
                return original(y, A, B)
            return original(labels, A, B)

        return wrapper

    return make


def loss_patches(loss: Callable[[Any, Any], Any] | None = None) -> list[Patch]:
    """The loss side: batches carry their target values and ``xfc_backward`` trains on them; with ``loss``
    (a plugin's ``lever_loss``) both loss paths (``xfc_backward``, ``--default-impl``) take that loss."""
    out = [
        Patch(f"{DL_BASE}:XCCollator.__call__", xccollator_call),
        Patch(f"{DL_BASE}:BCELossMultiNode.gather_embed", gather_embed),
        Patch(f"{DL_BASE}:BCELossMultiNode.xfc_backward", functools.partial(xfc_backward, loss=loss)),
    ]
    if loss is not None:
        out.append(Patch(f"{DL_BASE}:GenericModel.__init__", model_init(loss)))
    return out


def all_patches(payload: dict[str, Any], loss: Callable[[Any, Any], Any] | None = None) -> list[Patch]:
    """Every patch of the +LEVER arm: the data side and :func:`loss_patches`. The base arm runs Renée as
    shipped, or with :func:`loss_patches` alone when a plugin answers ``lever_loss``."""
    return [
        Patch(f"{DATA_UTILS}:read_sparse_file", read_sparse_file(payload["trn_path"], payload["targets"])),
        Patch(
            f"{XC_METRICS}:compute_inv_propesity",
            compute_inv_propesity(payload["y_train"], tuple(payload["target_shape"])),
        ),
        *loss_patches(loss),
    ]

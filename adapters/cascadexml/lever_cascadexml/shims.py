"""The patches :class:`~lever_cascadexml.adapter.CascadeXMLAdapter` installs in the CascadeXML process.

Imported only there (and by tests): it imports torch. Each factory takes the object it replaces.

LEVER (both arms use the dataset patch; the +LEVER arm adds the loss patch):

- :func:`dataset_init` — ``dataset.MultiXMLGeneral.__init__``: the train set also holds the blended
  target matrix (``lever_targets.npz``, rows aligned with ``Y.trn.npz``).
- :func:`dataset_getitem` — ``dataset.MultiXMLGeneral.__getitem__``: the leaf level keeps the hard
  ids; every coarse level gets the ancestors of the hard+soft support (so teacher forcing also pulls
  soft labels' clusters into the leaf shortlist); two trailing items carry the blended target's ids
  and values. ``main.multi_collate`` passes them on as extra "levels", which the training loop zips
  away and :func:`soft_forward` takes off before the model sees them.
- :func:`level_forward` — ``CascadeXML.CascadeXML.forward``: the leaf term of the multi-level loss is
  BCE-with-logits against the blended target of each leaf candidate (0 where nothing is stored),
  autocast off, same mean over the padded candidate matrix as the upstream's term. With binary
  targets it equals the upstream loss exactly. Found from the inside, not by editing the loop: a
  forward hook on the leaf classifier ``Cn[-1]`` sees the candidates, and ``loss_fn`` is swapped for
  the call's duration by a module that passes the coarse levels through. With a loss plugin (``lever_loss``
  answered by a plugin) every level's term is the plugin's loss, in both arms.

Traps (each a shim; none edits an upstream file):

- rows with no labels: the stock ``__getitem__`` asserts on ``cluster_ids[-1][0]`` and so raises on
  an empty row; :func:`dataset_getitem` gives such a row empty id lists at every level (all-negative).
- ``transformers.AdamW`` is gone from current transformers (``main.py`` and ``Runner.py`` import it):
  :func:`legacy_adamw` puts back ``torch.optim.AdamW`` with transformers' old defaults (eps 1e-6,
  weight_decay 0) under that name, only when the name is missing.
- ``training_schedule.ThreePhaseOneCycleLR`` passes ``verbose`` to torch's ``_LRScheduler``, whose
  ``__init__`` no longer takes it: :func:`scheduler_init` accepts and drops it, only when needed.
- hard-coded GPU (``torch.device('cuda:0')`` in ``main``, ``.cuda()`` in ``Runner.test``): when CUDA is
  absent, :func:`cpu_device_arg` maps CUDA devices to the CPU at the model and runner entry points
  and :func:`cpu_test` makes ``Tensor.cuda`` a no-op during ``Runner.test`` only. On a GPU machine
  these wrappers change nothing.
- ``CascadeXML.get_bert`` downloads ``bert-base-uncased`` from the hub: :func:`encoder_loader` loads
  the configured encoder instead (a local folder or a cached hub id; same hidden states).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

# -- LEVER: data ---------------------------------------------------------------------------------


def dataset_init(soft_path: str | None) -> Any:
    def make(original: Any) -> Any:
        @functools.wraps(original)
        def __init__(self, x, Y, params, X_tfidf=None, mode="train"):  # noqa: N803 (upstream's names)
            original(self, x, Y, params, X_tfidf, mode)
            self.lever_soft = None
            if soft_path and mode == "train":
                soft = sp.load_npz(soft_path).tocsr()
                if soft.shape != self.Y.shape:
                    raise RuntimeError(
                        f"lever: blended targets {soft.shape} do not match the train labels {self.Y.shape}"
                    )
                soft.sum_duplicates()  # sorted ids: soft_target() looks them up with searchsorted
                self.lever_soft = soft

        return __init__

    return make


def ancestors(maps: list[np.ndarray], ids: np.ndarray) -> list[np.ndarray]:
    """Sorted unique ancestors of ``ids`` at each coarser level, finest first (``maps``: child → parent)."""
    out, cur = [], np.asarray(ids, dtype=np.int64)
    for m in maps:
        cur = np.unique(m[cur])
        if cur.size and cur[0] < 0:
            raise RuntimeError("lever: a label has no cluster in the label tree")
        out.append(cur)
    return out


def dataset_getitem(original: Any) -> Any:
    def __getitem__(self, idx):
        row = self.Y[idx]
        hard = np.sort(row.indices[row.data != 0]).astype(np.int64)
        soft = getattr(self, "lever_soft", None)
        if soft is not None:
            srow = soft[idx]
            support = np.union1d(hard, srow.indices)
        else:
            support = hard
        coarse = ancestors(self.label_to_cluster_maps, support)
        levels = [torch.from_numpy(hard)] + [torch.from_numpy(a) for a in coarse]
        levels = levels[::-1]  # coarse ... leaf, as the upstream returns them

        ids = list(self.x[idx])[: self.max_len - 2]
        ids = list(self.cls_token_id) + ids + list(self.sep_token_id)
        pad = self.max_len - len(ids)
        attention_mask = torch.tensor([1] * len(ids) + [0] * pad)
        input_ids = torch.tensor(ids + [0] * pad)
        if soft is None:
            return input_ids, attention_mask, *levels
        keep = srow.data != 0
        return (
            input_ids, attention_mask, *levels,
            torch.from_numpy(srow.indices[keep].astype(np.int64)), torch.from_numpy(srow.data[keep].astype(np.float32)),
        )  # fmt: skip

    return __getitem__


# -- LEVER: loss ---------------------------------------------------------------------------------


def soft_target(candidates: torch.Tensor, ids: list[torch.Tensor], vals: list[torch.Tensor]) -> torch.Tensor:
    """``out[b, k]`` = row b's blended target for label ``candidates[b, k]`` (0 when not stored, padding included)."""
    out = torch.zeros(candidates.shape, dtype=torch.float32, device=candidates.device)
    for b, (i, v) in enumerate(zip(ids, vals, strict=True)):
        if i.numel() == 0:
            continue
        i, v = i.to(candidates.device), v.to(candidates.device, torch.float32)
        pos = torch.searchsorted(i, candidates[b]).clamp_(max=i.numel() - 1)
        hit = i[pos] == candidates[b]
        out[b] = torch.where(hit, v[pos], out[b])
    return out


class LevelLoss(nn.Module):
    """Stands in for ``model.loss_fn`` during one forward (one call per level, coarse to leaf).

    Without a plugin ``loss``: levels before the leaf go to the upstream's loss unchanged; the leaf (the
    last call) gets BCE-with-logits against the blended target. With a plugin ``loss`` (a ``lever_loss``
    answered by a plugin; a MEAN over the entries, as the upstream's ``BCEWithLogitsLoss``): every level
    is that loss, on the upstream's binary targets at coarse levels and on the leaf's blended target
    (the binary one in the base arm). Autocast is off for the terms computed here (fp32)."""

    def __init__(self, hard: nn.Module, levels: int, state: dict[str, Any], loss: Any = None):
        super().__init__()
        self.hard = hard
        self.levels = levels
        self.state = state
        self.plugin = loss
        self.calls = 0

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        level = self.calls
        self.calls += 1
        soft = level == self.levels - 1 and "ids" in self.state
        if not soft and self.plugin is None:
            return self.hard(logits, labels)
        target = labels
        if soft:
            cands = self.state.get("candidates")
            if cands is None or cands.shape != logits.shape:
                raise RuntimeError(
                    "lever: the leaf logits do not line up with the leaf candidates; "
                    "CascadeXML.forward changed (run `lever doctor cascadexml`)"
                )
            target = soft_target(cands, self.state["ids"], self.state["vals"]).to(logits.device)
        with torch.autocast(device_type=logits.device.type, enabled=False):
            if self.plugin is not None:
                return self.plugin(logits.float(), target.float())
            return F.binary_cross_entropy_with_logits(
                logits.float(), target, reduction=getattr(self.hard, "reduction", "mean")
            )


LeafSoftLoss = LevelLoss  # the name of earlier versions


def level_forward(loss: Any = None) -> Any:
    """Patch factory for ``CascadeXML.CascadeXML.forward``: training calls with the two trailing soft items
    get the soft leaf term; with a plugin ``loss`` every level's term is that loss (both arms)."""

    def make(original: Any) -> Any:
        @functools.wraps(original)
        def forward(self, input_ids, attention_mask, epoch=None, all_labels=None, return_out=False):
            n = len(self.Cn)
            soft = all_labels is not None and len(all_labels) == n + 2
            if not soft and (loss is None or all_labels is None):
                return original(self, input_ids, attention_mask, epoch, all_labels, return_out)
            state: dict[str, Any] = {"ids": all_labels[n], "vals": all_labels[n + 1]} if soft else {}
            hook = self.Cn[-1].register_forward_hook(lambda mod, inp, out: state.__setitem__("candidates", inp[0]))
            hard = self.loss_fn
            self.loss_fn = LevelLoss(hard, n, state, loss)
            try:
                return original(self, input_ids, attention_mask, epoch, list(all_labels[:n]), return_out)
            finally:
                hook.remove()
                self.loss_fn = hard

        return forward

    return make


soft_forward = level_forward()  # the soft leaf term alone (no plugin loss)


# -- traps ---------------------------------------------------------------------------------------


class LegacyAdamW(torch.optim.AdamW):
    """``transformers.AdamW`` as CascadeXML knew it: torch's AdamW with transformers' old defaults.

    Differences left: decoupled weight decay is applied before the step (torch) instead of after it
    (old transformers), a second-order effect; ``correct_bias=False`` is refused (torch always corrects).
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0, correct_bias=True,
                 no_deprecation_warning=False):  # fmt: skip
        if not correct_bias:
            raise ValueError("lever shim: transformers.AdamW(correct_bias=False) has no torch equivalent")
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


def legacy_adamw(original: Any) -> Any:
    return original if original is not None else LegacyAdamW


def adamw_patches() -> list[Any]:
    """The ``transformers.AdamW`` shim. Current transformers executes its ``__init__`` a second time
    (``processing_utils`` calls ``direct_transformers_import`` when a model class is first loaded) and
    puts that second module object in ``sys.modules``, so the name also goes on the module
    ``processing_utils`` keeps (found in its source, without importing transformers)."""
    import importlib.util
    from pathlib import Path

    from lever_plugins.wrap.patching import Patch

    out = [Patch("transformers:AdamW", legacy_adamw, create=True)]
    spec = importlib.util.find_spec("transformers")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        src = Path(folder) / "processing_utils.py"
        if src.is_file() and "transformers_module = direct_transformers_import" in src.read_text(errors="replace"):
            out.append(Patch("transformers.processing_utils:transformers_module.AdamW", legacy_adamw, create=True))
            break
    return out


def scheduler_init(original: Any) -> Any:
    import inspect

    if "verbose" in inspect.signature(original).parameters:
        return original

    @functools.wraps(original)
    def __init__(self, optimizer, last_epoch=-1, verbose=False):
        original(self, optimizer, last_epoch)

    return __init__


def _cpu(device: Any) -> Any:
    if isinstance(device, (str, torch.device)) and torch.device(device).type == "cuda":
        return device if torch.cuda.is_available() else torch.device("cpu")
    return device


def cpu_device_arg(position: int) -> Any:
    """Wrap a method so its ``position``-th argument (after self), a device, becomes the CPU without CUDA."""

    def make(original: Any) -> Any:
        @functools.wraps(original)
        def wrapper(self, *args, **kwargs):
            if len(args) > position:
                args = (*args[:position], _cpu(args[position]), *args[position + 1 :])
            for key in ("device",):
                if key in kwargs:
                    kwargs[key] = _cpu(kwargs[key])
            return original(self, *args, **kwargs)

        return wrapper

    return make


def _tensor_cuda_noop(original: Any) -> Any:
    def cuda(self, device=None, non_blocking=False, **kwargs):
        return self

    return cuda


def cpu_test(original: Any) -> Any:
    from lever_plugins.wrap.patching import Patch, patched

    @functools.wraps(original)
    def test(self, model, params, device, epoch=0):
        if torch.cuda.is_available():
            return original(self, model, params, device, epoch)
        with patched([Patch("torch:Tensor.cuda", _tensor_cuda_noop)]):
            return original(self, model, params, _cpu(device), epoch)

    return test


def encoder_loader(encoder: str) -> Any:
    def make(original: Any) -> Any:
        def get_bert(bert_name):
            from transformers import AutoConfig, AutoModel

            config = AutoConfig.from_pretrained(encoder)
            config.output_hidden_states = True
            print(f"lever: loading encoder {encoder} (instead of {bert_name})")
            return AutoModel.from_pretrained(encoder, config=config)

        return get_bert

    return make

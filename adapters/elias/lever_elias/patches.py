"""The patches on ELIAS (applied inside the launched ELIAS processes), each named for the symbol it replaces.

Targets: ``Y.trn.npz`` holds the arm's targets (blended λy + (1−λ)p for +LEVER). ELIAS's classification
loss reads stored values as BCE targets, so that term needs no change. Everything else ELIAS derives
from the label matrix treats a stored entry as a positive, and is moved back to the right matrix:

- ``nets:ELIAS1.get_cluster_shortlist`` — teacher forcing pulls in the clusters of the HARD labels only
  (``b['y_hard']``), not of every teacher pair;
- ``losses:LOSSES[lever-elias]`` — ``ELIASLoss`` with the classification term computed by ELIAS itself on
  the blended values and the shortlist term on the hard labels;
- ``datasets:XMCCollator.__call__`` — adds ``b['y_hard']`` (hard support, padded like ``b['y']``);
- ``datasets:get_inv_prop`` (the name ``datasets`` binds from ``resources``) — propensities from the
  ORIGINAL binary train matrix, not from column sums of the augmented, valued one;
- ``datasets:DATA_MANAGERS[xmc-lever]`` — ``XMCDataManager`` whose validation rows are original documents
  scored against the original binary labels (ELIAS binarises ground truth, so blended entries would
  count as relevant), and whose train dataset carries the hard support.

With a loss plugin (``lever_loss`` answered by a plugin, not the built-in BCE), in both arms:

- ``losses:ELIASLoss.forward`` — the classification term (ELIAS's first ``criterion`` call, BCE on the
  top-K candidates' probabilities against their targets) is the hook's loss on the logits of those
  probabilities (``torch.logit``: BCE(p, t) = BCE-with-logits(logit p, t)); the shortlist term keeps
  ELIAS's BCE. Both are means, as ELIAS's ``criterion``.

Environment shims (no ELIAS code involved): ``accelerate.state:AcceleratorState.use_fp16`` (removed in
accelerate 1.0, read by ``train.py``/``eval.py``), datasets' ``labels`` as a CSR that takes torch index
tensors (scipy >= 1.15 refuses them in ``XMCCollator``), a stub ``turtle`` module when Tk is missing
(``losses.py`` imports ``turtle.forward`` and never uses it), and HF ``datasets`` dropped from
``sys.modules`` when something imported it before ELIAS's own ``datasets.py``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types
from typing import Any

import numpy as np
import scipy.sparse as sp

from lever_plugins.wrap import Patch

DATA_MANAGER = "xmc-lever"
LOSS = "lever-elias"


def _load(path: str | None) -> sp.csr_matrix | None:
    return sp.load_npz(path).tocsr() if path else None


# -------------------------------------------------------------------------------------------- shims


def use_fp16_shim(original: Any) -> Any:
    """``AcceleratorState.use_fp16`` as accelerate < 1.0 had it; kept as is where it still exists."""
    if original is not None:
        return original
    return property(lambda self: str(getattr(self, "mixed_precision", "no")) == "fp16")


def ensure_turtle() -> bool:
    """``losses.py`` does ``from turtle import forward`` (unused). Without Tk that import fails: put a stub
    ``turtle`` in ``sys.modules``. Returns True when the stub was installed."""
    if "turtle" in sys.modules:
        return False
    try:
        import _tkinter  # noqa: F401  (turtle -> tkinter -> _tkinter)
    except ImportError:
        stub = types.ModuleType("turtle")
        stub.__doc__ = "lever-elias stub: Tk is not available; ELIAS imports turtle.forward without using it"

        def forward(*_: Any, **__: Any) -> None:
            raise RuntimeError("turtle is a lever-elias stub here (no Tk)")

        stub.forward = forward
        sys.modules["turtle"] = stub
        return True
    return False


def unshadow_datasets(upstream: str) -> bool:
    """ELIAS's ``datasets.py`` shares its name with HF ``datasets``: if another ``datasets`` is already
    imported, drop it (and its submodules) so ELIAS's own loads from the checkout. True when dropped."""
    mod = sys.modules.get("datasets")
    if mod is None:
        return False
    here = os.path.realpath(getattr(mod, "__file__", "") or "")
    if here.startswith(os.path.realpath(upstream) + os.sep):
        return False
    for name in [n for n in sys.modules if n == "datasets" or n.startswith("datasets.")]:
        del sys.modules[name]
    return True


# ------------------------------------------------------------------------------------- data side


def inv_prop_from_original(payload: dict[str, Any]):
    """Patch factory for ``datasets:get_inv_prop``: the same function, on the original binary matrix."""
    cache: dict[str, sp.csr_matrix | None] = {}

    def make(original):
        def get_inv_prop(X_Y, dataset_name):
            if "y" not in cache:
                cache["y"] = _load(payload.get("y_orig"))
            y = cache["y"]
            use = y if y is not None and y.shape[1] == X_Y.shape[1] else X_Y
            return original(use, dataset_name)

        get_inv_prop.__wrapped__ = original
        return get_inv_prop

    return make


class TorchIndexCSR(sp.csr_matrix):
    """CSR that accepts a torch index tensor: ``XMCCollator`` indexes ``dataset.labels`` with a LongTensor,
    which scipy >= 1.15 rejects (``'torch.dtype' object has no attribute 'kind'``)."""

    def __getitem__(self, key):
        if type(key).__module__.startswith("torch"):
            key = key.numpy()
        return super().__getitem__(key)


def data_manager_class(base: type, payload: dict[str, Any]) -> type:
    """``XMCDataManager`` + validation on original rows/labels + hard support on the train dataset."""
    n_docs = int(payload["n_docs"])
    seed = int(payload.get("seed", 0))

    class LeverDataManager(base):
        lever_payload = payload

        def __init__(self, args):
            super().__init__(args)
            self.lever_y_orig = _load(payload.get("y_orig"))
            self.lever_y_hard = _load(payload.get("y_hard"))
            if self.lever_y_hard is not None and self.lever_y_hard.shape != self.trn_X_Y.shape:
                raise ValueError(f"hard support {self.lever_y_hard.shape} != Y.trn.npz {self.trn_X_Y.shape}")
            val = getattr(self, "val_inds", None)
            if val is not None and (np.asarray(val) >= n_docs).any():
                # ELIAS drew validation rows from all rows (augmented ones included): redraw from documents.
                rng = np.random.default_rng(seed)
                self.val_inds = np.sort(rng.choice(n_docs, size=len(val), replace=False))
                np.save(f"{args.DATA_DIR}/val_inds_{args.num_val_points}.npy", self.val_inds)
                self.trn_inds = np.setdiff1d(np.arange(self.trn_numx), self.val_inds)

        def build_datasets(self):
            out = super().build_datasets()
            if getattr(self, "val_inds", None) is not None and self.lever_y_orig is not None:
                val = self.val_dataset
                val.labels = self.lever_y_orig[val.sample].astype(np.float32)
            if self.lever_y_hard is not None:
                self.trn_dataset.lever_hard = self.lever_y_hard[self.trn_dataset.sample]
            for ds in {id(d): d for d in (self.trn_dataset, self.val_dataset, self.tst_dataset)}.values():
                ds.labels = TorchIndexCSR(ds.labels)
            return out

    return LeverDataManager


def collator_call(original):
    """``XMCCollator.__call__`` + ``b['y_hard']`` when the dataset carries hard support."""

    def __call__(self, batch):
        b = original(self, batch)
        hard = getattr(self.dataset, "lever_hard", None)
        if hard is not None:
            from dl_helper import csr_to_pad_tensor

            b["y_hard"] = csr_to_pad_tensor(hard[b["ids"].numpy()], self.numy)
        return b

    __call__.__wrapped__ = original
    return __call__


# ------------------------------------------------------------------------------------- model side


def cluster_shortlist(original):
    """``ELIAS1.get_cluster_shortlist``: teacher forcing from the hard labels (``b['y_hard']``) when present."""

    def get_cluster_shortlist(self, cluster_scores, b=None):
        if b is not None and "y_hard" in b:
            b = {**b, "y": b["y_hard"]}
        return original(self, cluster_scores, b)

    get_cluster_shortlist.__wrapped__ = original
    return get_cluster_shortlist


def loss_class(base: type) -> type:
    """``ELIASLoss`` whose classification term (ELIAS's own code) sees the blended values of ``b['y']``
    and whose shortlist term counts only hard labels (``b['y_hard']``) as positives."""
    import torch

    class LeverELIASLoss(base):
        def forward(self, model, b):
            if "y_hard" not in b:
                return super().forward(model, b)
            out = model(b)
            _, _, shortlist_vals, shortlist_inds = out
            lam = self.loss_lambda
            self.loss_lambda = 0.0  # ELIAS's forward: classification term only, on the blended values
            try:
                classification = super().forward(lambda _b: out, b)
            finally:
                self.loss_lambda = lam
            return classification + lam * self.shortlist_loss(shortlist_vals, shortlist_inds, b["y_hard"]["inds"])

        def shortlist_loss(self, vals, inds, hard_inds):
            """BCE over each row's shortlist entries that are hard positives (ELIAS's shortlist term: the
            first ``hard_inds.shape[1]`` entries by target, zero value where no positive is left)."""
            hard_inds = hard_inds.to(inds.device)
            with torch.no_grad():
                targets = torch.zeros_like(vals)
                valid = inds < self.numy
                for j in range(hard_inds.shape[1]):
                    hit = (inds == hard_inds[:, [j]]) & valid
                    targets = torch.where(hit, torch.ones_like(targets), targets)
            k = min(hard_inds.shape[1], targets.shape[1])
            pos_targets, pos = targets.topk(k)
            pos_vals = vals.gather(1, pos) * (pos_targets >= 1e-5)
            return self.criterion(pos_vals, pos_targets)

    return LeverELIASLoss


class FirstCallLoss:
    """Builds the ``criterion`` stand-in for one ``ELIASLoss.forward``: the first call (the classification
    term) goes to the plugin loss on logits, later calls (the shortlist term) to ELIAS's criterion."""

    EPS = 1e-6  # probabilities are clamped to [eps, 1 - eps] before the logit (BCELoss clamps its logs too)

    @staticmethod
    def make(criterion: Any, loss: Any) -> Any:
        import torch
        from torch import nn

        eps = FirstCallLoss.EPS

        class _Criterion(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.hard = criterion
                self.calls = 0

            def forward(self, probs: Any, targets: Any) -> Any:
                self.calls += 1
                if self.calls > 1:
                    return self.hard(probs, targets)
                with torch.autocast(device_type=probs.device.type, enabled=False):
                    return loss(torch.logit(probs.float(), eps=eps), targets.float())

        return _Criterion()


def plugin_classification(loss: Any):
    """Patch factory for ``losses:ELIASLoss.forward``: the classification term is the plugin loss."""

    def make(original):
        def forward(self, model, b):
            hard = self.criterion
            self.criterion = FirstCallLoss.make(hard, loss)
            try:
                return original(self, model, b)
            finally:
                self.criterion = hard

        forward.__wrapped__ = original
        return forward

    return make


# ------------------------------------------------------------------------------------------ all


def make_patches(payload: dict[str, Any], loss: Any = None) -> list[Patch]:
    """Every patch for one launched ELIAS process (see the module docstring); ``loss``: a plugin's
    ``lever_loss`` (None: ELIAS's own BCE)."""
    lever = bool(payload.get("lever"))
    out = [Patch("accelerate.state:AcceleratorState.use_fp16", use_fp16_shim, create=True)]
    if importlib.util.find_spec("accelerate") is None:
        out = []  # no accelerate, nothing to shim (test stand-ins)
    out += [
        Patch("datasets:get_inv_prop", inv_prop_from_original(payload)),
        Patch(
            f"datasets:DATA_MANAGERS[{DATA_MANAGER}]",
            lambda _old: data_manager_class(importlib.import_module("datasets").XMCDataManager, payload),
        ),
    ]
    if lever:
        out += [
            Patch("datasets:XMCCollator.__call__", collator_call),
            Patch("nets:ELIAS1.get_cluster_shortlist", cluster_shortlist),
            Patch(f"losses:LOSSES[{LOSS}]", lambda _old: loss_class(importlib.import_module("losses").ELIASLoss)),
        ]
    if loss is not None:
        out.append(Patch("losses:ELIASLoss.forward", plugin_classification(loss)))
    return out

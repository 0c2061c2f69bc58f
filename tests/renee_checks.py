"""Checks of the renee adapter's patches, run against a ``dl_base`` module: the test stand-in (CI) or the
real Renée checkout (opt-in, ``LEVER_UPSTREAM_RENEE``). Test-only shims for the real code live here too:
an ``apex`` stub (torch SGD/AdamW for its fused optimisers) and ``np.bool`` for numpy 1.24–1.26."""

from __future__ import annotations

import contextlib
import importlib
import sys
import types
from argparse import Namespace
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from lever_renee import patches as rp

from lever_plugins.wrap import Patch, patched

STANDINS = Path(__file__).resolve().parent / "standins"
STANDIN_RENEE = STANDINS / "renee"
STANDIN_XCLIB = STANDINS / "pyxclib"
_OWNED = ("dl_base", "main", "xclib", "apex")


def apex_stub() -> types.ModuleType:
    """``apex.optimizers.FusedSGD/FusedAdam`` as torch SGD/AdamW (their extra arguments dropped)."""

    def fused(base: type) -> type:
        class Fused(base):  # type: ignore[misc, valid-type]
            def __init__(self, params, set_grad_none=True, bias_correction=True, **kw):
                super().__init__(params, **kw)

        return Fused

    apex = types.ModuleType("apex")
    apex.optimizers = types.SimpleNamespace(FusedSGD=fused(torch.optim.SGD), FusedAdam=fused(torch.optim.AdamW))
    return apex


@contextlib.contextmanager
def upstream_modules(*paths: Path, stub_apex: bool = False) -> Iterator[types.ModuleType]:
    """Import ``dl_base`` from ``paths`` (first wins); afterwards forget it, ``main``, ``xclib`` and ``apex``
    again so that the stand-in and the real upstream can be used in one test session."""
    saved_path = list(sys.path)
    saved = {k: v for k, v in sys.modules.items() if k.split(".")[0] in _OWNED}
    for k in saved:
        del sys.modules[k]
    sys.path[:0] = [str(p) for p in paths]
    if stub_apex:
        sys.modules["apex"] = apex_stub()
    if not hasattr(np, "bool"):  # Renée's printacc uses np.bool (gone in numpy 1.24–1.26)
        np.bool = bool  # type: ignore[attr-defined]
    try:
        yield importlib.import_module("dl_base")
    finally:
        for k in [k for k in sys.modules if k.split(".")[0] in _OWNED]:
            del sys.modules[k]
        sys.modules.update(saved)
        sys.path[:] = saved_path


def loss_patches(loss=None) -> list[Patch]:
    if loss is not None:
        return rp.loss_patches(loss)
    return [
        Patch("dl_base:XCCollator.__call__", rp.xccollator_call),
        Patch("dl_base:BCELossMultiNode.gather_embed", rp.gather_embed),
        Patch("dl_base:BCELossMultiNode.xfc_backward", rp.xfc_backward),
    ]


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """A non-default lever_loss (what a plugin answers): focal BCE with soft targets, MEAN over entries."""
    p = torch.sigmoid(logits)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    weight = (targets * (1 - p) + (1 - targets) * p) ** gamma
    return (weight * bce).mean()


def pos_weighted_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Another non-default lever_loss: BCE with positives (target mass) weighted 3×, MEAN over entries."""
    return torch.nn.functional.binary_cross_entropy_with_logits(
        logits, targets, pos_weight=torch.tensor(3.0), reduction="mean"
    )


def soft_matrix(rng: np.random.Generator, n: int, L: int, density: float = 0.3) -> sp.csr_matrix:
    """Random soft targets in (0, 1], some exactly 1 (ground truth), every row with one at least."""
    m = sp.random(n, L, density=density, format="csr", random_state=rng, dtype=np.float32)
    m.data = np.where(rng.random(m.nnz) < 0.3, 1.0, 0.05 + 0.9 * m.data).astype(np.float32)
    m = m + sp.csr_matrix((np.ones(n, np.float32), (np.arange(n), rng.integers(0, L, n))), shape=(n, L))
    m.data = np.minimum(m.data, 1.0)
    return sp.csr_matrix(m, dtype=np.float32)


def args_for(D: int, accum: int = 1, default_impl: bool = False, fp16: bool = False) -> Namespace:
    return Namespace(
        world_size=1, fp32encoder=not fp16, fp16xfc=fp16, accum=accum, noloss=False, checkpoint_resume="",
        custom_cuda=False, default_impl=default_impl, bottleneck_dims=D,
    )  # fmt: skip


def make_dataset(dl_base: types.ModuleType, folder: Path, labels: sp.csr_matrix, maxlen: int = 4):
    """A PreTokBertDataset over ``labels`` with (random) token memmaps of its rows."""
    folder.mkdir(parents=True, exist_ok=True)
    n = labels.shape[0]
    ids = np.memmap(folder / "trn_doc_input_ids.dat", dtype=np.int64, mode="w+", shape=(n, maxlen))
    ids[:] = np.arange(n * maxlen).reshape(n, maxlen) % 97 + 1
    am = np.memmap(folder / "trn_doc_attention_mask.dat", dtype=np.int64, mode="w+", shape=(n, maxlen))
    am[:] = 1
    ids.flush(), am.flush()
    return dl_base.PreTokBertDataset(str(folder), labels, n, maxlen, doc_type="trn")


def soft_backward(dl_base: types.ModuleType, tmp: Path, accum: int, use_custom: bool, seed: int = 0,
                  fp16: bool = False, w_std: float = 0.5, binary: bool = False, ref_loss=None,
                  device: str = "cpu") -> dict:
    """One training batch through XCCollator → gather_embed → xfc_forward/xfc_backward, chunked as
    ``GenericModel.fit`` does, and the autograd reference: BCEWithLogits(sum) of (embed Wᵀ, T[batch]).

    ``fp16``: Renée's ``--fp16xfc`` path (fp16 logits and GEMMs, emulated on CPU, AMP scale 2**12 from a
    CPU GradScaler: the CUDA one upstream builds disables itself without a GPU); the reference then
    takes the fp16-rounded embeddings and weights in fp32 autograd. ``binary``: every target is 1.
    ``ref_loss``: a plugin loss (a MEAN over entries); the reference is then its value × entries.
    ``device``: where the model, batch and GEMMs live ("cuda" in benchmarks/gpu_check.py; real fp16 GEMMs
    and the CUDA GradScaler there); the autograd reference runs on the same device."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)  # the classifier weights are drawn from torch's generator
    B, D, L = 12, 6, 32
    T = soft_matrix(rng, 40, L)
    if binary:
        T.data[:] = 1.0
    ds = make_dataset(dl_base, tmp / f"tok-{accum}-{use_custom}-{seed}-{fp16}-{binary}", T)
    args = args_for(D, accum, fp16=fp16)
    model = dl_base.GenericModel(0, args, L, L, B, [torch.nn.Identity()], device=device, name="t", out_dir=str(tmp))
    if fp16:
        model.scaler = torch.amp.GradScaler(torch.device(device).type, init_scale=2.0**12)
    loss_model = dl_base.BCELossMultiNode(model)
    collate = dl_base.XCCollator(L, ds, 0, 1, accum, B // accum, True, False)
    ids = rng.permutation(40)[:B].tolist()
    batch = collate(ids)
    embed = torch.from_numpy(rng.standard_normal((B, D)).astype(np.float32)).to(device)
    with torch.no_grad():
        model.xfc_weight.normal_(0.0, w_std)
    W0 = model.xfc_weight.detach().clone()
    grad_ptrs = []

    with torch.no_grad():
        embed_out = loss_model.gather_embed(embed, batch)
        z, loss = batch["z"], 0.0
        step = B // accum
        cuts = [0, z.shape[1]] if accum == 1 else batch["i"].tolist()
        bounds = list(zip(cuts[:-1], cuts[1:], strict=True))
        for k, (a, b) in enumerate(bounds):
            s, e = k * step, min((k + 1) * step, B)
            out = model.outsoft[0 : e - s, :]
            if not use_custom:
                loss_model.xfc_forward(embed_out[s:e], out)
            else:
                out.fill_(float("nan"))  # the fused kernel's forward did not run: the patch must do it
            grad_in = model.grad_input[s:e]
            loss += float(loss_model.xfc_backward(embed_out[s:e], out, z[0, a:b], z[1, a:b], grad_in, use_custom))
            grad_ptrs.append(model.xfc_weight.grad.data_ptr())

    rounded = (lambda x: x.half().float()) if fp16 else (lambda x: x)
    E = rounded(embed).clone().requires_grad_(True)
    W = rounded(W0).clone().requires_grad_(True)
    dense = torch.from_numpy(T[ids].toarray()).to(device)
    if ref_loss is None:
        ref = torch.nn.BCEWithLogitsLoss(reduction="sum")(E @ W.t(), dense)
    else:
        ref = ref_loss(E @ W.t(), dense) * dense.numel()
    ref.backward()
    binary = torch.nn.BCEWithLogitsLoss(reduction="sum")(embed @ W0.t(), (dense > 0).float())
    return {
        "batch": batch, "ids": ids, "T": T, "loss": loss, "scale": float(getattr(loss_model, "scale_bwd", 1.0)),
        "grad_ptrs": grad_ptrs, "grad_dtype": model.xfc_weight.grad.dtype,
        "ref_loss": float(ref.detach()), "binary_loss": float(binary.detach()),
        "grad_input": model.grad_input[:B].clone(), "ref_grad_input": E.grad,
        "grad_w": model.xfc_weight.grad.clone(), "ref_grad_w": W.grad,
    }  # fmt: skip


def batch_targets(out: dict, accum: int) -> np.ndarray:
    """The target of each entry of ``z`` looked up in T (rows of ``z`` are chunk-local when accum > 1)."""
    z, ids, T = out["batch"]["z"].numpy(), np.asarray(out["ids"]), out["T"]
    rows = z[0].copy()
    if accum > 1:
        step = len(ids) // accum
        cuts = out["batch"]["i"].tolist()
        for k, (a, b) in enumerate(zip(cuts[:-1], cuts[1:], strict=True)):
            rows[a:b] += k * step
    return np.asarray(T[ids[rows], z[1]]).ravel()


def check_soft_backward(dl_base: types.ModuleType, tmp: Path, accum: int, use_custom: bool) -> dict:
    """Patched: the batch carries each entry's soft value, and the backward equals autograd of
    BCEWithLogits(sum) against the soft target (gradients to 1e-5, loss value to rel 1e-5)."""
    with patched(loss_patches()):
        out = soft_backward(dl_base, tmp, accum, use_custom)
    np.testing.assert_array_equal(out["batch"]["zv"].numpy(), batch_targets(out, accum))
    torch.testing.assert_close(out["grad_input"], out["ref_grad_input"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["grad_w"], out["ref_grad_w"], atol=1e-5, rtol=1e-5)
    assert out["loss"] == pytest.approx(out["ref_loss"], rel=1e-5)
    assert len(set(out["grad_ptrs"])) == 1  # one fp32 weight gradient, accumulated in place over the chunks
    return out


def check_plugin_loss_backward(dl_base: types.ModuleType, tmp: Path, accum: int, use_custom: bool, loss) -> dict:
    """With a plugin loss the patched backward is autograd of THAT loss (× entries: Renée sums) on the whole
    batch, though it runs chunk by chunk on detached logits with Renée's own GEMMs; and it differs from the
    default soft-BCE gradient (the plugin is not ignored)."""
    calls = []

    def hook(logits, targets):
        calls.append(tuple(logits.shape))
        return loss(logits, targets)

    with patched(loss_patches(hook)):
        out = soft_backward(dl_base, tmp, accum, use_custom, ref_loss=loss)
    with patched(loss_patches()):
        bce = soft_backward(dl_base, tmp, accum, use_custom)
    assert len(calls) == accum  # once per chunk
    torch.testing.assert_close(out["grad_input"], out["ref_grad_input"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["grad_w"], out["ref_grad_w"], atol=1e-5, rtol=1e-5)
    assert out["loss"] == pytest.approx(out["ref_loss"], rel=1e-5)
    assert len(set(out["grad_ptrs"])) == 1
    assert not torch.allclose(out["grad_w"], bce["grad_w"], atol=1e-3)
    return out


def check_default_impl_plugin_loss(dl_base: types.ModuleType, loss) -> None:
    """``--default-impl``: GenericModel's ``default_loss`` is the plugin loss (× entries) once patched."""
    args = args_for(4, default_impl=True)
    logits = torch.randn(5, 8)
    t = (torch.rand(5, 8) > 0.6).float() * torch.rand(5, 8)
    with patched(rp.loss_patches(loss)):
        model = dl_base.GenericModel(0, args, 8, 8, 5, [torch.nn.Identity()], device="cpu", name="t", out_dir=".")
        got = model.default_loss(logits, t)
    torch.testing.assert_close(got, loss(logits, t) * 40)
    plain = dl_base.GenericModel(0, args, 8, 8, 5, [torch.nn.Identity()], device="cpu", name="t", out_dir=".")
    assert isinstance(plain.default_loss, torch.nn.BCEWithLogitsLoss)


def check_fp16_backward(dl_base: types.ModuleType, tmp: Path, accum: int) -> None:
    """Renée's ``--fp16xfc`` path, patched: (1) with binary targets it computes bit for bit what the
    unpatched upstream function computes (same GEMM dtypes, the AMP scale applied where Renée applies it,
    the same accumulation); (2) with soft targets it is autograd of soft BCE on the fp16-rounded inputs
    (fp16 tolerances), the input gradient carrying the AMP scale; (3) the fp32 weight gradient is one
    tensor accumulated in place over the ``--accum`` chunks; (4) a gradient too small for fp16 survives
    because it is scaled inside the fp16 GEMM (scaling in fp32 afterwards would have lost it)."""
    plain = soft_backward(dl_base, tmp, accum, False, fp16=True, binary=True)
    with patched(loss_patches()):
        same = soft_backward(dl_base, tmp, accum, False, fp16=True, binary=True)
        soft = soft_backward(dl_base, tmp, accum, False, fp16=True)
        tiny = soft_backward(dl_base, tmp, accum, False, fp16=True, w_std=1e-7, seed=1)
    assert plain["scale"] == same["scale"] == 2.0**12
    torch.testing.assert_close(same["grad_input"], plain["grad_input"], atol=0, rtol=0)
    torch.testing.assert_close(same["grad_w"], plain["grad_w"], atol=0, rtol=0)
    assert same["loss"] == pytest.approx(plain["loss"], rel=1e-5)

    scale = soft["scale"]
    ref_in = soft["ref_grad_input"] * scale
    torch.testing.assert_close(soft["grad_input"], ref_in, atol=2e-2 * float(ref_in.abs().max()), rtol=2e-2)
    torch.testing.assert_close(soft["grad_w"], soft["ref_grad_w"],
                               atol=2e-2 * float(soft["ref_grad_w"].abs().max()), rtol=2e-2)
    assert soft["loss"] == pytest.approx(soft["ref_loss"], rel=1e-2)
    assert soft["grad_dtype"] == torch.float32 and len(set(soft["grad_ptrs"])) == 1  # in place over the chunks

    ref_tiny = tiny["ref_grad_input"] * scale  # |grad| ~ 1e-7 unscaled: below fp16's normal range
    assert float(tiny["ref_grad_input"].abs().max()) < 6e-5
    torch.testing.assert_close(tiny["grad_input"], ref_tiny, atol=2e-2 * float(ref_tiny.abs().max()), rtol=2e-2)


def check_unpatched_binarises(dl_base: types.ModuleType, tmp: Path) -> None:
    """Unpatched: no soft values in the batch, and the loss is BCE against the binarised targets."""
    out = soft_backward(dl_base, tmp, 1, False)
    assert "zv" not in out["batch"]
    assert not torch.allclose(out["grad_input"], out["ref_grad_input"], atol=1e-3)
    assert out["loss"] == pytest.approx(out["binary_loss"], rel=1e-5)


def default_impl_targets(dl_base: types.ModuleType, tmp: Path) -> tuple[torch.Tensor, np.ndarray]:
    """``--default-impl``: the dense target ``fit`` builds from ``batch['y']``, and T's rows (the oracle)."""
    rng = np.random.default_rng(3)
    L = 20
    T = soft_matrix(rng, 16, L)
    ds = make_dataset(dl_base, tmp / "tok-default", T)
    collate = dl_base.XCCollator(L, ds, 0, 1, 1, 8, True, True)
    ids = [5, 0, 9, 3, 12, 7, 1, 15]
    y = collate(ids)["y"]
    yfull = torch.zeros(len(ids), L + 1).scatter_(1, y["inds"], y["vals"])[:, :-1]  # as GenericModel.fit
    return yfull, T[ids].toarray()


def jain_inv_propensity(y: sp.csr_matrix, A: float, B: float) -> np.ndarray:
    """Inverse propensity of Jain et al. (2016) from the binarised column counts of ``y`` (the oracle)."""
    n = y.shape[0]
    freq = np.asarray((y > 0).sum(axis=0)).ravel()
    return 1 + (np.log(n) - 1) * (B + 1) ** A * (freq + B) ** -A


def _symbols(dl_base: types.ModuleType) -> dict:
    import xclib.data.data_utils as du
    import xclib.evaluation.xc_metrics as xm

    return {
        "call": vars(dl_base.XCCollator)["__call__"],
        "gather": vars(dl_base.BCELossMultiNode)["gather_embed"],
        "backward": vars(dl_base.BCELossMultiNode)["xfc_backward"],
        "read": du.read_sparse_file,
        "prop": xm.compute_inv_propesity,
    }


def check_reversible(dl_base: types.ModuleType, tmp: Path) -> None:
    """Every patched symbol is the original object again after ``patched`` exits."""
    from lever_renee.adapter import ReneeAdapter

    from lever_plugins.wrap import patched

    before = _symbols(dl_base)
    payload = {"trn_path": str(tmp / "t.txt"), "targets": "", "y_train": "", "target_shape": [1, 1], "soft": True}
    with patched(ReneeAdapter(require_cuda=False).patches(payload)) as applied:
        assert len(applied) == 5
        during = _symbols(dl_base)
        assert all(during[k] is not before[k] for k in before)
    after = _symbols(dl_base)
    assert all(after[k] is before[k] for k in before)


def check_reader_and_propensity(tmp: Path) -> None:
    """The reader gives the adapter's matrix for this run's trn_X_Y.txt (other paths pass through); the
    propensity of that matrix is the ORIGINAL binary matrix's, which the unpatched function would not give."""
    import xclib.data.data_utils as du
    import xclib.evaluation.xc_metrics as xm

    from lever_plugins.data import write_sparse
    from lever_plugins.wrap import patched

    rng = np.random.default_rng(1)
    y = (soft_matrix(rng, 30, 16) > 0.5).astype(np.float32).tocsr()
    aug = sp.vstack([y * 0.9, sp.identity(16, format="csr", dtype=np.float32)]).tocsr()  # soft, N + L rows
    aug.data[::3] = 0.37
    sp.save_npz(tmp / "targets.npz", aug)
    sp.save_npz(tmp / "y.npz", y)
    trn, tst = tmp / "trn_X_Y.txt", tmp / "tst_X_Y.txt"
    write_sparse(trn, sp.csr_matrix(aug.shape, dtype=np.float32))  # what the file says must not matter
    write_sparse(tst, y)
    payload = {"trn_path": str(trn), "targets": str(tmp / "targets.npz"), "y_train": str(tmp / "y.npz"),
               "target_shape": list(aug.shape), "soft": True}  # fmt: skip
    with patched(rp.all_patches(payload)):
        got = du.read_sparse_file(f"{tmp}/./trn_X_Y.txt")
        np.testing.assert_array_equal(got.toarray(), aug.toarray())
        assert got.dtype == np.float32
        np.testing.assert_array_equal(du.read_sparse_file(str(tst)).toarray(), y.toarray())  # passed through
        np.testing.assert_allclose(xm.compute_inv_propesity(got, 0.55, 1.5), jain_inv_propensity(y, 0.55, 1.5))
        np.testing.assert_allclose(xm.compute_inv_propesity(y, 0.5, 0.4), jain_inv_propensity(y, 0.5, 0.4))
    assert not np.allclose(xm.compute_inv_propesity(aug, 0.55, 1.5), jain_inv_propensity(y, 0.55, 1.5))


def cpu_train(dl_base: types.ModuleType, data_dir: Path, workdir: Path, tf: str, maxlen: int, *, epochs: int = 3,
              batch_size: int = 32, lr1: float = 0.05, lr2: float = 1e-3, expname: str = "renee-exp") -> list[float]:
    """Renée's ``main.start`` rebuilt on CPU for tests (it hard-codes CUDA): the same reads through xclib,
    propensity, filter, tokenizer folder, PreTokBertDataset/XCCollator/GenericModel/BCELossMultiNode,
    ``fit`` with the (stubbed) apex optimisers and the evaluator that writes the score matrix; one
    process, DataLoader without workers, fp32. Returns the mean loss per epoch that ``fit`` prints
    (every step's loss is sampled: LOSS_SAMPLE_FREQ = 1)."""
    import contextlib as cl
    import io
    import re

    import xclib.data.data_utils as data_utils
    from lever_renee.files import token_dir
    from transformers import AutoModel

    torch.manual_seed(0)
    trn_X_Y = data_utils.read_sparse_file(f"{data_dir}/trn_X_Y.txt")
    tst_X_Y = data_utils.read_sparse_file(f"{data_dir}/tst_X_Y.txt")
    inv_prop = dl_base.xc_metrics.compute_inv_propesity(trn_X_Y, 0.55, 1.5)
    pairs = np.fromfile(f"{data_dir}/tst_filter_labels.txt", sep=" ").astype(int).reshape(-1, 2).T
    filter_mat = sp.coo_matrix((np.ones(pairs.shape[1]), (pairs[0], pairs[1])), tst_X_Y.shape).tocsr()
    numy = trn_X_Y.shape[1]
    assert numy % 16 == 0  # the adapter pads; main.start would pad further otherwise
    tok = str(token_dir(data_dir, tf, maxlen))
    trn = dl_base.PreTokBertDataset(tok, trn_X_Y, trn_X_Y.shape[0], maxlen, doc_type="trn")
    tst = dl_base.PreTokBertDataset(tok, tst_X_Y, tst_X_Y.shape[0], maxlen, doc_type="tst")
    loaders = [
        torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=train, num_workers=0,
                                    collate_fn=dl_base.XCCollator(numy, ds, 0, 1, 1, batch_size, train, False))
        for ds, train in ((trn, True), (tst, False))
    ]  # fmt: skip
    encoder = dl_base.TransformerInputLayer(AutoModel.from_pretrained(tf))
    hidden = encoder.transformer.config.hidden_size
    args = args_for(hidden)
    out_dir = workdir / "Results" / "Bert-XC" / data_dir.name / expname
    model = dl_base.GenericModel(0, args, numy, numy, batch_size, [encoder, torch.nn.Dropout(0.1)], device="cpu",
                                 name=expname, out_dir=str(out_dir))  # fmt: skip
    loss_model = dl_base.BCELossMultiNode(model)
    model.epochs = epochs
    evaluator = dl_base.PrecEvaluator(model, loaders[1], dl_base.FullPredictor(), filter_mat=filter_mat,
                                      inv_prop=inv_prop)  # fmt: skip
    apex = sys.modules["apex"]
    freq, dl_base.LOSS_SAMPLE_FREQ = dl_base.LOSS_SAMPLE_FREQ, 1
    printed = io.StringIO()
    try:
        with cl.redirect_stdout(printed):
            model.fit(
                loaders[0], loss_model,
                xfc_optimizer_class=apex.optimizers.FusedSGD,
                xfc_optimizer_params={"lr": lr1, "momentum": 0.9, "weight_decay": 1e-4, "set_grad_none": True},
                tf_optimizer_class=apex.optimizers.FusedAdam,
                tf_optimizer_params={"lr": lr2, "eps": 1e-6, "set_grad_none": True, "bias_correction": True,
                                     "weight_decay": 0.01},
                epochs=epochs, warmup_steps=2, evaluator=evaluator, evaluation_epochs=5,
            )  # fmt: skip
    finally:
        dl_base.LOSS_SAMPLE_FREQ = freq
    return [float(v) for v in re.findall(r"mean loss after epoch \d+ : (\S+)", printed.getvalue())]

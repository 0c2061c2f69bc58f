"""Opt-in: the renee adapter against a real Renée checkout on CPU (``LEVER_UPSTREAM_RENEE=/path/to/renee``,
pinned commit 7c7c991; pyxclib installed). Test-only shims: an ``apex`` stub and ``np.bool``
(tests/renee_checks.py). Renée's ``main.start`` hard-codes CUDA, so the training run builds its
``dl_base`` classes on CPU the way ``start`` does (``renee_checks.cpu_train``)."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import DEBTAGS, lever
from lever_renee import files
from lever_renee.adapter import TESTED, ReneeAdapter
from renee_checks import (
    check_default_impl_plugin_loss,
    check_fp16_backward,
    check_plugin_loss_backward,
    check_reader_and_propensity,
    check_reversible,
    check_soft_backward,
    check_unpatched_binarises,
    cpu_train,
    default_impl_targets,
    focal_loss,
    pos_weighted_bce,
    upstream_modules,
)

from lever_plugins.wrap import Arm, patched

UPSTREAM = os.environ.get("LEVER_UPSTREAM_RENEE", "")
pytestmark = [
    pytest.mark.upstream,
    pytest.mark.skipif(not UPSTREAM, reason="set LEVER_UPSTREAM_RENEE to a Renée checkout (commit 7c7c991)"),
]
COMMIT = next(iter(TESTED))


@pytest.fixture
def real(one_torch_thread):
    if importlib.util.find_spec("xclib") is None:
        pytest.fail("LEVER_UPSTREAM_RENEE is set but pyxclib (xclib) is not installed: see README (Renée adapter)")
    with upstream_modules(Path(UPSTREAM), stub_apex=True) as dl_base:
        assert Path(dl_base.__file__).resolve() == (Path(UPSTREAM) / "dl_base.py").resolve()
        yield dl_base


def test_doctor_on_real_checkout_and_a_renamed_symbol(tmp_path: Path):
    r = lever("doctor", "renee", "--upstream", UPSTREAM)
    assert r.returncode == 0, r.stderr
    assert f"tested commit {COMMIT}" in r.stdout and "FAIL" not in r.stdout
    copy = tmp_path / "renee"
    shutil.copytree(UPSTREAM, copy, ignore=shutil.ignore_patterns("__pycache__", ".git"))
    dl = copy / "dl_base.py"
    dl.write_text(dl.read_text().replace("def gather_embed(self, embed, batch_data)", "def gather_embeds(self, e, b)"))
    r = lever("doctor", "renee", "--upstream", str(copy))
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "dl_base.BCELossMultiNode.gather_embed: not defined" in err[0]
    assert "not a tested commit" in r.stdout and "differs in dl_base.py" in r.stdout


@pytest.mark.parametrize(("accum", "use_custom"), [(1, False), (3, False), (1, True)])
def test_real_patched_backward_is_autograd_of_soft_bce(real, tmp_path: Path, accum: int, use_custom: bool):
    check_soft_backward(real, tmp_path, accum, use_custom)


@pytest.mark.parametrize(("accum", "use_custom", "loss"),
                         [(1, False, focal_loss), (3, False, focal_loss), (1, True, pos_weighted_bce)])
def test_real_plugin_loss_backward_is_autograd_of_that_loss(real, tmp_path: Path, accum: int, use_custom: bool, loss):
    check_plugin_loss_backward(real, tmp_path, accum, use_custom, loss)


def test_real_default_impl_takes_the_plugin_loss(real):
    check_default_impl_plugin_loss(real, focal_loss)


@pytest.mark.parametrize("accum", [1, 3])
def test_real_fp16xfc_backward_is_renees_own_path(real, tmp_path: Path, accum: int):
    check_fp16_backward(real, tmp_path, accum)


def test_real_unpatched_backward_binarises(real, tmp_path: Path):
    check_unpatched_binarises(real, tmp_path)


def test_real_default_impl_gets_the_values(real, tmp_path: Path):
    yfull, dense = default_impl_targets(real, tmp_path)
    np.testing.assert_array_equal(yfull.numpy(), dense)


def test_real_reader_propensity_and_reversibility(real, tmp_path: Path):
    check_reader_and_propensity(tmp_path)
    check_reversible(real, tmp_path)


def debtags_context(tmp: Path, tf: str, maxlen: int, n_trn: int = 256, n_tst: int = 128) -> Arm:
    """A +LEVER arm on a slice of debtags: N documents, then the L label rows, plus soft teacher-like pairs."""
    from lever_plugins.data import load_dataset

    ds = load_dataset(DEBTAGS)
    y = ds.binary_train()[:n_trn].tocsr()
    N, L = y.shape
    rng = np.random.default_rng(0)
    extra = sp.csr_matrix((rng.uniform(0.3, 0.8, 2 * N).astype(np.float32),
                           (np.repeat(np.arange(N), 2), rng.integers(0, L, 2 * N))), shape=(N, L))  # fmt: skip
    extra = extra - extra.multiply(y > 0)  # teacher pairs only off the ground truth
    targets = sp.vstack([y + extra, sp.identity(L, format="csr", dtype=np.float32)]).tocsr()
    targets.eliminate_zeros()
    return Arm(
        workdir=tmp / "lever" / "upstream", name="lever", upstream=Path(UPSTREAM),
        upstream_args=["--tf", tf, "--maxlen", str(maxlen)], targets=targets,
        support=(targets > 0).astype(np.float32).tocsr(), y_train=y, y_test=ds.y_tst[:n_tst].tocsr(),
        trn_texts=list(ds.trn_texts[:n_trn]) + list(ds.lbl_texts), tst_texts=list(ds.tst_texts[:n_tst]),
        lbl_texts=list(ds.lbl_texts), tst_filter=np.zeros((0, 2), np.int64), seed=0,
    )  # fmt: skip


def test_real_dl_base_trains_on_cpu_with_soft_targets(real, tmp_path: Path, tiny_model: Path):
    """prepare() writes debtags' slice as Renée reads it; the real dl_base classes train a few steps on CPU
    with the patches active (the soft values reach the loss); the loss falls; collect() reads the scores."""
    adapter = ReneeAdapter(require_cuda=False)
    ctx = debtags_context(tmp_path, str(tiny_model), 32)
    ctx.workdir.mkdir(parents=True)
    spec = adapter.prepare(ctx)
    data_dir = Path(spec.argv[spec.argv.index("--data-dir") + 1])
    seen: list[int] = []

    def count(original):
        def wrapper(self, embed_out, out, pos_x, pos_y, grad_input, use_custom):
            seen.append(int((self._lever_zv < 1).sum()))  # soft values present in this batch
            return original(self, embed_out, out, pos_x, pos_y, grad_input, use_custom)

        return wrapper

    from lever_plugins.wrap import Patch

    with patched([*adapter.patches(spec.payload), Patch("dl_base:BCELossMultiNode.xfc_backward", count)]):
        losses = cpu_train(real, data_dir, ctx.workdir, str(tiny_model), 32, epochs=3)
    assert len(losses) == 3 and losses[-1] < losses[0], losses
    assert sum(seen) == int((ctx.targets.data < 1).sum()) * 3  # every soft value, every epoch
    scores = adapter.collect(ctx, spec)
    assert scores.shape == (128, ctx.y_train.shape[1]) and scores.getnnz(axis=1).min() == 100
    print(f"\nRenée dl_base on CPU, debtags slice ({ctx.targets.shape[0]} rows, L={ctx.y_train.shape[1]}, "
          f"padded {files.padded_labels(ctx.y_train.shape[1])}): mean loss per epoch {losses}")  # fmt: skip

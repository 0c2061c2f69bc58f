"""lever-elias: ELIAS run on LEVER's targets through its own scripts, patched in memory.

CI runs everything against the stand-in in tests/standins/elias (our code, ELIAS's names and
signatures). With LEVER_UPSTREAM_ELIAS=/path/to/ELIAS (commit 724b5fe, plus accelerate, wandb, pandas
and pyxclib installed) the same in-process checks run on the real classes on CPU, doctor must report
the tested commit, and a tiny real train.py + eval.py run on a debtags slice must lower its loss.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import importlib
import json
import os
import re
import shutil
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import DEBTAGS, lever, write_tiny_lf

from lever_plugins.errors import ConfigError
from lever_plugins.metrics.propensity import inv_propensity
from lever_plugins.wrap import Arm, Patch, patched
from lever_plugins.wrap.contract import file_digest

lever_elias = pytest.importorskip("lever_elias")
from lever_elias import data as D  # noqa: E402
from lever_elias.adapter import EliasAdapter  # noqa: E402
from lever_elias.patches import (  # noqa: E402
    DATA_MANAGER,
    LOSS,
    TorchIndexCSR,
    ensure_turtle,
    make_patches,
    unshadow_datasets,
    use_fp16_shim,
)

STANDIN = Path(__file__).parent / "standins" / "elias"
REAL = os.environ.get("LEVER_UPSTREAM_ELIAS", "")
ELIAS_MODULES = ("datasets", "losses", "nets", "resources", "dl_helper", "optimizer_bundles")


@pytest.fixture(params=["standin", "real"])
def upstream(request) -> Path:
    if request.param == "real":
        if not REAL:
            pytest.skip("set LEVER_UPSTREAM_ELIAS to an ELIAS checkout (commit 724b5fe) to run on the real code")
        return Path(REAL)
    return STANDIN


@contextlib.contextmanager
def elias_on_path(root: Path):
    """ELIAS's flat modules importable from ``root`` for the block (its ``datasets`` shadows HF's)."""
    saved = {n: sys.modules.pop(n) for n in ELIAS_MODULES if n in sys.modules}
    sys.path.insert(0, str(root))
    no_pyc, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # nothing written into the checkout
    try:
        yield importlib.import_module
    finally:
        sys.dont_write_bytecode = no_pyc
        sys.path.remove(str(root))
        for n in ELIAS_MODULES:
            sys.modules.pop(n, None)
        sys.modules.update(saved)


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tokenizer folder whose path has no 'bert' (ELIAS would swap in bert-base-uncased's)."""
    from transformers import AutoTokenizer

    from lever_plugins.teacher.encoder import resolve_model

    path = tmp_path_factory.mktemp("enc") / "tok"
    AutoTokenizer.from_pretrained(resolve_model("default")).save_pretrained(path)
    return path


def csr(rows: list[dict[int, float]], n_labels: int) -> sp.csr_matrix:
    r = [i for i, row in enumerate(rows) for _ in row]
    c = [j for row in rows for j in row]
    v = [x for row in rows for x in row.values()]
    return sp.csr_matrix((np.asarray(v, np.float32), (r, c)), shape=(len(rows), n_labels))


def bce(v: np.ndarray, t: np.ndarray) -> np.ndarray:
    """torch.nn.BCELoss elementwise (log clamped at -100), in numpy."""
    v = v.astype(np.float64)
    with np.errstate(divide="ignore"):
        log_v, log_1v = np.maximum(np.log(np.maximum(v, 0)), -100), np.maximum(np.log(np.maximum(1 - v, 0)), -100)
    return -(t * log_v + (1 - t) * log_1v)


# ------------------------------------------------------------------------- loss, forcing, collator


def test_loss_sees_blended_values_shortlist_and_forcing_only_hard(upstream: Path, tmp_path: Path):
    import torch

    real = upstream != STANDIN
    n_labels, per_cluster, lam = 24, 3, 0.5
    cmat = sp.csr_matrix(
        (np.ones(n_labels, np.float32), (np.arange(n_labels) // per_cluster, np.arange(n_labels))), shape=(8, n_labels)
    )
    sp.save_npz(tmp_path / "cmat.npz", cmat)
    # Hard labels at their blended value 0.8; soft-only teacher pairs at 0.35, one inside a hard label's
    # cluster (so it is in the shortlist) and one in a cluster no hard label forces.
    hard_rows = [{0: 1.0}, {4: 1.0, 9: 1.0}, {13: 1.0}, {20: 1.0}, {7: 1.0}, {16: 1.0, 2: 1.0}]
    soft_rows = [{1: 0.35, 12: 0.35}, {5: 0.35}, {14: 0.35, 22: 0.35}, {21: 0.35}, {8: 0.35, 3: 0.35}, {17: 0.35}]
    blend = csr([{**{j: 0.8 for j in h}, **s} for h, s in zip(hard_rows, soft_rows, strict=True)], n_labels)
    hard = csr(hard_rows, n_labels)
    sp.save_npz(tmp_path / "orig.npz", hard)
    sp.save_npz(tmp_path / "hard.npz", hard)
    n = blend.shape[0]
    torch.manual_seed(0)
    feats = torch.randn(n, 768)

    class Dataset:
        labels = TorchIndexCSR(blend)  # as the data manager leaves it (scipy >= 1.15 refuses torch indices)
        lever_hard = hard

        def get_fts(self, ids):
            ids = np.asarray(ids)
            return feats[ids] if real else {"input_ids": torch.as_tensor(np.arange(8)[None, :] + 13 * ids[:, None])}

    args = SimpleNamespace(
        numy=n_labels, beam_size=2, alpha=10.0, K=64, max_leaf=per_cluster, wl_dim=0, embs_dim=32,
        A_init_path=str(tmp_path / "cmat.npz"), loss_lambda=lam, device="cpu",
        tf="", tf_pooler="cls", bottleneck_dim=0, dropout=0.0, norm_embs=False, amp_encode=False,
        use_swa=False, swa_start=0, swa_step=1000,
    )  # fmt: skip
    payload = {"lever": True, "n_docs": n, "seed": 0, "y_orig": str(tmp_path / "orig.npz"), "y_hard": None}
    forced_from: list[list[set[int]]] = []

    def spy(original):
        def get_cluster_shortlist(self, cluster_scores, b=None):
            if self.training:
                forced_from.append([set(r[r < n_labels].tolist()) for r in b["y"]["inds"].numpy()])
            return original(self, cluster_scores, b)

        return get_cluster_shortlist

    with elias_on_path(upstream) as imp:
        datasets, losses, nets = imp("datasets"), imp("losses"), imp("nets")
        originals = (
            vars(datasets.XMCCollator)["__call__"],
            vars(nets.ELIAS1)["get_cluster_shortlist"],
            datasets.get_inv_prop,
        )
        patches = [p for p in make_patches(payload) if not p.module.startswith("accelerate")]
        with patched([Patch("nets:ELIAS1.get_cluster_shortlist", spy), *patches]):
            b = datasets.XMCCollator(Dataset())([{"index": i} for i in range(n)])
            # The blended values survive the collator; the hard support rides along.
            for i in range(n):
                pairs = zip(b["y"]["inds"][i].tolist(), b["y"]["vals"][i].tolist(), strict=True)
                got = {j: v for j, v in pairs if j < n_labels}
                assert got == pytest.approx(dict(zip(blend[i].indices.tolist(), blend[i].data.tolist(), strict=True)))
                assert set(b["y_hard"]["inds"][i].tolist()) - {n_labels} == set(hard[i].indices.tolist())
            torch.manual_seed(0)
            net = nets.ELIAS1(args)
            net.train()
            seen = {}

            def model(batch):
                seen["out"] = net(batch)
                return seen["out"]

            loss = losses.LOSSES[LOSS](args)(model, b)
            replay = losses.LOSSES["elias-loss"](args)
            stock = replay(lambda _b: seen["out"], b)  # stock ELIAS on the blended matrix
            stock_hard = replay(lambda _b: seen["out"], {**b, "y": b["y_hard"]})  # stock ELIAS, hard labels only
            loss.backward()
            assert net.WC.weight.grad is not None and float(net.WC.weight.grad.abs().sum()) > 0
        # Reversible: every patched symbol is the original again, registries without our keys.
        assert DATA_MANAGER not in datasets.DATA_MANAGERS and LOSS not in losses.LOSSES
        assert vars(datasets.XMCCollator)["__call__"] is originals[0]
        assert vars(nets.ELIAS1)["get_cluster_shortlist"] is originals[1] and datasets.get_inv_prop is originals[2]

    # Teacher forcing saw the hard labels only.
    assert forced_from == [[set(h) for h in hard_rows]]
    # Oracle from the model's own outputs: classification BCE against the blended value of each top-K
    # candidate (0 if not stored), plus lambda x ELIAS's shortlist term with the HARD labels as positives.
    tv, ti, _, si = (t.detach().numpy() for t in seen["out"])
    dense_blend, dense_hard = blend.toarray(), hard.toarray()
    pad = np.zeros((n, 1), np.float32)
    t_cls = np.take_along_axis(np.hstack([dense_blend, pad]), ti, axis=1)
    assert {round(float(x), 4) for x in np.unique(t_cls)} == {0.0, 0.35, 0.8}  # soft values reach the loss
    cls = bce(tv, t_cls).mean()
    hit = np.take_along_axis(np.hstack([dense_hard, np.zeros((n, 1))]), si, axis=1) > 0
    assert all(set(si[i][hit[i]].tolist()) == set(h) for i, h in enumerate(hard_rows))  # hard clusters forced in
    # The shortlist term as ELIAS computes it with the hard labels as ground truth (the real function as oracle).
    cls_hard = bce(tv, np.take_along_axis(np.hstack([dense_hard, pad]), ti, axis=1)).mean()
    short = (float(stock_hard.detach()) - cls_hard) / lam
    assert short > 0
    assert float(loss.detach()) == pytest.approx(cls + lam * short, rel=1e-5)
    assert abs(bce(tv, (t_cls > 0).astype(np.float32)).mean() - cls) > 1e-3  # the values matter, not the support
    # stock ELIAS counts soft pairs in its shortlist term
    assert abs(float(stock.detach()) - float(loss.detach())) > 1e-4


def focal(logits, targets, gamma: float = 2.0):
    """A non-default lever_loss (what a plugin answers): focal BCE on soft targets, MEAN over entries."""
    import torch

    p = torch.sigmoid(logits)
    ce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return (((targets * (1 - p) + (1 - targets) * p) ** gamma) * ce).mean()


@pytest.mark.parametrize("arm", ["base", "lever"])
def test_plugin_loss_is_the_classification_term(upstream: Path, tmp_path: Path, arm: str):
    """With a loss plugin, ELIAS's classification term is the plugin's loss on the logits of the top-K
    probabilities (autograd oracle on the model's outputs); the shortlist term is ELIAS's own, on hard
    labels in the +LEVER arm. Unpatched again afterwards."""
    import torch

    n_labels, K, S, lam, n = 24, 10, 8, 0.5, 5
    rng = np.random.default_rng(1)
    blend = sp.random(n, n_labels, density=0.15, format="csr", random_state=rng, dtype=np.float32)
    blend.data = (0.2 + 0.6 * blend.data).astype(np.float32)
    hard = csr([{int(j): 1.0} for j in rng.integers(0, n_labels, n)], n_labels)
    blend = sp.csr_matrix(blend.maximum(hard), dtype=np.float32)
    y_mat = blend if arm == "lever" else hard

    def pad(m):
        width = max(int(np.diff(m.indptr).max()), 1)
        inds = torch.full((n, width), n_labels, dtype=torch.long)
        vals = torch.zeros((n, width))
        for i in range(n):
            r = m[i]
            inds[i, : r.nnz], vals[i, : r.nnz] = torch.as_tensor(r.indices), torch.as_tensor(r.data)
        return {"inds": inds, "vals": vals}

    b = {"y": pad(y_mat)}
    if arm == "lever":
        b["y_hard"] = pad(hard)
    # the model's outputs: top-K candidates (all positives among them) and a shortlist, probabilities in (0, 1)
    ti = torch.as_tensor(np.stack([rng.permutation(np.r_[y_mat[i].indices, np.setdiff1d(
        np.arange(n_labels), y_mat[i].indices)])[:K] for i in range(n)]))
    for i in range(n):  # every stored label among the candidates
        pos = y_mat[i].indices
        rest = [c for c in ti[i].tolist() if c not in pos][: K - len(pos)]
        ti[i] = torch.as_tensor(np.r_[pos, rest])
    si = torch.as_tensor(np.stack([rng.permutation(n_labels + 1)[:S] for _ in range(n)]))
    tv = torch.sigmoid(torch.as_tensor(rng.standard_normal((n, K)), dtype=torch.float32)).requires_grad_(True)
    sv = torch.sigmoid(torch.as_tensor(rng.standard_normal((n, S)), dtype=torch.float32)).requires_grad_(True)
    out = (tv, ti, sv, si)
    args = SimpleNamespace(numy=n_labels, loss_lambda=lam)
    payload = {"lever": arm == "lever", "n_docs": n, "seed": 0, "y_orig": None, "y_hard": None}
    calls = []

    def plugin(logits, targets):
        calls.append(tuple(logits.shape))
        return focal(logits, targets)

    with elias_on_path(upstream) as imp:
        losses = imp("losses")
        original = vars(losses.ELIASLoss)["forward"]
        stock_short = losses.ELIASLoss(args)
        patches = [p for p in make_patches(payload, loss=plugin) if p.module == "losses"]
        with patched(patches):
            crit = losses.LOSSES[LOSS if arm == "lever" else "elias-loss"](args)
            got = crit(lambda _b: out, b)
        g_tv, g_sv = torch.autograd.grad(got, [tv, sv])
        # shortlist term by ELIAS itself (unpatched): its total minus its own classification BCE, / lambda
        y_short = b["y_hard"] if arm == "lever" else b["y"]
        t_short = torch.zeros(n, K)
        for i in range(n):
            t_short[i] = torch.as_tensor(y_mat[i].toarray()[0] if arm == "base" else hard[i].toarray()[0])[ti[i]]
        ref_short = (stock_short(lambda _b: out, {"y": y_short})
                     - torch.nn.functional.binary_cross_entropy(tv, t_short)) / lam
        assert vars(losses.ELIASLoss)["forward"] is original
    t_cls = torch.as_tensor(np.take_along_axis(y_mat.toarray(), ti.numpy(), axis=1))
    assert (t_cls > 0).sum() == y_mat.nnz and ((t_cls > 0) & (t_cls < 1)).any() == (arm == "lever")
    ref = focal(torch.logit(tv, eps=1e-6), t_cls) + lam * ref_short
    r_tv, r_sv = torch.autograd.grad(ref, [tv, sv])
    assert calls == [(n, K)]
    assert float(got.detach()) == pytest.approx(float(ref.detach()), rel=1e-5)
    torch.testing.assert_close(g_tv, r_tv, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(g_sv, r_sv, atol=1e-6, rtol=1e-5)
    stock = torch.nn.functional.binary_cross_entropy(tv, t_cls)
    assert not torch.allclose(torch.autograd.grad(stock, tv)[0], r_tv, atol=1e-4)  # the plugin loss is not BCE


# ------------------------------------------------------------------------- data side, propensity


def tiny_ctx(tmp_path: Path, upstream: Path, n_docs: int = 40, n_labels: int = 24, seed: int = 3) -> Arm:
    rng = np.random.default_rng(seed)
    dense = (rng.random((n_docs, n_labels)) < 0.12).astype(np.float32)
    dense[np.arange(n_docs), rng.integers(0, n_labels, n_docs)] = 1.0
    y = sp.csr_matrix(dense)
    eye = sp.identity(n_labels, dtype=np.float32, format="csr")
    support = sp.vstack([y, eye]).tocsr()
    soft = sp.csr_matrix((rng.random(support.shape) < 0.1) * rng.uniform(0.2, 0.45, support.shape))
    targets = (0.5 * support + soft - soft.multiply(support) + 0.5 * soft.multiply(support)).tocsr().astype(np.float32)
    words = ["audio", "video", "kernel", "python", "game", "font", "chess", "music"]
    texts = [" ".join(words[j % 8] for j in row.indices) + f" doc {i}" for i, row in enumerate(support)]
    y_tst = sp.csr_matrix(y[:10])
    return Arm(
        workdir=tmp_path / "lever" / "upstream", name="lever", upstream=upstream.resolve(), upstream_args=[],
        targets=targets, support=support, y_train=y, y_test=y_tst, trn_texts=texts, tst_texts=texts[:10],
        lbl_texts=texts[n_docs:], tst_filter=np.array([[0, 1], [3, 5]]), seed=seed, top_k=100,
    )  # fmt: skip


def test_files_propensity_and_validation_come_from_the_original_matrix(
    upstream: Path, tmp_path: Path, tok_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    from transformers import AutoTokenizer

    ctx = tiny_ctx(tmp_path, upstream)
    adapter = EliasAdapter(
        tf=str(tok_dir), tf_max_len=12, num_val_points=8,
        elias={"max_leaf": 4, "beam_size": 8, "eval_topk": 16, "bsz": 8},
    )  # fmt: skip
    spec = adapter.prepare(ctx)
    w, n = ctx.workdir, ctx.n_docs
    ddir = w / "Datasets" / "lever"
    # Files under ELIAS's names, in its formats.
    np.testing.assert_array_equal(sp.load_npz(ddir / "Y.trn.npz").toarray(), ctx.targets.toarray())
    tok_path = D.token_file(ddir, "trn", str(tok_dir), 12)
    assert (tok_path.parent / (tok_path.name + ".meta")).read_text().split() == [str(len(ctx.trn_texts)), "12", "int64"]
    mm = np.memmap(tok_path, dtype="int64", mode="r", shape=(len(ctx.trn_texts), 12))
    want = AutoTokenizer.from_pretrained(str(tok_dir))(
        ctx.trn_texts, max_length=12, padding="max_length", truncation=True
    )
    np.testing.assert_array_equal(mm, np.asarray(want["input_ids"]))
    cmat = sp.load_npz(w / "cmat.npz")
    assert cmat.shape == (D.num_clusters(24, 4), 24) and (cmat.getnnz(axis=0) == 1).all()
    assert set(cmat.getnnz(axis=1)) <= {3, 4}  # balanced
    assert spec.cwd == w and spec.script == "train.py" and [s.script for s in spec.then] == ["eval.py"]
    assert (w / "configs" / "logging.yaml").is_file() and (w / "configs" / "elias.yaml").is_file()

    monkeypatch.chdir(w)
    with elias_on_path(upstream) as imp:
        resources, datasets = imp("resources"), imp("datasets")
        args = resources.load_config_and_runtime_args(["train.py", "configs/lever-elias.yaml", "--bsz", "4"])
        assert (args.data_manager, args.loss, args.num_val_points, args.bsz) == (DATA_MANAGER, LOSS, 8, 4)
        args.DATA_DIR = f"Datasets/{args.dataset}"
        filt = resources.load_filter_mat(f"{args.DATA_DIR}/filter_labels_test.txt", ctx.y_test.shape)
        assert sorted(zip(*filt.nonzero(), strict=True)) == [(0, 1), (3, 5)]
        stock = datasets.XMCDataManager(args)
        patches = [p for p in make_patches(spec.payload) if not p.module.startswith("accelerate")]
        with patched(patches):
            dm = datasets.DATA_MANAGERS[DATA_MANAGER](args)
            trn, val, _ = dm.build_datasets()
    a, b = 0.55, 1.5  # ELIAS's A/B for a data set named neither amazon nor wiki
    np.testing.assert_allclose(dm.inv_prop, inv_propensity(ctx.y_train, a, b), rtol=1e-6)
    assert not np.allclose(stock.inv_prop, dm.inv_prop)
    assert len(dm.val_inds) == 8 and dm.val_inds.max() < n
    assert set(dm.trn_inds) == set(range(ctx.targets.shape[0])) - set(dm.val_inds.tolist())  # label rows train
    np.testing.assert_array_equal(val.labels.toarray(), ctx.y_train[dm.val_inds].toarray())  # binary original
    np.testing.assert_array_equal(trn.lever_hard.toarray(), ctx.support[dm.trn_inds].toarray())


def test_settings_refuse_impossible_elias_configs(tmp_path: Path, tok_dir: Path):
    ctx = tiny_ctx(tmp_path, STANDIN)
    with pytest.raises(ConfigError, match=r"8 clusters .* fewer than its beam_size 20"):
        EliasAdapter(tf=str(tok_dir), elias={"max_leaf": 3, "beam_size": 20}).settings(ctx)
    with pytest.raises(ConfigError, match="eval_topk=100"):
        EliasAdapter(tf=str(tok_dir), elias={"max_leaf": 4, "beam_size": 4}).settings(ctx)
    with pytest.raises(ConfigError, match="num_val_points 40"):
        EliasAdapter(
            tf=str(tok_dir), num_val_points=40, elias={"eval_topk": 8, "max_leaf": 4, "beam_size": 4}
        ).settings(ctx)
    with pytest.raises(ConfigError, match="may not set dataset"):
        EliasAdapter(elias={"dataset": "x"})
    ctx = dataclasses.replace(ctx, upstream_args=["--data_manager", "xmc"])
    with pytest.raises(ConfigError, match="--data_manager is set by the adapter"):
        EliasAdapter(tf=str(tok_dir), elias={"eval_topk": 8, "max_leaf": 4, "beam_size": 4}).settings(ctx)


# ------------------------------------------------------------------------- shims


def test_environment_shims(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    # accelerate >= 1.0 dropped AcceleratorState.use_fp16: added back, only where absent, reversibly.
    class State:
        def __init__(self, mp):
            self.mixed_precision = mp

    monkeypatch.setattr(sys.modules[__name__], "State", State, raising=False)
    with patched([Patch(f"{__name__}:State.use_fp16", use_fp16_shim, create=True)]):
        assert State("fp16").use_fp16 is True and State("no").use_fp16 is False
    assert not hasattr(State, "use_fp16")
    assert use_fp16_shim(keep := property(lambda s: "old")) is keep

    # No Tk: `from turtle import forward` gets a stub.
    monkeypatch.delitem(sys.modules, "turtle", raising=False)
    monkeypatch.setitem(sys.modules, "_tkinter", None)  # makes `import _tkinter` fail
    assert ensure_turtle() is True
    from turtle import forward  # noqa: F401

    with pytest.raises(RuntimeError, match="stub"):
        forward(1)
    monkeypatch.delitem(sys.modules, "turtle")

    # Another `datasets` (HF) imported first is dropped; ELIAS's own is kept.
    fake = type(sys)("datasets")
    fake.__file__ = str(tmp_path / "site" / "datasets" / "__init__.py")
    monkeypatch.setitem(sys.modules, "datasets", fake)
    monkeypatch.setitem(sys.modules, "datasets.arrow", type(sys)("datasets.arrow"))
    assert unshadow_datasets(str(STANDIN)) is True
    assert "datasets" not in sys.modules and "datasets.arrow" not in sys.modules
    ours = type(sys)("datasets")
    ours.__file__ = str(STANDIN / "datasets.py")
    monkeypatch.setitem(sys.modules, "datasets", ours)
    assert unshadow_datasets(str(STANDIN)) is False and sys.modules["datasets"] is ours


# ------------------------------------------------------------------------- doctor


def test_doctor_passes_on_the_checkout_and_names_drift(upstream: Path, tmp_path: Path):
    report = EliasAdapter().doctor(upstream)
    assert report.ok, report.lines()
    if upstream != STANDIN:
        assert report.commit == "724b5fefd519eafef82465b9be7c9da5fe8d6e4e" and not report.differs
    drift = tmp_path / "drift"
    shutil.copytree(upstream, drift, ignore=shutil.ignore_patterns("Results", "Datasets", "__pycache__"))
    nets = drift / "nets.py"
    nets.write_text(nets.read_text().replace("def get_cluster_shortlist(", "def cluster_shortlist("))
    dsets = drift / "datasets.py"
    dsets.write_text(re.sub(r"def __call__\(self, batch\)", "def __call__(self, batch, device)", dsets.read_text()))
    problems = {str(p.symbol): p.what for p in EliasAdapter().doctor(drift).problems}
    assert problems == {
        "nets.ELIAS1.get_cluster_shortlist": "not defined",
        "datasets.XMCCollator.__call__": "signature changed: expected (self, batch), found (self, batch, device)",
    }
    (drift / "losses.py").unlink()
    r = lever("doctor", "elias", "--upstream", str(drift))
    assert r.returncode == 2
    assert "FAIL losses.LOSSES" in r.stdout and "module not found" in r.stdout
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "contract problem" in err[0] and "nets.ELIAS1.get_cluster_shortlist" in r.stdout


# ------------------------------------------------------------------------- end to end


def write_cfg(path: Path, teacher: Path, options: str) -> Path:
    path.write_text(
        f'[data]\ntext = "title+content"\n[encoder]\nmax_len = 16\n'
        f'[teacher]\nmodel = "{teacher}"\ntrain = false\nmax_len = 16\n'
        "[soft_labels]\ntau_l = 3\ntau_d = 4\nthreshold = 0.5\n[eval]\nbootstrap = 20\n"
        f'[trainer]\nadapter = "elias"\n{options}'
    )
    return path


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): file_digest(p) for p in sorted(root.rglob("*")) if p.is_file()}


def test_lever_wrap_elias_end_to_end_on_the_standin(tmp_path: Path, tiny_model: Path, tok_dir: Path):
    data = write_tiny_lf(tmp_path / "tiny", n_trn=50, n_tst=12, n_lbl=112)
    before = snapshot(STANDIN)
    options = (
        f'[trainer.options]\ntf = "{tok_dir}"\ntf_max_len = 16\nnum_val_points = 6\n'
        "[trainer.options.elias]\nmax_leaf = 14\nbeam_size = 8\nnum_epochs = 2\n"
    )
    cfg = write_cfg(tmp_path / "cfg.toml", tiny_model, options)
    env = {"HF_HUB_OFFLINE": "1", "LEVER_CACHE_DIR": str(tmp_path / "cache")}
    r = lever(
        "wrap", "elias", "--data", str(data), "--out", str(tmp_path / "run"), "--config", str(cfg),
        "--upstream", str(STANDIN), "--", "--lr", "0.02", env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    w = tmp_path / "run" / "lever" / "upstream"
    out = w / "Results" / "LEVER" / "lever" / "lever"
    targets = sp.load_npz(tmp_path / "run" / "soft" / "targets.npz")
    np.testing.assert_allclose(sp.load_npz(w / "Datasets/lever/Y.trn.npz").toarray(), targets.toarray(), rtol=1e-6)
    assert targets.shape[0] == 50 + 112 and np.load(w / "Datasets/lever/val_inds_6.npy").max() < 50
    import yaml

    conf = yaml.safe_load((out / "config.yaml").read_text())
    assert (conf["loss"], conf["data_manager"], conf["lr"]) == (LOSS, DATA_MANAGER, 0.02)  # `--` args reach train.py
    assert (w / "eval.log").is_file() and "tst P@1" in (w / "eval.log").read_text()
    scores = sp.load_npz(out / "tst_score_mat.npz")
    assert scores.shape == (12, 112) and scores.nnz > 0
    assert json.loads((tmp_path / "run" / "lever" / "metrics.json").read_text())["P@1"] >= 0
    assert snapshot(STANDIN) == before  # nothing written into the checkout


# ------------------------------------------------------------------------- opt-in: real ELIAS trains


def debtags_slice(dst: Path, n_trn: int, n_tst: int, n_lbl: int) -> Path:
    """The first documents of debtags restricted to the ``n_lbl`` most frequent labels (renumbered)."""

    def read(name: str, n: int | None = None) -> list[dict]:
        with gzip.open(DEBTAGS / name, "rt", encoding="utf-8") as fh:
            return [json.loads(line) for _, line in zip(range(n or 10**9), fh, strict=False)]

    trn, tst, lbl = read("trn.json.gz", 4 * n_trn), read("tst.json.gz", 4 * n_tst), read("lbl.json.gz")
    keep = sorted(j for j, _ in Counter(j for r in trn for j in r["target_ind"]).most_common(n_lbl))
    new = {j: i for i, j in enumerate(keep)}

    def remap(rows: list[dict], n: int) -> list[dict]:
        out = []
        for r in rows:
            pairs = [(new[j], v) for j, v in zip(r["target_ind"], r["target_rel"], strict=True) if j in new]
            if pairs:
                out.append({**r, "target_ind": [j for j, _ in pairs], "target_rel": [v for _, v in pairs]})
        return out[:n]

    dst.mkdir(parents=True, exist_ok=True)
    for name, rows in (
        ("trn.json.gz", remap(trn, n_trn)),
        ("tst.json.gz", remap(tst, n_tst)),
        ("lbl.json.gz", [lbl[j] for j in keep]),
    ):
        with gzip.open(dst / name, "wt", encoding="utf-8") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in rows)
    return dst


@pytest.mark.skipif(not REAL, reason="set LEVER_UPSTREAM_ELIAS to an ELIAS checkout to run the real trainer")
def test_real_elias_trains_on_a_debtags_slice(tmp_path: Path, tok_dir: Path):
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    # ELIAS's encoder pooling is 768-d: a 1-layer random BERT of that width, in a folder without 'bert'.
    enc = tmp_path / "enc768"
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=768, num_hidden_layers=1, num_attention_heads=12,
                     intermediate_size=256, max_position_embeddings=64)  # fmt: skip
    BertModel(cfg).save_pretrained(enc)
    tok.save_pretrained(enc)
    data = debtags_slice(tmp_path / "deb", 160, 40, 128)
    options = (
        f'[trainer.options]\ntf = "{enc}"\ntf_max_len = 32\nnum_val_points = 16\n'
        "[trainer.options.elias]\nnum_epochs = 3\nbsz = 32\nmax_leaf = 32\nbeam_size = 4\nK = 128\neval_interval = 1\n"
    )
    conf = write_cfg(tmp_path / "cfg.toml", enc, options)
    before = snapshot(Path(REAL))
    env = {"HF_HUB_OFFLINE": "1", "LEVER_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "2"}
    r = lever(
        "wrap", "elias", "--data", str(data), "--out", str(tmp_path / "run"), "--config", str(conf),
        "--upstream", REAL, env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    w = tmp_path / "run" / "lever" / "upstream"
    losses = [float(x) for x in re.findall(r"Mean loss after epoch \d+/\d+: (\S+)", (w / "upstream.log").read_text())]
    assert len(losses) == 3 and losses[-1] < losses[0], losses
    # ELIAS's own test metrics (xclib, its filter) agree with LEVER's evaluation of the collected scores.
    tsv = (w / "Results/LEVER/lever/lever/tst_metrics.tsv").read_text().splitlines()
    theirs = dict(zip(tsv[0].split("\t")[1:10], map(float, tsv[1].split("\t")[1:10]), strict=True))
    ours = json.loads((tmp_path / "run" / "lever" / "metrics.json").read_text())
    for k in ("P@1", "P@3", "P@5"):
        assert 100 * ours[k] == pytest.approx(theirs[k], abs=0.01), (k, ours[k], theirs[k])
    assert snapshot(Path(REAL)) == before

"""lever-cascadexml: the soft leaf loss, the hard+soft coarse targets, the trap shims, doctor and `lever wrap`.

CI runs every check on the stand-in in tests/standins/cascadexml (written here, no upstream code). With
LEVER_UPSTREAM_CASCADEXML=<checkout of xmc-aalto/cascadexml at the tested commit> the same in-process
checks run on the REAL upstream classes (CPU, a tiny random 12-layer BERT), plus doctor on the checkout
and a short CPU training run of its own main.py on a slice of debtags (needs pyxclib and nltk).
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import re
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import DEBTAGS, WORDS, lever, save_random_bert, write_tiny_lf

pytest.importorskip("lever_cascadexml")

from lever_cascadexml.adapter import TESTED, CascadeXMLAdapter  # noqa: E402
from lever_cascadexml.tree import build_tree, check_shape, default_shape, leaf_sizes  # noqa: E402

from lever_plugins.errors import ConfigError  # noqa: E402
from lever_plugins.wrap import Arm, patched  # noqa: E402

STANDIN = Path(__file__).parent / "standins" / "cascadexml"
REAL = os.environ.get("LEVER_UPSTREAM_CASCADEXML", "")
real_only = pytest.mark.skipif(not REAL, reason="set LEVER_UPSTREAM_CASCADEXML to a cascadexml checkout")
ROOTS = [pytest.param(STANDIN, id="standin"), pytest.param(Path(REAL or "."), id="real", marks=real_only)]
UPSTREAM_MODULES = (
    "main", "CascadeXML", "dataset", "data_utils", "Runner", "Runner_sparse", "tree", "random_walks",
    "training_schedule", "dist_eval_sampler", "log",
)  # fmt: skip


@pytest.fixture(scope="session")
def bert12(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 12-layer BERT (CascadeXML reads hidden states up to 12) with the BERT-uncased vocabulary."""
    return save_random_bert(tmp_path_factory.mktemp("bert12") / "bert", 16, 12, 32)


# ------------------------------------------------------------------------------------ helpers


def make_ctx(workdir: Path, root: Path, lever: bool, n: int = 24, n_lbl: int = 20, seed: int = 0) -> Arm:
    """Random arm inputs; train row 3 has no label at all (and no soft target either)."""
    rng = np.random.default_rng(seed)
    y = sp.random(n, n_lbl, density=0.12, random_state=seed, format="lil")
    y[3, :] = 0
    y = sp.csr_matrix(y)
    y.data[:] = 1
    y.eliminate_zeros()
    if lever:
        support = sp.vstack([y, sp.identity(n_lbl)], format="csr")
        soft = sp.random(n + n_lbl, n_lbl, density=0.15, random_state=seed + 1, format="lil")
        soft[3, :] = 0
        soft = sp.csr_matrix(soft)
        soft.data = rng.uniform(0.05, 0.95, soft.nnz)
        lam = 0.7
        targets = (lam * support + (1 - lam) * soft).tocsr()  # stored on the union, soft-only pairs < 1
    else:
        support = targets = y

    def text(k: int) -> str:
        return " ".join(rng.choice(WORDS, 5))

    lbl_texts = [f"{WORDS[j % len(WORDS)]} tools {j}" for j in range(n_lbl)]
    trn = [text(i) for i in range(n)]
    return Arm(
        workdir=workdir, name="lever" if lever else "base", upstream=root, upstream_args=[],
        targets=sp.csr_matrix(targets, dtype=np.float32), support=sp.csr_matrix(support, dtype=np.float32),
        y_train=y, y_test=sp.csr_matrix(sp.random(6, n_lbl, density=0.2, random_state=seed + 2)),
        trn_texts=trn + (lbl_texts if lever else []), tst_texts=[text(i) for i in range(6)], lbl_texts=lbl_texts,
        tst_filter=np.zeros((0, 2), dtype=np.int64), seed=seed,
    )  # fmt: skip


def params_from(argv: list[str], workdir: Path) -> SimpleNamespace:
    """The upstream's params object from the adapter's flags (plus the argparse defaults the model reads)."""
    ns: dict = {
        "embed_drops": [0.2, 0.25, 0.4, 0.5], "rw_loss": [1, 1, 1, 1], "sparse": False, "return_shortlist": False,
        "graph_name": "graph.npz", "verbose_lbs": 0, "max_len": 128,
    }  # fmt: skip
    key = ""
    for tok in argv:
        if tok.startswith("--"):
            key = tok[2:]
            ns[key] = []
        else:
            ns[key].append(tok)
    for k in ("num_labels", "seed", "max_len", "batch_size", "num_epochs"):
        if k in ns:
            ns[k] = int(ns[k][0])
    for k in ("dataset", "bert", "cluster_name"):
        ns[k] = ns[k][0]
    ns["tree_depth"] = [int(v) for v in ns["tree_depth"]]
    ns["topk"] = [int(v) for v in ns["topk"]]
    ns["data_path"] = str(workdir / "data" / ns["dataset"])
    return SimpleNamespace(**ns)


@contextlib.contextmanager
def upstream(root: Path, adapter: CascadeXMLAdapter, payload: dict):
    """The upstream's modules freshly imported from ``root/src`` with the adapter's patches; all undone after."""
    src = str(root / "src")
    for m in UPSTREAM_MODULES:
        sys.modules.pop(m, None)
    sys.path.insert(0, src)
    try:
        with patched(adapter.patches(payload)) as applied:
            yield applied
    finally:
        sys.path.remove(src)
        for m in UPSTREAM_MODULES:
            sys.modules.pop(m, None)


def prepared(tmp_path: Path, root: Path, bert12: Path, lever: bool):
    adapter = CascadeXMLAdapter(encoder=str(bert12), max_len=16)
    ctx = make_ctx(tmp_path / ("lever" if lever else "base"), root, lever)
    ctx.workdir.mkdir(parents=True)
    spec = adapter.prepare(ctx)
    return adapter, ctx, spec, params_from(spec.argv, ctx.workdir)


def train_set(params: SimpleNamespace):
    import data_utils
    import dataset

    x_trn, _, y_trn, _, tfidf, _ = data_utils.load_data(params.data_path, params.bert, params.num_labels, False)
    return dataset.MultiXMLGeneral(x_trn, y_trn, params, tfidf, mode="train")


# ------------------------------------------------------------------------------------ the loss


@pytest.mark.parametrize("root", ROOTS)
def test_leaf_loss_is_bce_against_blended_target(root: Path, tmp_path: Path, bert12: Path, one_torch_thread):
    import torch
    import torch.nn.functional as F

    adapter, ctx, spec, params = prepared(tmp_path, root, bert12, lever=True)
    with upstream(root, adapter, spec.payload):
        import CascadeXML
        import main

        ds = train_set(params)
        torch.manual_seed(0)
        model = CascadeXML.CascadeXML(params=params, train_ds=ds, device=torch.device("cpu"))
        model.eval()  # no dropout: the two forwards below see the same features
        rows = [0, 3, 5, 9, 24, 30, 41, 43]  # documents (row 3 has no label) and label rows
        x, mask, labels = main.multi_collate([ds[i] for i in rows])
        n = len(model.Cn)
        assert len(labels) == n + 2

        # Reference: the upstream's own forward and per-level losses, then BCE on the leaf logits
        # against the blended targets looked up from the dense matrix.
        original = CascadeXML.CascadeXML.forward.__wrapped__
        seen: list = []
        hook = model.loss_fn.register_forward_hook(lambda m, inp, out: seen.append((inp[0], out)))
        _, cands, hard_loss = original(model, x, mask, 0, labels[:n])
        hook.remove()
        assert len(seen) == n
        dense = np.hstack([ctx.targets.toarray(), np.zeros((ctx.targets.shape[0], 1))])  # pad id -> 0
        t = torch.tensor(dense[np.asarray(rows)[:, None], cands[-1].numpy()], dtype=torch.float32)
        assert 0 < t.max() and ((t > 0) & (t < 1)).any()  # soft values reach some leaf candidates
        rw = params.rw_loss
        expected = sum(rw[i] * seen[i][1] for i in range(n - 1)) + rw[n - 1] * F.binary_cross_entropy_with_logits(
            seen[-1][0], t
        )
        expected.backward()
        want = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
        model.zero_grad()

        _, cands2, loss = model(x, mask, 0, labels)
        assert torch.equal(cands2[-1], cands[-1])
        assert abs(loss.item() - expected.item()) < 1e-5
        assert abs(loss.item() - hard_loss.item()) > 1e-4  # the soft values changed the leaf term
        loss.backward()
        for k in (f"Cn.{n - 1}.weight", f"Cn_bias.{n - 1}.weight"):
            torch.testing.assert_close(dict(model.named_parameters())[k].grad, want[k], atol=1e-6, rtol=1e-4)
        assert type(model.loss_fn).__name__ == "BCEWithLogitsLoss"  # put back after the call

        # Binary targets (the hard leaf ids at value 1): exactly the upstream's loss.
        ones = [torch.ones(len(i)) for i in labels[n - 1]]
        _, _, same = model(x, mask, 0, [*labels[:n], labels[n - 1], ones])
        assert abs(same.item() - hard_loss.item()) < 1e-6
        # Test batches (no trailing items) are left alone.
        assert len(model(x, mask, 0)) == 3


def focal(logits, targets, gamma: float = 2.0):
    """A non-default lever_loss (what a plugin answers): focal BCE on soft targets, MEAN over entries."""
    import torch

    p = torch.sigmoid(logits)
    ce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return (((targets * (1 - p) + (1 - targets) * p) ** gamma) * ce).mean()


@pytest.mark.parametrize("lever", [False, True], ids=["base", "lever"])
@pytest.mark.parametrize("root", ROOTS)
def test_plugin_loss_is_every_levels_loss(root: Path, tmp_path: Path, bert12: Path, one_torch_thread, lever: bool):
    """A loss plugin's lever_loss replaces every level's term (binary coarse targets; the blended leaf target in
    the +LEVER arm): the gradient of every parameter equals autograd of Σ rw_i · focal(logits_i, target_i)."""
    import torch

    adapter, ctx, spec, params = prepared(tmp_path, root, bert12, lever=lever)
    calls: list = []

    def plugin(logits, targets):
        calls.append(tuple(logits.shape))
        return focal(logits, targets)

    adapter.plugin_loss = lambda: plugin  # what the launched process gets from the lever_loss hook
    with upstream(root, adapter, spec.payload):
        import CascadeXML
        import main

        ds = train_set(params)
        torch.manual_seed(0)
        model = CascadeXML.CascadeXML(params=params, train_ds=ds, device=torch.device("cpu"))
        model.eval()
        rows = [0, 3, 5, 9, 20, 23] + ([24, 30, 41, 43] if lever else [])
        x, mask, labels = main.multi_collate([ds[i] for i in rows])
        n = len(model.Cn)
        assert len(labels) == (n + 2 if lever else n)

        original = CascadeXML.CascadeXML.forward.__wrapped__
        seen: list = []
        hook = model.loss_fn.register_forward_hook(lambda m, inp, out: seen.append((inp[0], inp[1])))
        _, cands, stock = original(model, x, mask, 0, labels[:n])
        hook.remove()
        targets = [t for _, t in seen]
        if lever:
            dense = np.hstack([ctx.targets.toarray(), np.zeros((ctx.targets.shape[0], 1))])
            targets[-1] = torch.tensor(dense[np.asarray(rows)[:, None], cands[-1].numpy()], dtype=torch.float32)
            assert ((targets[-1] > 0) & (targets[-1] < 1)).any()
        rw = params.rw_loss
        expected = sum(rw[i] * focal(seen[i][0], targets[i]) for i in range(n))
        expected.backward()
        want = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
        model.zero_grad()

        _, _, loss = model(x, mask, 0, labels)
        assert calls == [tuple(lg.shape) for lg, _ in seen]  # every level went through the hook
        assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
        assert abs(loss.item() - stock.item()) > 1e-4
        loss.backward()
        got = {k: p.grad for k, p in model.named_parameters() if p.grad is not None}
        assert set(got) == set(want) and any(k.startswith("Cn.0") for k in got)
        for k in want:
            torch.testing.assert_close(got[k], want[k], atol=1e-6, rtol=1e-4)
        assert type(model.loss_fn).__name__ == "BCEWithLogitsLoss"


# ------------------------------------------------------------------------------------ the data


@pytest.mark.parametrize("root", ROOTS)
def test_coarse_levels_are_hard_plus_soft_support_through_the_tree(root: Path, tmp_path: Path, bert12: Path):
    adapter, ctx, spec, params = prepared(tmp_path, root, bert12, lever=True)
    with open(ctx.workdir / "data/lever/lever_clusters.pkl", "rb") as fh:
        tree = pickle.load(fh)
    depth_of = [{int(lab): c for c, m in enumerate(h.clusters) for lab in m} for h in tree["hash_map_array"]]
    with upstream(root, adapter, spec.payload):
        ds = train_set(params)
        n_coarse = len(depth_of)
        for r in range(ctx.targets.shape[0]):
            item = ds[r]
            hard = set(ctx.support[r].indices.tolist())
            union = hard | set(ctx.targets[r].indices.tolist())
            for d in range(n_coarse):
                assert item[2 + d].tolist() == sorted({depth_of[d][lab] for lab in union}), (r, d)
            assert item[2 + n_coarse].tolist() == sorted(hard)
            assert item[3 + n_coarse].tolist() == ctx.targets[r].indices.tolist()
            np.testing.assert_allclose(item[4 + n_coarse].numpy(), ctx.targets[r].data, rtol=1e-6)
        assert all(len(t) == 0 for t in ds[3][2:])  # a row with no label and no soft target


@pytest.mark.parametrize("root", ROOTS)
def test_base_rows_match_the_upstream_and_empty_rows_load(root: Path, tmp_path: Path, bert12: Path):
    import torch

    adapter, ctx, spec, params = prepared(tmp_path, root, bert12, lever=False)
    assert spec.payload["soft"] is None
    with upstream(root, adapter, spec.payload) as applied:
        ds = train_set(params)
        original = next(a.original for a in applied if a.patch.target == "dataset:MultiXMLGeneral.__getitem__")
        for r in range(ctx.targets.shape[0]):
            got = ds[r]
            if ctx.support[r].nnz == 0:  # row 3, and any other the random draw left empty
                with pytest.raises((IndexError, AssertionError)):
                    original(ds, r)  # the upstream cannot load a row with no labels
                assert all(len(t) == 0 for t in got[2:]) and got[1].sum() > 0
                continue
            want = original(ds, r)
            assert len(got) == len(want)
            for a, b in zip(got, want, strict=True):
                assert torch.equal(a, b.to(a.dtype)), r
    assert adapter.patches(spec.payload)[-1].target != "CascadeXML:CascadeXML.forward"


def test_label_tree_is_balanced_and_nested():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(37, 8))
    depth = [3, 5]
    levels = build_tree(feats, depth, seed=1)
    assert [len(lv) for lv in levels] == [8, 32]
    assert sorted(len(c) for c in levels[-1]) == sorted(leaf_sizes(37, 5))
    for lv in levels:
        assert sorted(np.concatenate(lv).tolist()) == list(range(37))
    parent = {int(lab): c for c, m in enumerate(levels[0]) for lab in m}
    for child in levels[1]:  # every fine cluster inside one coarse cluster, 4 children each
        assert len({parent[int(lab)] for lab in child}) == 1
    owners = [parent[int(c[0])] for c in levels[1]]
    assert np.bincount(owners).tolist() == [4] * 8


@pytest.mark.parametrize("num_labels", [16, 20, 57, 613, 5000, 131073])
def test_default_shape_passes_the_upstream_constraints(num_labels: int):
    depth, topk = default_shape(num_labels)
    check_shape(num_labels, depth, topk)


def test_bad_shapes_are_one_clear_error():
    for depth, topk, what in [
        ([3], [8], "2 or 3 cluster levels"),
        ([3, 3], [8, 16], "must increase"),
        ([3, 5], [8, 16], "leaf clusters for 20 labels"),
        ([3, 4], [9, 16], "topk[0] = 9"),
        ([3, 4], [8, 10], "fewer than 20"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(what)):
            check_shape(20, depth, topk)
    with pytest.raises(ConfigError, match="set both"):
        CascadeXMLAdapter(topk=[8, 16]).shape(20)


# ------------------------------------------------------------------------------------ doctor


def test_doctor_passes_on_the_standin_and_fails_on_drift(tmp_path: Path):
    r = lever("doctor", "cascadexml", "--upstream", str(STANDIN))
    assert r.returncode == 0, r.stderr
    n = len(CascadeXMLAdapter().contract())
    assert r.stdout.count("\n  ok   ") == n and "not a tested commit" in r.stdout

    fwd = "def forward(self, input_ids, attention_mask, epoch=None,"
    for edit, what in [
        (("CascadeXML.py", fwd, fwd.replace("input_ids", "ids")), "CascadeXML.CascadeXML.forward: signature changed"),
        (("dataset.py", "def __getitem__(self, idx):", "def get_item(self, idx):"),
         "dataset.MultiXMLGeneral.__getitem__: not defined"),
        (("tree.py", None, None), "tree.build_tree.load: module not found"),
    ]:  # fmt: skip
        copy = tmp_path / f"drift-{edit[0]}"
        shutil.copytree(STANDIN, copy)
        f = copy / "src" / edit[0]
        if edit[1] is None:
            f.unlink()
        else:
            assert edit[1] in f.read_text()
            f.write_text(f.read_text().replace(edit[1], edit[2]))
        r = lever("doctor", "cascadexml", "--upstream", str(copy))
        assert r.returncode == 2
        err = r.stderr.strip().splitlines()
        assert len(err) == 1 and what in err[0], r.stderr
        assert f"FAIL {what.split(':')[0]}" in r.stdout


@real_only
def test_doctor_on_the_real_checkout():
    r = lever("doctor", "cascadexml", "--upstream", REAL)
    assert r.returncode == 0, r.stderr
    assert f"tested commit {next(iter(TESTED))}" in r.stdout


# ------------------------------------------------------------------------------------ end to end


def wrap_config(
    tmp_path: Path, teacher: Path, encoder: Path, extra: str = "", epochs: int = 2, batch: int = 16
) -> Path:
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(
        f'[teacher]\nmodel = "{teacher}"\ntrain = false\nmax_len = 16\n'
        "[soft_labels]\ntau_l = 3\ntau_d = 4\nthreshold = 0.5\n[eval]\nbootstrap = 20\n"
        f'[trainer]\noptions = {{ encoder = "{encoder}", epochs = {epochs}, batch_size = {batch}, '
        f"max_len = 24 }}\n{extra}"
    )
    return cfg


def train_losses(log: Path) -> list[float]:
    return [float(v) for v in re.findall(r"Epoch: \d+,\s+Train Loss: ([0-9.]+)", log.read_text())]


def test_lever_wrap_cascadexml_on_the_standin(tmp_path: Path, tiny_model: Path, bert12: Path):
    data = write_tiny_lf(tmp_path / "tiny", n_lbl=20)
    before = {p: p.read_bytes() for p in STANDIN.rglob("*.py")}
    env = {"HF_HUB_OFFLINE": "1", "LEVER_CACHE_DIR": str(tmp_path / "cache")}
    r = lever(
        "wrap", "cascadexml", "--data", str(data), "--out", str(tmp_path / "run"), "--upstream", str(STANDIN),
        "--config", str(wrap_config(tmp_path, tiny_model, bert12)), env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    up = tmp_path / "run/lever/upstream"
    log = (up / "upstream.log").read_text()
    assert f"lever: loading encoder {bert12}" in log
    assert len(train_losses(up / "upstream.log")) == 2
    # The upstream trained on this run's blended targets (N + L rows) and its hard support.
    blended = sp.load_npz(tmp_path / "run/soft/targets.npz")
    written = sp.load_npz(up / "data/lever/lever_targets.npz")
    assert written.shape == (80, 20) and abs(written - blended).max() < 1e-6
    hard, y_aug = sp.load_npz(up / "data/lever/Y.trn.npz"), sp.load_npz(tmp_path / "run/soft/y_aug.npz")
    assert ((hard > 0) != (y_aug > 0)).nnz == 0
    m = json.loads((tmp_path / "run/lever/metrics.json").read_text())
    assert 0 <= m["P@1"] <= 1
    assert {p: p.read_bytes() for p in STANDIN.rglob("*.py")} == before


@real_only
def test_real_cascadexml_trains_on_cpu(tmp_path: Path, tiny_model: Path, bert12: Path):
    """Its own main.py/Runner on 100 debtags documents + 613 label rows, 2 epochs: the train loss falls."""
    env = {"HF_HUB_OFFLINE": "1", "LEVER_CACHE_DIR": str(tmp_path / "cache")}
    cfg = wrap_config(tmp_path, tiny_model, bert12, "[data]\nmax_train = 100\nmax_test = 40\n", epochs=2, batch=64)
    r = lever(
        "wrap", "cascadexml", "--data", str(DEBTAGS), "--out", str(tmp_path / "run"), "--upstream", REAL,
        "--config", str(cfg), "--", "--lr", "1e-3", env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    losses = train_losses(tmp_path / "run/lever/upstream/upstream.log")
    print("real CascadeXML +LEVER train losses:", losses)
    print(r.stdout[-600:])
    assert len(losses) == 2 and losses[-1] < losses[0]

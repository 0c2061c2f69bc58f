"""A loss plugin (``lever_loss`` answered by a third-party distribution) reaches every upstream loss that can
take it, in the launched upstream process, and is refused in one line (exit 2, before any stage) by the
adapters whose loss is not LEVER's to replace (xreg's C++, napkinXC). The gradients themselves are
checked against autograd in test_renee_adapter / test_elias_adapter / test_cascadexml (stand-ins, and
the real classes with LEVER_UPSTREAM_<NAME>)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import lever, make_dist

FOCAL = """
import json, os

import torch

from lever_plugins.hookspecs import hookimpl


@hookimpl
def lever_loss(logits, targets, config):
    log = os.environ.get("FOCAL_LOG")
    if log:
        with open(log, "a") as fh:
            fh.write(json.dumps({"pid": os.getpid(), "shape": list(logits.shape), "epochs": config.epochs}) + "\\n")
    p = torch.sigmoid(logits)
    ce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return (((targets * (1 - p) + (1 - targets) * p) ** 2) * ce).mean()
"""


@pytest.fixture
def focal_site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    make_dist(site, "lever-focal", "lever_focal", FOCAL)
    return site


def _env(tmp_path: Path, *paths: Path) -> dict[str, str]:
    return {
        "PYTHONPATH": os.pathsep.join([*map(str, paths), os.environ.get("PYTHONPATH", "")]),
        "LEVER_CACHE_DIR": str(tmp_path / "cache"),
        "HF_HUB_OFFLINE": "1",
        "FOCAL_LOG": str(tmp_path / "focal.log"),
    }


@pytest.mark.parametrize("adapter", ["napkinxc", "xreg"])
def test_adapters_without_a_loss_hook_refuse_a_plugin_loss(adapter: str, focal_site: Path, tmp_path: Path,
                                                           tiny_lf: Path):
    pytest.importorskip(f"lever_{adapter}")
    out = tmp_path / "run"
    extra = ["--upstream", str(tmp_path / "nowhere")] if adapter == "xreg" else []
    r = lever("ab", "--data", str(tiny_lf), "--out", str(out), "--adapter", adapter, *extra,
              env=_env(tmp_path, focal_site))  # fmt: skip
    assert r.returncode == 2, r.stderr
    (err,) = r.stderr.strip().splitlines()
    assert f"adapter {adapter!r} cannot take a plugin loss" in err and "lever_focal (distribution lever-focal)" in err
    assert "LEVER_LOAD_PLUGINS" in err
    assert not out.exists() and not (tmp_path / "focal.log").exists()  # before any stage
    # Without the plugin, the same command gets past that check (xreg: to its missing checkout).
    if adapter == "xreg":
        r = lever("ab", "--data", str(tiny_lf), "--out", str(out), "--adapter", adapter, *extra,
                  env={**_env(tmp_path, focal_site), "LEVER_LOAD_PLUGINS": "lever-xreg"})  # fmt: skip
        assert r.returncode == 2 and "cannot take a plugin loss" not in r.stderr
        assert "xreg upstream checkout not found" in r.stderr


def test_wrap_adapter_refuses_a_loss_plugin_registered_in_process_only(tmp_path: Path):
    """A plugin registered with pm.register() in this process cannot reach a launched upstream: one line."""
    from lever_renee.adapter import ReneeAdapter
    from renee_checks import STANDIN_RENEE

    from lever_plugins import plugins
    from lever_plugins.config import TrainerConfig
    from lever_plugins.errors import UpstreamError
    from lever_plugins.hookspecs import hookimpl

    class Local:
        @hookimpl
        def lever_loss(self, logits, targets, config):
            return None

    adapter = ReneeAdapter(require_cuda=False)
    adapter.check_runtime = lambda: None  # pyxclib: not what this test is about
    pm = plugins.get_plugin_manager()
    pm.register(Local(), name="local-loss")
    try:
        with pytest.raises(UpstreamError, match="local-loss are registered in this process only"):
            adapter.preflight(TrainerConfig(upstream=str(STANDIN_RENEE)))
    finally:
        pm.unregister(name="local-loss")
    adapter.preflight(TrainerConfig(upstream=str(STANDIN_RENEE)))  # fine without it


def test_renee_patches_per_arm_follow_the_plugin_loss():
    """Base arm: Renée as shipped, unless a plugin answers lever_loss (then the loss patches alone);
    +LEVER arm: the data patches plus the loss patches, given the plugin loss."""
    from lever_renee.adapter import ReneeAdapter

    adapter = ReneeAdapter(require_cuda=False)
    assert adapter.takes_loss_hook and adapter.patches({"soft": False}) == []
    payload = {"soft": True, "trn_path": "t", "targets": "x", "y_train": "y", "target_shape": [2, 3]}
    plain = {p.target for p in adapter.patches(payload)}
    assert "dl_base:GenericModel.__init__" not in plain
    adapter.plugin_loss = lambda: (lambda logits, targets: None)
    base = {p.target for p in adapter.patches({"soft": False})}
    assert base == {"dl_base:XCCollator.__call__", "dl_base:BCELossMultiNode.gather_embed",
                    "dl_base:BCELossMultiNode.xfc_backward", "dl_base:GenericModel.__init__"}  # fmt: skip
    assert {p.target for p in adapter.patches(payload)} == plain | base


def test_wrap_renee_calls_the_plugin_loss_inside_the_upstream(focal_site: Path, tiny_lf: Path, tiny_model: Path,
                                                              tmp_path: Path):
    """`lever wrap renee` on the stand-in with lever-focal installed: Renée's launched main.py (a child
    process) calls the hook once per xfc_backward chunk with the run's TrainerConfig, and the train stage
    names the plugin in the manifest (editing it recomputes the stage)."""
    from renee_checks import STANDIN_RENEE, STANDIN_XCLIB

    upstream = tmp_path / "renee"
    shutil.copytree(STANDIN_RENEE, upstream, ignore=shutil.ignore_patterns("__pycache__"))
    args = ["--tf", str(tiny_model), "--maxlen", "16", "--epochs", "2", "--batch-size", "16"]
    (tmp_path / "cfg.toml").write_text(
        f'[teacher]\nmodel = "{tiny_model}"\ntrain = false\nmax_len = 16\n'
        "[soft_labels]\ntau_l = 3\ntau_d = 4\nthreshold = 0.5\n"
        f"[trainer]\nepochs = 7\nupstream_args = {json.dumps(args)}\noptions = {{ require_cuda = false }}\n"
    )
    out = tmp_path / "run"
    r = lever("wrap", "renee", "--data", str(tiny_lf), "--out", str(out), "--upstream", str(upstream),
              "--config", str(tmp_path / "cfg.toml"), env=_env(tmp_path, focal_site, STANDIN_XCLIB))  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    calls = [json.loads(line) for line in (tmp_path / "focal.log").read_text().splitlines()]
    assert calls and len({c["pid"] for c in calls}) == 1 and calls[0]["pid"] != os.getpid()
    assert all(c["epochs"] == 7 for c in calls)  # the run's TrainerConfig reached the upstream process
    n_rows = 60 + 12  # tiny_lf: N documents + L label rows, batches of 16, 2 epochs
    assert len(calls) == 2 * -(-n_rows // 16)
    manifest = json.loads((out / "manifest.json").read_text())
    used = {u["dist"] for u in manifest["stages"]["train_lever"]["plugins"]}
    assert "lever-focal" in used


def test_wrap_elias_base_arm_calls_the_plugin_loss(focal_site: Path, tiny_model: Path, tmp_path: Path):
    """`lever wrap elias --no-lever` on the stand-in with lever-focal installed: the base arm too (ELIAS's
    stock loss otherwise) takes the plugin's loss as its classification term, inside ELIAS's train.py."""
    pytest.importorskip("lever_elias")
    from conftest import write_tiny_lf
    from test_elias_adapter import STANDIN, write_cfg

    from lever_plugins.teacher.encoder import resolve_model

    tok = tmp_path / "tok"  # a tokenizer folder whose path has no 'bert' (ELIAS would swap in bert-base's)
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(resolve_model("default")).save_pretrained(tok)
    data = write_tiny_lf(tmp_path / "tiny", n_trn=50, n_tst=12, n_lbl=112)
    options = (
        f'[trainer.options]\ntf = "{tok}"\ntf_max_len = 16\nnum_val_points = 6\n'
        "[trainer.options.elias]\nmax_leaf = 14\nbeam_size = 8\nnum_epochs = 2\n"
    )
    cfg = write_cfg(tmp_path / "cfg.toml", tiny_model, options)
    r = lever("wrap", "elias", "--data", str(data), "--out", str(tmp_path / "run"), "--config", str(cfg),
              "--upstream", str(STANDIN), "--no-lever", env=_env(tmp_path, focal_site))  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    calls = [json.loads(line) for line in (tmp_path / "focal.log").read_text().splitlines()]
    assert calls and all(c["pid"] != os.getpid() and len(c["shape"]) == 2 for c in calls)
    assert len({c["pid"] for c in calls}) == 1  # train.py's process (eval.py computes no loss)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert "lever-focal" in {u["dist"] for u in manifest["stages"]["train_base"]["plugins"]}

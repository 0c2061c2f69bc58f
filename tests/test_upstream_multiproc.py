"""Multi-process upstream runs (issue 19, item 3): ELIAS under ``accelerate launch`` and CascadeXML under
its DDP path (``--distributed``, torchrun), 2 processes on the CPU with gloo, ``[trainer.options]
processes = 2``.

Every rank writes a probe (``LEVER_PROBE_DIR``, :mod:`lever_plugins.wrap.probe`) from inside the loss's
target path: the tests assert that BOTH ranks of the +LEVER arm ran inside a 2-process group and fed
soft (0 < t < 1) targets to their loss, that the values are the run's blended targets, and — the
negative control — that both ranks of the baseline arm fed only binary targets (so the probe does not
pass whatever it sees). CI runs the stand-ins (tests/standins/); with LEVER_UPSTREAM_ELIAS /
LEVER_UPSTREAM_CASCADEXML the same runs use the real upstream code (which then needs its own imports:
wandb, pandas, pyxclib for ELIAS; pyxclib and nltk for CascadeXML).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import save_random_bert, write_tiny_lf

from lever_plugins.errors import ConfigError
from lever_plugins.wrap import probe
from lever_plugins.wrap.launch import command

pytest.importorskip("accelerate")
lever_elias = pytest.importorskip("lever_elias")
lever_cascadexml = pytest.importorskip("lever_cascadexml")

HERE = Path(__file__).parent
ELIAS_STANDIN = HERE / "standins" / "elias"
CXML_STANDIN = HERE / "standins" / "cascadexml"
ELIAS_REAL = os.environ.get("LEVER_UPSTREAM_ELIAS", "")
CXML_REAL = os.environ.get("LEVER_UPSTREAM_CASCADEXML", "")


def lever(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """The real CLI, as conftest's ``lever`` but with room for two ranks of each arm on a loaded machine."""
    return subprocess.run([sys.executable, "-m", "lever_cli", *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=1800)  # fmt: skip


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tokenizer folder whose path has no 'bert' (ELIAS would swap in bert-base-uncased's)."""
    from transformers import AutoTokenizer

    from lever_plugins.teacher.encoder import resolve_model

    path = tmp_path_factory.mktemp("enc") / "tok"
    AutoTokenizer.from_pretrained(resolve_model("default")).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def bert12(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_random_bert(tmp_path_factory.mktemp("bert12") / "bert", 16, 12, 32)


def check_probes(folder: Path, run: Path, adapter: str) -> None:
    """Both ranks of each arm ran in a 2-process group; +LEVER ranks fed the run's soft targets to the loss,
    baseline ranks only binary ones."""
    recs = [r for r in probe.read(folder) if r["adapter"] == adapter]
    arms = {r["arm"] for r in recs}
    assert arms == {"base", "lever"}, recs
    stored = sp.load_npz(run / "soft" / "targets.npz").data
    soft_values = np.unique(np.round(stored[(stored > 0) & (stored < 1)], 5))
    assert soft_values.size > 0
    for arm in ("base", "lever"):
        ranks = [r for r in recs if r["arm"] == arm]
        assert sorted(r["rank"] for r in ranks) == [0, 1], ranks
        assert all(r["world_size"] == 2 for r in ranks), ranks
        assert len({r["pid"] for r in ranks}) == 2
        assert all(r["calls"] > 0 for r in ranks), ranks
        for r in ranks:
            if arm == "base":
                assert r["nonbinary_values"] == 0 and r["nonbinary_calls"] == 0, r
            else:
                assert r["nonbinary_calls"] > 0 and r["nonbinary_values"] > 0, r
                # the soft values in the loss are the run's blended targets (not any fraction)
                for v in r["example"]:
                    assert np.min(np.abs(soft_values - v)) < 1e-4, (v, r)


# ----------------------------------------------------------------------------------------- launcher


def test_launch_commands_and_processes_option(tmp_path: Path):
    one = command(tmp_path / "s.json")
    assert one[1:] == ["-m", "lever_plugins.wrap.run", str(tmp_path / "s.json")]
    acc = command(tmp_path / "s.json", 2, "accelerate")
    assert acc[1:3] == ["-m", "accelerate.commands.launch"] and "--multi_gpu" in acc
    assert acc[acc.index("--num_processes") + 1] == "2" and acc[-3:] == ["--module", *one[2:]]
    tr = command(tmp_path / "s.json", 2, "torchrun")
    assert tr[1:3] == ["-m", "torch.distributed.run"] and "--nproc-per-node=2" in tr and tr[-3:] == one[1:]
    from lever_cascadexml.adapter import CascadeXMLAdapter
    from lever_elias.adapter import EliasAdapter

    for factory in (EliasAdapter, CascadeXMLAdapter):
        for bad in (0, -1, 1.5, True, "2"):
            with pytest.raises(ConfigError, match="processes"):
                factory(processes=bad)
        assert factory(processes=2).processes == 2


# ------------------------------------------------------------------------------------------- ELIAS


def elias_cfg(path: Path, teacher: Path, tok: Path) -> Path:
    path.write_text(
        f'[data]\ntext = "title+content"\n[encoder]\nmax_len = 16\n'
        f'[teacher]\nmodel = "{teacher}"\ntrain = false\nmax_len = 16\n'
        "[soft_labels]\ntau_l = 3\ntau_d = 4\nthreshold = 0.5\n[eval]\nbootstrap = 20\n"
        f'[trainer]\nadapter = "elias"\n'
        f'[trainer.options]\ntf = "{tok}"\ntf_max_len = 16\nnum_val_points = 6\nprocesses = 2\n'
        "[trainer.options.elias]\nmax_leaf = 14\nbeam_size = 8\nnum_epochs = 1\nbsz = 16\n"
    )
    return path


def run_elias(tmp_path: Path, upstream: str, teacher: Path, tok: Path, extra_env: dict[str, str]) -> Path:
    data = write_tiny_lf(tmp_path / "tiny", n_trn=50, n_tst=12, n_lbl=112)
    cfg = elias_cfg(tmp_path / "cfg.toml", teacher, tok)
    env = {"HF_HUB_OFFLINE": "1", "LEVER_CACHE_DIR": str(tmp_path / "cache"),
           "LEVER_PROBE_DIR": str(tmp_path / "probe"), "OMP_NUM_THREADS": "1", **extra_env}  # fmt: skip
    out = tmp_path / "ab"
    r = lever("ab", "--data", str(data), "--out", str(out), "--config", str(cfg), "--upstream", upstream, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def test_elias_two_processes_under_accelerate_every_rank_sees_soft_values(
    tmp_path: Path, tiny_model: Path, tok_dir: Path
):
    out = run_elias(tmp_path, str(ELIAS_STANDIN), tiny_model, tok_dir, {})
    check_probes(tmp_path / "probe", out, "elias")
    log = (out / "lever" / "upstream" / "upstream.log").read_text()
    assert log.count("Mean loss after epoch") == 1  # the main process logs, once per epoch
    assert (out / "lever" / "upstream" / "Results/LEVER/lever/lever/tst_score_mat.npz").is_file()


@pytest.mark.skipif(not ELIAS_REAL, reason="set LEVER_UPSTREAM_ELIAS to an ELIAS checkout (commit 724b5fe)")
def test_real_elias_two_processes_under_accelerate(tmp_path: Path, tok_dir: Path):
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    enc = tmp_path / "enc768"  # ELIAS pools 768-d: a 1-layer random BERT of that width, path without 'bert'
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=768, num_hidden_layers=1, num_attention_heads=12,
                         intermediate_size=256, max_position_embeddings=64)).save_pretrained(enc)  # fmt: skip
    tok.save_pretrained(enc)
    out = run_elias(tmp_path, ELIAS_REAL, enc, enc, {"WANDB_MODE": "disabled"})
    check_probes(tmp_path / "probe", out, "elias")


# -------------------------------------------------------------------------------------- CascadeXML


def cxml_cfg(tmp_path: Path, teacher: Path, encoder: Path, extra: str = "", epochs: int = 1) -> Path:
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(
        f'[teacher]\nmodel = "{teacher}"\ntrain = false\nmax_len = 16\n'
        "[soft_labels]\ntau_l = 3\ntau_d = 4\nthreshold = 0.5\n[eval]\nbootstrap = 20\n"
        f'[trainer]\nadapter = "cascadexml"\noptions = {{ encoder = "{encoder}", epochs = {epochs}, batch_size = 16, '
        f"max_len = 24, processes = 2 }}\n{extra}"
    )
    return cfg


def run_cxml(tmp_path: Path, upstream: str, teacher: Path, encoder: Path, extra: str = "", data: Path | None = None,
             epochs: int = 1):
    data = data or write_tiny_lf(tmp_path / "tiny", n_lbl=20)
    env = {"HF_HUB_OFFLINE": "1", "LEVER_CACHE_DIR": str(tmp_path / "cache"),
           "LEVER_PROBE_DIR": str(tmp_path / "probe"), "OMP_NUM_THREADS": "1"}  # fmt: skip
    out = tmp_path / "ab"
    r = lever("ab", "--data", str(data), "--out", str(out), "--upstream", upstream,
              "--config", str(cxml_cfg(tmp_path, teacher, encoder, extra, epochs)), env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def test_cascadexml_ddp_two_processes_every_rank_sees_soft_values(tmp_path: Path, tiny_model: Path, bert12: Path):
    out = run_cxml(tmp_path, str(CXML_STANDIN), tiny_model, bert12)
    check_probes(tmp_path / "probe", out, "cascadexml")
    log = (out / "lever" / "upstream" / "upstream.log").read_text()
    assert "backend=gloo" in log  # the upstream's own DDP set-up, on the CPU
    assert list((out / "lever" / "upstream").glob("lever_bert-base_*_preds.npz"))  # rank 0 tested


@pytest.mark.skipif(not CXML_REAL, reason="set LEVER_UPSTREAM_CASCADEXML to a cascadexml checkout (ce701f6)")
def test_real_cascadexml_ddp_two_processes(tmp_path: Path, tiny_model: Path, bert12: Path):
    from conftest import DEBTAGS

    # two epochs: the upstream's three-phase LR schedule needs more than one
    out = run_cxml(tmp_path, CXML_REAL, tiny_model, bert12, "[data]\nmax_train = 100\nmax_test = 40\n", DEBTAGS, 2)
    check_probes(tmp_path / "probe", out, "cascadexml")

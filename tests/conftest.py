"""Shared fixtures. HF runs offline in every test: no hub access, ever."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DEBTAGS = ROOT / "data" / "debtags-bookworm"
WORDNET = SHARED / "data" / "wordnet-hypernyms-lf"

WORDS = [
    "audio", "video", "network", "game", "editor", "library", "python", "perl", "kernel", "font",
    "science", "math", "chess", "music", "web", "server", "client", "shell", "graphics", "database",
]  # fmt: skip


def write_tiny_lf(folder: Path, n_trn: int = 60, n_tst: int = 20, n_lbl: int = 12, seed: int = 0) -> Path:
    """A tiny LF json.gz data set whose documents mention their labels' words (learnable, long-tailed)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    lbl_words = [WORDS[i % len(WORDS)] for i in range(n_lbl)]
    freq = 1.0 / np.arange(1, n_lbl + 1)  # Zipf: a head and a tail
    freq /= freq.sum()

    def docs(n: int, prefix: str) -> list[dict]:
        out = []
        for i in range(n):
            k = int(rng.integers(1, 4))
            labs = sorted(set(rng.choice(n_lbl, size=k, p=freq).tolist()))
            words = [lbl_words[j] for j in labs] + [str(w) for w in rng.choice(WORDS, 2)]
            out.append(
                {
                    "uid": f"{prefix}{i}",
                    "title": " ".join(words),
                    "content": f"tool number {i}",
                    "target_ind": labs,
                    "target_rel": [1.0] * len(labs),
                }
            )
        return out

    def dump(name: str, rows: list[dict]) -> None:
        with gzip.open(folder / name, "wt", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps(r) + "\n")

    dump("trn.json.gz", docs(n_trn, "d"))
    dump("tst.json.gz", docs(n_tst, "t"))
    dump(
        "lbl.json.gz",
        [{"uid": f"l{j}", "title": f"{w} software", "content": f"programs about {w}"} for j, w in enumerate(lbl_words)],
    )
    return folder


@pytest.fixture(scope="module")
def one_torch_thread():
    """The test machine's cores are shared: one thread avoids OpenMP contention (10x slower steps)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def save_random_bert(path: Path, hidden_size: int = 32, num_hidden_layers: int = 2, intermediate_size: int = 64):
    """A random BERT with the MiniLM (BERT-uncased) tokenizer, saved at ``path``: fast, offline."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from lever_plugins.teacher.encoder import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model("default"))
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=tok.vocab_size, hidden_size=hidden_size, num_hidden_layers=num_hidden_layers,
        num_attention_heads=2, intermediate_size=intermediate_size, max_position_embeddings=64,
    )  # fmt: skip
    BertModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random BERT with the MiniLM tokenizer: fast, and a second architecture to compare."""
    return save_random_bert(tmp_path_factory.mktemp("tiny") / "bert")


@pytest.fixture
def tiny_lf(tmp_path: Path) -> Path:
    return write_tiny_lf(tmp_path / "tiny")


def lever(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the real ``lever`` CLI in a subprocess (exit codes and stderr as a user sees them)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "lever_cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=600,
    )


def make_dist(site: Path, dist: str, module: str, source: str, version: str = "0.3.0") -> None:
    """A minimal installed distribution: a module plus its .dist-info with a `lever` entry point."""
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[lever]\n{module} = {module}\n")


def arm_for(x_train, targets, x_test, seed: int, texts=None, workdir: Path | None = None, **kw):
    """A :class:`lever_plugins.adapter.Arm` for direct adapter calls (what ``stages.make_arm`` builds in a run):
    ``targets`` also serve as support and train truth; the test truth is empty unless given."""
    import scipy.sparse as sp

    from lever_plugins.adapter import Arm

    y = sp.csr_matrix(targets, dtype=np.float32)
    n_tst = len(texts[1]) if texts is not None else np.asarray(x_test).shape[0]
    trn, tst = texts if texts is not None else ([""] * y.shape[0], [""] * n_tst)
    values = {
        "name": "base", "workdir": workdir or Path("unused"), "targets": y, "support": y, "y_train": y,
        "y_test": sp.csr_matrix((n_tst, y.shape[1]), dtype=np.float32), "trn_texts": list(trn),
        "tst_texts": list(tst), "lbl_texts": [], "tst_filter": np.zeros((0, 2), np.int64), "seed": seed,
        "x_train": x_train, "x_test": x_test,
    }  # fmt: skip
    return Arm(**{**values, **kw})

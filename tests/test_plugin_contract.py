"""The plugin contract as documented (hookspecs.py, docs/design.md): a plugin written from the docs alone,
options for every factory checked before any stage, a failing plugin named in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import lever, make_dist

from lever_plugins import plugins

# Written from the hookspec docstrings only: factory(config, seed=seed, **options), preflight(), fit(...), embed.
DOCS_SRC = '''
import hashlib
import os
import numpy as np
from lever_plugins import hookimpl


class WordTeacher:
    def __init__(self, config, seed, dim=8, fail_in=""):
        self.dim, self.seed, self.fail_in = dim, seed, fail_in

    def preflight(self):
        if self.fail_in == "preflight":
            raise KeyError("no such model")

    def fit(self, doc_texts, lbl_texts, y, workdir, resume=True):
        if self.fail_in == "fit":
            1 / 0
        return {"dim": self.dim, "seed": self.seed, "docs": len(doc_texts)}

    def embed(self, texts):
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.split():
                out[i, int(hashlib.sha1(w.encode()).hexdigest(), 16) % self.dim] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


@hookimpl
def lever_register_teachers(register):
    register("words", WordTeacher)
'''


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    s = tmp_path / "site"
    make_dist(s, "lever-words", "lever_words", DOCS_SRC)
    monkeypatch.syspath_prepend(str(s))
    plugins.reset()
    yield s
    plugins.reset()


def _soften(site: Path, tmp_path: Path, tiny_lf: Path, toml: str, **env: str):
    cfg = tmp_path / "cfg.toml"
    cfg.write_text('seed = 4\n[teacher]\nname = "words"\n[soft_labels]\ntau_l = 3\nthreshold = 0.5\n' + toml)
    out = tmp_path / "run"
    r = lever("soften", "--data", str(tiny_lf), "--out", str(out), "--config", str(cfg),
              env={"PYTHONPATH": str(site), **env})  # fmt: skip
    return r, out


def test_teacher_from_the_docs_gets_its_options(site: Path, tmp_path: Path, tiny_lf: Path):
    r, out = _soften(site, tmp_path, tiny_lf, "[teacher.options]\ndim = 16\n")
    assert r.returncode == 0, r.stderr
    stage = json.loads((out / "manifest.json").read_text())["stages"]["teacher"]
    assert stage["stats"] == {"dim": 16, "seed": 4, "docs": 60}  # seed: the run's, as documented
    assert stage["plugins"][0]["dist"] == "lever-words" and len(stage["plugins"][0]["sha256"]) == 64


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[teacher.options]\nsize = 16\n", "teacher 'words' does not take options ['size'] (distribution lever-words)"),
        ("[soft_labels.options]\nmin_cooc = 0.2\n", "soft-label provider 'knn' does not take options ['min_cooc']"),
    ],
)
def test_unknown_options_fail_before_any_stage(site: Path, tmp_path: Path, tiny_lf: Path, toml: str, message: str):
    r, out = _soften(site, tmp_path, tiny_lf, toml)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert message in r.stderr and r.stderr.startswith("error: [")
    assert not out.exists()


@pytest.mark.parametrize(("where", "exc"), [("preflight", "KeyError: 'no such model'"), ("fit", "ZeroDivisionError")])
def test_a_failing_plugin_is_one_line_naming_it(site: Path, tmp_path: Path, tiny_lf: Path, where: str, exc: str):
    """A bug in a plugin: exit 3 (not the user's input, not lever's own bug either: the line names the plugin)."""
    r, _ = _soften(site, tmp_path, tiny_lf, f'[teacher.options]\nfail_in = "{where}"\n')
    assert r.returncode == 3 and r.stderr.count("\n") == 1, r.stderr
    line = f"'words' (plugin lever_words, distribution lever-words 0.3.0) failed in {where}: {exc}"
    assert line in r.stderr and "Traceback" not in r.stderr and "LEVER_DEBUG=1" in r.stderr
    r, _ = _soften(site, tmp_path, tiny_lf, f'[teacher.options]\nfail_in = "{where}"\n', LEVER_DEBUG="1")
    assert r.returncode == 3 and "Traceback" in r.stderr and "lever_words.py\", line" in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: ") and line in r.stderr.strip().splitlines()[-1]


def test_baseline_options_are_checked_before_the_run_folder(tmp_path: Path, tiny_lf: Path):
    from lever_plugins import config
    from lever_plugins.errors import ConfigError
    from lever_plugins.runner import run_ab

    values = {"data": {"path": str(tiny_lf)}, "eval": {"baselines": ["rerank"]}, "baselines": {"rerank": {"a": 1}}}
    with pytest.raises(ConfigError, match=r"baseline 'rerank' does not take options \['a'\]"):
        run_ab(config.from_dict(values), tmp_path / "run", log=lambda s: None)
    values = {"data": {"path": str(tiny_lf)}, "baselines": {"ensemble": {}}}
    with pytest.raises(ConfigError, match="options for baseline 'ensemble', which this run does not use"):
        run_ab(config.from_dict(values), tmp_path / "run", log=lambda s: None)
    assert not (tmp_path / "run").exists()

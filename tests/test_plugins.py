"""Plugin loading through real entry points of another distribution (a dist-info on sys.path)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import lever, make_dist

from lever_plugins import plugins
from lever_plugins.errors import PluginError

PLUGIN_SRC = '''
import json, os
import numpy as np
import scipy.sparse as sp
from lever_plugins import hookimpl


class HashTeacher:
    """Deterministic bag-of-words embeddings: no torch, so the run is instant."""

    def __init__(self, config, seed=0):
        self.config = config

    def preflight(self):
        pass  # no model to resolve

    def fit(self, doc_texts, lbl_texts, y, workdir, resume=True):
        return {"fitted": True}

    def embed(self, texts):
        out = np.zeros((len(texts), 64), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.split():
                out[i, hash(w) % 64] += 1.0
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)
        return out


@hookimpl
def lever_register_teachers(register):
    register("hash-teacher", HashTeacher)


@hookimpl
def lever_blend_targets(y, soft, config):
    # Marks its answer: every teacher entry becomes 0.123, ground truth stays 1.
    s = soft.copy().tocsr()
    s.data[:] = 0.123
    return (y + s).tocsr().astype(np.float32)


@hookimpl
def lever_run_event(run, event, payload):
    with open(os.environ["DEMO_EVENTS"], "a") as fh:
        fh.write(json.dumps({"event": event, "stage": payload.get("stage")}) + "\\n")
'''

CONFLICT_SRC = '''
from lever_plugins import hookimpl

@hookimpl
def lever_register_teachers(register):
    register("siamese", object)
'''


@pytest.fixture
def demo_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    site = tmp_path / "site"
    make_dist(site, "lever-demo-plugin", "lever_demo_plugin", PLUGIN_SRC)
    monkeypatch.syspath_prepend(str(site))
    plugins.reset()
    yield site
    plugins.reset()


def test_builtin_registered_through_hooks():
    plugins.reset()
    assert set(plugins.teachers()) >= {"siamese"}
    assert set(plugins.soft_label_providers()) >= {"knn"}
    assert "builtin" in plugins.adapters()
    assert plugins.teachers()["siamese"].dist == "lever-plugins"


def test_third_party_plugin_listed_in_process(demo_site: Path):
    reg = plugins.teachers()
    assert reg["hash-teacher"].dist == "lever-demo-plugin"
    assert reg["hash-teacher"].version == "0.3.0"
    assert reg["siamese"].dist == "lever-plugins"


def test_third_party_plugin_listed_by_cli(demo_site: Path):
    r = lever("plugins", env={"PYTHONPATH": str(demo_site)})
    assert r.returncode == 0, r.stderr
    assert "hash-teacher  (lever-demo-plugin 0.3.0)" in r.stdout
    assert "lever_demo_plugin  (lever-demo-plugin 0.3.0)" in r.stdout
    # LEVER_LOAD_PLUGINS restricts third-party loading; an empty list loads built-ins only.
    r = lever("plugins", env={"PYTHONPATH": str(demo_site), "LEVER_LOAD_PLUGINS": ""})
    assert r.returncode == 0 and "hash-teacher" not in r.stdout and "siamese" in r.stdout


def test_duplicate_name_is_one_clear_error(tmp_path: Path, demo_site: Path):
    make_dist(demo_site, "lever-evil", "lever_evil", CONFLICT_SRC, version="1.0")
    plugins.reset()
    with pytest.raises(PluginError) as exc:
        plugins.teachers()
    msg = exc.value.line()
    assert "'siamese'" in msg and "lever-plugins" in msg and "lever-evil" in msg
    r = lever("plugins", env={"PYTHONPATH": str(demo_site)})
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "lever-evil" in r.stderr and "Traceback" not in r.stderr


def test_third_party_plugin_used_by_a_run(tmp_path: Path, demo_site: Path, tiny_lf: Path):
    import scipy.sparse as sp

    cfg = tmp_path / "cfg.toml"
    cfg.write_text('[teacher]\nname = "hash-teacher"\n[soft_labels]\ntau_l = 3\nthreshold = 0.5\n')
    events = tmp_path / "events.jsonl"
    out = tmp_path / "run"
    r = lever(
        "soften", "--data", str(tiny_lf), "--out", str(out), "--config", str(cfg),
        env={"PYTHONPATH": str(demo_site), "DEMO_EVENTS": str(events)},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    targets = sp.load_npz(out / "soft" / "targets.npz")
    soft = sp.load_npz(out / "soft" / "soft.npz")
    assert soft.nnz > 0, "the hash teacher found no neighbours: the test data is too weak"
    vals = {round(float(v), 6) for v in targets.data}
    assert vals == {1.0, 0.123}  # the plugin's blend won over the built-in default
    seen = [json.loads(line) for line in events.read_text().splitlines()]
    assert {"event": "stage_end", "stage": "teacher"} in seen
    assert {"event": "stage_end", "stage": "soft_labels"} in seen
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stages"]["teacher"]["stats"] == {"fitted": True}

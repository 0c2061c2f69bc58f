"""`lever new-plugin`: one distribution of each kind, its own test, found through a real entry point, used by
`lever ab`; and the stage cache sees a plugin's source (editing it recomputes exactly the stages it answers)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import lever

from lever_plugins.scaffold import KINDS, names

DISTS = {kind: f"lever-my-{kind}" for kind in KINDS}


def _install(site: Path, root: Path, dist: str) -> None:
    """As `pip install --no-deps` leaves it: the package importable, a .dist-info with the `lever` entry point
    copied from the generated pyproject (what setuptools writes), so importlib.metadata finds the plugin."""
    module = names(dist)[0]
    (site / module).symlink_to(root / module, target_is_directory=True)
    info = site / f"{module}-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1.0\n")
    eps = re.search(r"\[project\.entry-points\.lever\]\n(.+?)\n", (root / "pyproject.toml").read_text()).group(1)
    (info / "entry_points.txt").write_text(f"[lever]\n{eps.replace(chr(34), '')}\n")


@pytest.fixture(scope="module")
def scaffolded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    base = tmp_path_factory.mktemp("scaffold")
    roots = {kind: base / kind for kind in KINDS}
    for kind, root in roots.items():
        r = lever("new-plugin", DISTS[kind], "--kind", kind, "--out", str(root))
        assert r.returncode == 0, r.stderr
    site = base / "site"
    site.mkdir()
    for kind, root in roots.items():
        _install(site, root, DISTS[kind])
    return site, roots


def test_each_generated_test_passes(scaffolded):
    """The scaffold's own tests, run as their author would (pytest in the distributions, plugin importable)."""
    site, roots = scaffolded
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *(str(p / "tests") for p in roots.values())],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(site)}, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{len(KINDS)} passed" in r.stdout


def test_refuses_a_used_folder_and_a_bad_name(tmp_path: Path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    r = lever("new-plugin", "lever-a", "--kind", "loss", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "not empty" in r.stderr
    assert os.listdir(tmp_path / "x") == ["keep.txt"]
    r = lever("new-plugin", "lever a!", "--kind", "loss", "--out", str(tmp_path / "y"))
    assert r.returncode == 2 and "not a distribution name" in r.stderr and not (tmp_path / "y").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["x"]  # no temporary folder left behind


def test_listed_by_lever_plugins(scaffolded):
    site, _ = scaffolded
    r = lever("plugins", "--json", env={"PYTHONPATH": str(site)})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    dists = {p["dist"] for p in out["plugins"]}
    assert set(DISTS.values()) <= dists
    assert out["teachers"]["my-teacher"]["dist"] == "lever-my-teacher"
    assert out["soft_label_providers"]["my-soft-labels"]["dist"] == "lever-my-soft-labels"
    assert out["adapters"]["my-adapter"]["dist"] == "lever-my-adapter"
    assert out["baselines"]["my-baseline"]["dist"] == "lever-my-baseline"
    hooks = {p["dist"]: p["hooks"] for p in out["plugins"]}
    assert hooks["lever-my-loss"] == ["lever_loss"] and hooks["lever-my-observer"] == ["lever_run_event"]


def _stages(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())["stages"]


def _cached(stdout: str) -> set[str]:
    return set(re.findall(r"^\[(\w+)\] [\d.]+s \(cached\)$", stdout, flags=re.M))


def _config(path: Path, tiny_model: Path, **trainer: str) -> Path:
    lines = [
        "seed = 5",
        f'[encoder]\nmodel = "{tiny_model}"\nmax_len = 16',
        '[teacher]\nname = "my-teacher"\n[teacher.options]\ndim = 16',
        '[soft_labels]\nprovider = "my-soft-labels"\ntau_l = 3\nthreshold = 0.5\n[soft_labels.options]\nscale = 0.5',
        "[trainer]\nepochs = 2\nbatch_size = 32\ntop_k = 5\n" + "".join(f'{k} = "{v}"\n' for k, v in trainer.items()),
        '[eval]\nbootstrap = 20\nbaselines = ["my-baseline"]\n[baselines.my-baseline]\ntop_k = 3',
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_used_by_lever_ab(scaffolded, tmp_path: Path, tiny_lf: Path, tiny_model: Path):
    """Teacher, provider, adapter, baseline and observer from the scaffold in one A/B, options from the config."""
    site, _ = scaffolded
    cfg = _config(tmp_path / "cfg.toml", tiny_model, adapter="my-adapter")
    out = tmp_path / "run"
    env = {"PYTHONPATH": str(site), "LEVER_LOAD_PLUGINS": ",".join(d for k, d in DISTS.items() if k != "loss")}
    r = lever("ab", "--data", str(tiny_lf), "--out", str(out), "--config", str(cfg), env=env)
    assert r.returncode == 0, r.stderr
    stages = _stages(out)
    assert stages["teacher"]["stats"] == {"trained": False, "dim": 16}  # [teacher.options] reached the factory
    assert stages["soft_labels"]["stats"]["scale"] == 0.5  # and [soft_labels.options]
    assert stages["train_lever"]["stats"] == {"rows": 60 + 12}  # the adapter trained on the N + L rows
    assert [p["dist"] for p in stages["teacher"]["plugins"]] == ["lever-my-teacher"]
    assert {p["dist"] for p in stages["train_base"]["plugins"]} == {"lever-my-adapter", "lever-plugins"}
    assert "| my-baseline (label popularity) |" in (out / "compare.md").read_text()
    events = [json.loads(x) for x in (out / "lever_my_observer.jsonl").read_text().splitlines()]
    assert {e["stage"] for e in events if e["event"] == "stage_end"} >= {"teacher", "soft_labels", "train_lever"}


def test_editing_a_plugin_recomputes_exactly_its_stages(scaffolded, tmp_path: Path, tiny_lf: Path, tiny_model: Path):
    """The loss plugin answers lever_loss, used by the train stages only: after editing its source on disk, a
    re-run in the same folder retrains both arms and reuses the teacher and soft labels. Editing the teacher
    recomputes the teacher, the soft labels and the +LEVER arm; the base arm never sees the teacher."""
    site, roots = scaffolded
    cfg = _config(tmp_path / "cfg.toml", tiny_model, adapter="builtin")
    out = tmp_path / "run"
    env = {"PYTHONPATH": str(site)}

    def ab() -> subprocess.CompletedProcess:
        r = lever("ab", "--data", str(tiny_lf), "--out", str(out), "--config", str(cfg), env=env)
        assert r.returncode == 0, r.stderr
        return r

    ab()
    first = _stages(out)
    assert "lever-my-loss" in {p["dist"] for p in first["train_lever"]["plugins"]}
    assert "lever-my-loss" not in {p["dist"] for p in first["soft_labels"]["plugins"]}
    assert _cached(ab().stdout) >= {"teacher", "soft_labels", "train_base", "train_lever"}  # nothing changed

    plugin = roots["loss"] / "lever_my_loss" / "plugin.py"
    plugin.write_text(plugin.read_text().replace("POS_WEIGHT = 2.0", "POS_WEIGHT = 3.0"))
    cached = _cached(ab().stdout)
    second = _stages(out)
    assert {"teacher", "soft_labels"} <= cached and not {"train_base", "train_lever"} & cached
    for s in ("train_base", "train_lever"):
        assert second[s]["key"] != first[s]["key"]
        old = {p["dist"]: p.get("sha256") for p in first[s]["plugins"]}
        new = {p["dist"]: p.get("sha256") for p in second[s]["plugins"]}
        assert old["lever-my-loss"] != new["lever-my-loss"] and old["lever-plugins"] == new["lever-plugins"]
    assert second["teacher"]["key"] == first["teacher"]["key"]

    teacher = roots["teacher"] / "lever_my_teacher" / "plugin.py"
    teacher.write_text(teacher.read_text() + "\n# edited\n")
    cached = _cached(ab().stdout)
    assert "train_base" in cached and not {"teacher", "soft_labels", "train_lever"} & cached


def test_scaffolded_packages_are_ruff_clean(scaffolded):
    """Each generated distribution passes ruff under its own pyproject's rules (import order included)."""
    import shutil

    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    if not Path(ruff).exists():
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    _, roots = scaffolded
    for kind, root in roots.items():
        r = subprocess.run([ruff, "check", "--no-cache", "."], cwd=root, capture_output=True, text=True)
        assert r.returncode == 0, f"{kind}: {r.stdout}{r.stderr}"
        r = subprocess.run([ruff, "check", "--no-cache", "--select", "I", "--isolated", "--line-length", "120",
                            "--config", f"lint.isort.known-first-party = ['{names(DISTS[kind])[0]}']", "."],
                           cwd=root, capture_output=True, text=True)  # fmt: skip
        assert r.returncode == 0, f"{kind}: {r.stdout}{r.stderr}"

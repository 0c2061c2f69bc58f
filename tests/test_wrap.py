"""The wrap framework on a toy upstream written here: static contract, reversible patches, the
launcher (patches active in spawn-started children), `lever wrap`, `lever doctor`, `lever ab --adapter`.

The toy upstream behaves like the real ones where it matters: it reads the XC text target file with
its own reader, binarises every stored value in its loss (as Renée's fast path does), and trains in a
``multiprocessing`` child started with the spawn method.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import lever, make_dist

from lever_plugins import plugins
from lever_plugins.errors import UpstreamError
from lever_plugins.wrap import Patch, Symbol, check_contract, identify_commit, patched
from lever_plugins.wrap.contract import file_digest
from lever_plugins.wrap.patching import install_on_import

TOY_LIB = '''
"""A toy XC trainer: each label's score is the sum of its (binarised) targets."""


def read_targets(path):
    with open(path) as fh:
        n_rows, n_cols = map(int, fh.readline().split())
        rows = []
        for line in fh:
            rows.append({int(k): float(v) for k, v in (p.split(":") for p in line.split())})
    return rows, n_cols


class Trainer:
    def __init__(self, n_labels):
        self.w = [0.0] * n_labels

    def target_value(self, value):
        return 1.0  # like Renee's fast path: every stored entry counts as 1

    def fit(self, rows):
        for row in rows:
            for j, v in row.items():
                self.w[j] += self.target_value(v)
        return self.w
'''

TOY_MAIN = '''
import json
import multiprocessing as mp
import os
import sys

from toylib import *


def work(path, out):
    rows, n = read_targets(path)
    w = Trainer(n).fit(rows)
    with open(out, "w") as fh:
        json.dump({"w": w, "pid": os.getpid()}, fh)


if __name__ == "__main__":
    trn, n_test, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    ctx = mp.get_context("spawn")
    p = ctx.Process(target=work, args=(trn, out + ".child"))
    p.start()
    p.join()
    assert p.exitcode == 0, p.exitcode
    with open(out + ".child") as fh:
        child = json.load(fh)
    with open(out, "w") as fh:
        json.dump({"w": child["w"], "n_test": n_test, "parent": os.getpid(), "child": child["pid"]}, fh)
'''

TOY_ADAPTER = '''
import json
import numpy as np
import scipy.sparse as sp
from lever_plugins import hookimpl
from lever_plugins.data import write_sparse
from lever_plugins.wrap import LaunchSpec, Patch, Symbol, WrapAdapter

TESTED = json.loads(%r)


def keep_value(original):
    def target_value(self, value):
        return float(value)
    return target_value


class ToyAdapter(WrapAdapter):
    name = "toy"
    upstream = "https://example.org/toy"
    tested = TESTED

    def contract(self):
        return [
            Symbol("toylib", "read_targets", ("path",), why="reads the target file"),
            Symbol("toylib", "Trainer.target_value", ("self", "value"), why="soft values survive"),
            Symbol("main", "work", ("path", "out"), why="the spawned worker"),
        ]

    def prepare(self, ctx):
        path = ctx.workdir / "trn_X_Y.txt"
        write_sparse(path, ctx.targets)
        return LaunchSpec(
            script="main.py",
            argv=[str(path), str(len(ctx.tst_texts)), str(ctx.workdir / "out.json")],
            payload={"soft": ctx.lever and self.options.get("soft", True)},
        )

    def patches(self, payload):
        return [Patch("toylib:Trainer.target_value", keep_value)] if payload["soft"] else []

    def collect(self, ctx, spec):
        w = np.asarray(json.load(open(ctx.workdir / "out.json"))["w"], dtype=np.float32)
        return sp.csr_matrix(np.tile(w, (len(ctx.tst_texts), 1)))


@hookimpl
def lever_register_adapters(register):
    register("toy", ToyAdapter)
'''


def write_toy(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "toylib.py").write_text(textwrap.dedent(TOY_LIB))
    (root / "main.py").write_text(textwrap.dedent(TOY_MAIN))
    return root


def toy_fingerprint(root: Path) -> dict[str, dict[str, str]]:
    return {"c0ffee" + "0" * 34: {f: file_digest(root / f) for f in ("toylib.py", "main.py")}}


@pytest.fixture
def toy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model: Path) -> tuple[Path, Path]:
    upstream = write_toy(tmp_path / "toy-upstream")
    # A tiny random encoder as the (untrained) teacher keeps the LEVER stages to a second.
    (tmp_path / "cfg.toml").write_text(
        f'[teacher]\nmodel = "{tiny_model}"\ntrain = false\nmax_len = 16\n'
        "[soft_labels]\ntau_l = 3\ntau_d = 4\nthreshold = 0.5\n[eval]\nbootstrap = 50\n"
    )
    site = tmp_path / "site"
    make_dist(site, "lever-toy", "lever_toy", TOY_ADAPTER % json.dumps(toy_fingerprint(upstream)))
    monkeypatch.syspath_prepend(str(site))
    plugins.reset()
    yield upstream, site
    plugins.reset()


def env_with(site: Path) -> dict[str, str]:
    return {
        "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
        "HF_HUB_OFFLINE": "1",
        "LEVER_CACHE_DIR": str(site.parent / "cache"),
    }


# ------------------------------------------------------------------------------------------ contract


def test_contract_finds_drift(tmp_path: Path):
    root = write_toy(tmp_path / "up")
    syms = [
        Symbol("toylib", "read_targets", ("path",)),
        Symbol("toylib", "Trainer.target_value", ("self", "value")),
        Symbol("toylib", "Trainer"),
        Symbol("main", "work", ("path", "out")),
    ]
    assert check_contract(root, syms) == []

    lib = (root / "toylib.py").read_text()
    (root / "toylib.py").write_text(lib.replace("def target_value(self, value)", "def target_value(self, v, w=1)"))
    (root / "main.py").write_text((root / "main.py").read_text().replace("def work(", "def run_worker("))
    problems = {str(p.symbol): p.what for p in check_contract(root, syms)}
    assert problems == {
        "toylib.Trainer.target_value": "signature changed: expected (self, value), found (self, v, w)",
        "main.work": "not defined",
    }
    (root / "toylib.py").unlink()
    assert [p.what for p in check_contract(root, syms[:1])] == ["module not found"]
    (root / "toylib.py").write_text("def read_targets(path:\n")
    assert "does not parse" in check_contract(root, syms[:1])[0].what


def test_contract_sees_variadics_and_later_definitions(tmp_path: Path):
    (tmp_path / "m.py").write_text("def f(a):\n    pass\n\ndef f(a, *rest, key=None, **kw):\n    pass\nTABLE = {}\n")
    assert check_contract(tmp_path, [Symbol("m", "f", ("a", "*rest", "key", "**kw")), Symbol("m", "TABLE")]) == []
    assert check_contract(tmp_path, [Symbol("m", "TABLE", ("x",))])[0].what.startswith("expected a function")


def test_identify_commit_by_fingerprint_and_git(tmp_path: Path):
    root = write_toy(tmp_path / "up")
    tested = toy_fingerprint(root)
    commit = next(iter(tested))
    assert identify_commit(root, tested) == (commit, [])
    (root / "main.py").write_text((root / "main.py").read_text() + "\n# local edit\n")
    assert identify_commit(root, tested) == (None, ["main.py"])

    subprocess.run(["git", "init", "-q", str(root)], check=True)
    subprocess.run(["git", "-C", str(root), "add", "."], check=True)
    subprocess.run(
        ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"], check=True
    )
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert identify_commit(root, {head: {}}) == (head, [])


# ------------------------------------------------------------------------------------------ patches


def test_patched_restores_every_original(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    root = write_toy(tmp_path / "up")
    monkeypatch.syspath_prepend(str(root))
    import toylib

    class Sub(toylib.Trainer):  # an inherited attribute must be removed again, not copied down
        pass

    monkeypatch.setattr(toylib, "Sub", Sub, raising=False)
    originals = (toylib.read_targets, vars(toylib.Trainer)["target_value"])
    with patched(
        [
            Patch("toylib:read_targets", lambda orig: lambda path: ("wrapped", orig)),
            Patch("toylib:Trainer.target_value", lambda orig: lambda self, value: 0.5),
            Patch("toylib:Sub.fit", lambda orig: lambda self, rows: orig(self, rows) + ["patched"]),
        ]
    ) as applied:
        assert toylib.read_targets("x")[1] is originals[0]
        assert toylib.Trainer(2).fit([{0: 0.9}]) == [0.5, 0.0]
        assert Sub(1).fit([{0: 1.0}]) == [0.5, "patched"]
        assert len(applied) == 3
    assert toylib.read_targets is originals[0]
    assert vars(toylib.Trainer)["target_value"] is originals[1]
    assert "fit" not in vars(Sub)
    with pytest.raises(RuntimeError), patched([Patch("toylib:read_targets", lambda o: None)]):
        raise RuntimeError
    assert toylib.read_targets is originals[0]
    with pytest.raises(UpstreamError, match="toylib:Trainer.nope"), patched([Patch("toylib:Trainer.nope", id)]):
        pass


def test_patches_land_when_the_module_is_imported_later(tmp_path: Path):
    root = write_toy(tmp_path / "up")
    code = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(root)!r})
        from lever_plugins.wrap.patching import Patch, install_on_import
        applied = install_on_import([Patch("toylib:Trainer.target_value", lambda o: lambda self, v: v)])
        assert applied == [] and "toylib" not in sys.modules
        from toylib import Trainer
        print(Trainer(2).fit([{{0: 0.25}}, {{0: 0.5, 1: 0.125}}]), len(applied))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["[0.75,", "0.125]", "1"]
    assert install_on_import([]) == []


# ------------------------------------------------------------------------------------------ end to end


def run_toy(tiny_lf: Path, out: Path, upstream: Path, site: Path, *extra: str) -> subprocess.CompletedProcess:
    cfg = str(site.parent / "cfg.toml")
    return lever(
        "wrap", "toy", "--data", str(tiny_lf), "--out", str(out), "--upstream", str(upstream), "--config", cfg,
        *extra, env=env_with(site),
    )  # fmt: skip


def test_wrap_runs_upstream_in_spawned_child_with_soft_targets(toy, tiny_lf: Path, tmp_path: Path):
    upstream, site = toy
    before = {p: p.read_bytes() for p in upstream.iterdir()}
    r = run_toy(tiny_lf, tmp_path / "run", upstream, site)
    assert r.returncode == 0, r.stderr
    out = json.loads((tmp_path / "run/lever/upstream/out.json").read_text())
    assert out["parent"] != out["child"]
    targets = sp.load_npz(tmp_path / "run/soft/targets.npz")
    # The child summed the blended values (soft survived), not the count of stored entries.
    np.testing.assert_allclose(out["w"], np.asarray(targets.sum(axis=0)).ravel(), rtol=1e-5)
    assert not np.allclose(out["w"], np.asarray((targets > 0).sum(axis=0)).ravel())
    assert json.loads((tmp_path / "run/lever/metrics.json").read_text())["P@1"] >= 0
    assert {p: p.read_bytes() for p in upstream.iterdir()} == before  # upstream untouched

    r = run_toy(tiny_lf, tmp_path / "base", upstream, site, "--no-lever")
    assert r.returncode == 0, r.stderr
    w = json.loads((tmp_path / "base/base/upstream/out.json").read_text())["w"]
    from lever_plugins.data import load_dataset

    np.testing.assert_array_equal(w, np.asarray(load_dataset(tiny_lf).binary_train().sum(axis=0)).ravel())


def test_wrap_stops_on_drift_before_training(toy, tiny_lf: Path, tmp_path: Path):
    upstream, site = toy
    lib = upstream / "toylib.py"
    lib.write_text(lib.read_text().replace("def target_value(self, value)", "def target_value(self, value, scale)"))
    r = run_toy(tiny_lf, tmp_path / "run", upstream, site)
    assert r.returncode == 2
    line = r.stderr.strip().splitlines()[-1]
    assert "toylib.Trainer.target_value" in line and "signature changed" in line and "c0ffee" in line
    assert not (tmp_path / "run").exists()  # nothing ran, nothing written

    r = lever("doctor", "toy", "--upstream", str(upstream), env=env_with(site))
    assert r.returncode == 2
    assert "FAIL toylib.Trainer.target_value" in r.stdout and "not a tested commit" in r.stdout
    assert "differs in toylib.py" in r.stdout

    r = run_toy(tiny_lf, tmp_path / "run", tmp_path / "nowhere", site)
    assert r.returncode == 2 and "upstream checkout not found" in r.stderr


def test_doctor_reports_tested_commit(toy):
    upstream, site = toy
    r = lever("doctor", "toy", "--upstream", str(upstream), env=env_with(site))
    assert r.returncode == 0, r.stderr
    assert "tested commit c0ffee" in r.stdout and r.stdout.count("ok  ") == 3


def test_upstream_failure_is_one_line(toy, tiny_lf: Path, tmp_path: Path):
    upstream, site = toy
    (upstream / "main.py").write_text((upstream / "main.py").read_text().replace("ctx.Process(", "ctx.Proces("))
    r = run_toy(tiny_lf, tmp_path / "run", upstream, site)
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()[-1]
    assert "exited with code 1" in err and "Proces" in err and "upstream.log" in err


def test_ab_through_wrapping_adapter(toy, tiny_lf: Path, tmp_path: Path):
    upstream, site = toy
    r = lever(
        "ab", "--data", str(tiny_lf), "--out", str(tmp_path / "ab"), "--adapter", "toy", "--upstream", str(upstream),
        "--config", str(site.parent / "cfg.toml"), env=env_with(site),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "ab/compare.md").is_file()
    assert (tmp_path / "ab/base/upstream/out.json").is_file() and (tmp_path / "ab/lever/upstream/out.json").is_file()
    man = json.loads((tmp_path / "ab/manifest.json").read_text())
    assert man["stages"]["train_lever"]["stats"]["upstream_commit"].startswith("c0ffee")


def test_registry_item_and_created_attribute_patches_are_reversible(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "reg.py").write_text("TABLE = {'a': 1}\nclass State:\n    pass\nNOT_A_DICT = [1]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import reg

    table = reg.TABLE
    with patched(
        [
            Patch("reg:TABLE[b]", lambda old: ("new", old)),
            Patch("reg:TABLE[a]", lambda old: old + 10),
            Patch("reg:State.use_fp16", lambda old: property(lambda self: old), create=True),
        ]
    ):
        assert reg.TABLE is table and table == {"a": 11, "b": ("new", None)}  # in place: bound names see it
        assert reg.State().use_fp16 is None
    assert reg.TABLE is table and table == {"a": 1} and not hasattr(reg.State, "use_fp16")
    with pytest.raises(UpstreamError, match="State.use_fp16"), patched([Patch("reg:State.use_fp16", id)]):
        pass
    with pytest.raises(UpstreamError, match="not a dict"), patched([Patch("reg:NOT_A_DICT[x]", id)]):
        pass

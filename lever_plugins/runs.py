"""Run directories: atomic writes, checksummed manifest, stage cache by config hash, a lock file."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from lever_plugins.errors import LeverError


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """Open a temp file beside ``path``; rename it over ``path`` only if the block succeeds.

    A crash or an exception leaves ``path`` as it was (absent or the previous version), never half written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with open(tmp, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path to write with any library (np.save, torch.save); renamed over ``path`` on success.

    The temp name keeps ``path``'s suffix so libraries that add one (numpy) do not rename it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_write(path, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=2, sort_keys=True, default=str)
        fh.write("\n")


def sha256_file(path: str | Path, block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            h.update(chunk)
    return h.hexdigest()


class RunLockedError(LeverError):
    pass


LOCK_NAME = ".lock"


def _is_temp(name: str) -> bool:
    """Names made by atomic_write / atomic_path / the teacher's model-dir swap: ``.<name>.<random>.tmp[.ext]``."""
    return name.startswith(".") and (".tmp" in name or ".old-" in name)


class Run:
    """A run directory with ``manifest.json``: per-stage config hash, artefact checksums, wall time.

    ``with Run(dir) as run:`` holds an exclusive lock on ``dir/.lock`` (``fcntl.flock``: the kernel drops it
    when the process dies, even by SIGKILL, so a crashed run never blocks the next one). While locked,
    temp files that a killed run left behind are removed.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise LeverError("the output path exists and is not a folder", where=str(self.root),
                             fix="choose a folder for --out")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise LeverError("cannot create the output folder: a parent is a file", where=str(self.root),
                             fix="choose another --out") from None
        self.manifest_path = self.root / "manifest.json"
        self._lock_fd: int | None = None

    # -- locking: two lever processes must not write one run directory at once
    def lock(self) -> None:
        import fcntl

        path = self.root / LOCK_NAME
        while True:
            fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise RunLockedError(
                    f"another lever process (pid {holder}) is using this output directory",
                    where=str(self.root),
                    fix="wait for it to finish or choose another --out",
                ) from None
            # The holder we waited on may have unlinked the file before releasing it: lock the live file.
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd
        self._remove_stale_temps()

    def unlock(self) -> None:
        if self._lock_fd is not None:
            (self.root / LOCK_NAME).unlink(missing_ok=True)  # unlinked while still held (see lock)
            os.close(self._lock_fd)
            self._lock_fd = None

    def _remove_stale_temps(self) -> None:
        """Temp files and folders of a killed run (only ours, in the run folder and one level down)."""
        folders = [self.root] + [d for d in self.root.iterdir() if d.is_dir() and not d.name.startswith(".")]
        for folder in folders:
            for p in folder.iterdir():
                if _is_temp(p.name) and p.name != LOCK_NAME:
                    if p.is_dir() and not p.is_symlink():
                        shutil.rmtree(p, ignore_errors=True)
                    else:
                        p.unlink(missing_ok=True)

    def __enter__(self) -> Run:
        self.lock()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.unlock()

    # -- manifest
    def manifest(self) -> dict[str, Any]:
        if not self.manifest_path.exists():
            return {"stages": {}}
        try:
            return json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            return {"stages": {}}  # a corrupt manifest only costs a recompute

    def update_manifest(self, **fields: Any) -> None:
        m = self.manifest()
        m.update(fields)
        write_json(self.manifest_path, m)

    def stage_done(self, stage: str, key: str, artifacts: list[str]) -> bool:
        """True when ``stage`` finished with config hash ``key`` and every artefact matches its checksum."""
        rec = self.manifest().get("stages", {}).get(stage)
        if not rec or rec.get("key") != key or rec.get("status") != "done":
            return False
        sums = rec.get("sha256", {})
        for name in artifacts:
            p = self.root / name
            if not p.exists() or sums.get(name) != sha256_file(p):
                return False
        return True

    def record_stage(self, stage: str, key: str, artifacts: list[str], seconds: float, **extra: Any) -> None:
        m = self.manifest()
        m.setdefault("stages", {})[stage] = {
            "key": key,
            "status": "done",
            "seconds": round(seconds, 3),
            "sha256": {a: sha256_file(self.root / a) for a in artifacts},
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
            **extra,
        }
        write_json(self.manifest_path, m)


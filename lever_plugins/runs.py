"""Run directories: atomic writes, checksummed manifest, stage cache by config hash, a lock file."""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from lever_plugins.errors import LeverError

LEVER_DIR = ".lever"  # inside a run folder: lever's own lock and temp files, nothing of the user's
TMP_DIR = "tmp"
LOCK_NAME = "lock"


def _run_tmp_dir(folder: Path) -> Path | None:
    """``.lever/tmp`` of the nearest run folder holding ``folder`` (on the same file system), if any.

    Temp files of a run's artefacts live there, so cleaning up after a killed run never has to guess
    which names in the user's folder are ours."""
    try:
        folder = folder.resolve()
        dev = os.stat(folder).st_dev
    except OSError:
        return None
    for d in (folder, *folder.parents):
        tmp = d / LEVER_DIR / TMP_DIR
        try:
            st = os.stat(tmp)
        except OSError:
            continue
        # os.replace cannot cross file systems: a mount point inside the run folder keeps temps beside.
        return tmp if st.st_dev == dev else None
    return None


def _temp_name(path: Path, tmp_dir: Path | None, suffix: str) -> Path:
    token = secrets.token_hex(4)
    if tmp_dir is not None:  # <pid>.<token>.<name>: the sweep keeps temps of processes still alive
        return tmp_dir / f"{os.getpid()}.{token}.{path.name[:120]}{suffix}"
    return path.parent / f".{path.name[:120]}.{token}{suffix}"


def new_temp_file(path: str | Path, suffix: str = ".tmp") -> Path:
    """An empty new temp file to be renamed over ``path``: in the run folder's ``.lever/tmp`` when
    ``path`` is inside a run folder, else beside ``path``.

    Created with mode 0o666 so the umask decides its permissions (``mkstemp`` would force 0o600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = _run_tmp_dir(path.parent)
    while True:
        tmp = _temp_name(path, tmp_dir, suffix)
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return tmp
        except FileExistsError:
            continue


def new_temp_dir(path: str | Path, suffix: str = ".tmp") -> Path:
    """A new empty temp folder to be renamed to ``path`` (or to hold spill files); see :func:`new_temp_file`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = _run_tmp_dir(path.parent)
    while True:
        tmp = _temp_name(path, tmp_dir, suffix)
        try:
            os.mkdir(tmp, 0o777)
            return tmp
        except FileExistsError:
            continue


def remove_temp(tmp: str | Path) -> None:
    """Remove a temp file or folder made by :func:`new_temp_file` / :func:`new_temp_dir` (if still there)."""
    tmp = Path(tmp)
    if tmp.is_dir() and not tmp.is_symlink():
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """Open a temp file (see :func:`new_temp_file`); rename it over ``path`` only if the block succeeds.

    A crash or an exception leaves ``path`` as it was (absent or the previous version), never half written.
    """
    path = Path(path)
    tmp = new_temp_file(path)
    try:
        with open(tmp, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        remove_temp(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path to write with any library (np.save, torch.save); renamed over ``path`` on success.

    The temp name keeps ``path``'s suffix so libraries that add one (numpy) do not rename it.
    """
    path = Path(path)
    tmp = new_temp_file(path, suffix=".tmp" + path.suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        remove_temp(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | Path, replace: bool = False) -> Iterator[Path]:
    """Yield a new temp folder to fill; on success it becomes ``path`` by rename (as a whole).

    ``replace=False``: ``path`` must not exist (or be an empty folder); ``replace=True``: an existing
    ``path`` is moved aside first and removed only once the new one is in place (a failure puts it back).
    """
    path = Path(path)
    tmp = new_temp_dir(path)
    old: Path | None = None
    try:
        yield tmp
        if path.exists() or path.is_symlink():
            if replace:
                old = retire(path)
            else:
                path.rmdir()  # only an empty folder may be replaced without asking
        tmp.rename(path)
    except BaseException:
        remove_temp(tmp)
        if old is not None and not path.exists():
            old.rename(path)
        raise
    if old is not None:
        remove_temp(old)


def retire(path: str | Path) -> Path:
    """Move ``path`` aside to a temp name (removed by the caller, or by the next run's sweep if killed)."""
    path = Path(path)
    old = _temp_name(path, _run_tmp_dir(path.parent), ".old")
    path.rename(old)
    return old


def check_inside(root: str | Path, path: str | Path, where: str, fix: str | None = None) -> Path:
    """``path`` (relative paths taken from ``root``) resolved, or a LeverError if it leaves ``root``:
    a value from an option that becomes a file name must not make lever write outside ``--out``."""
    root_r = Path(root).resolve()
    p = Path(path)
    p_r = (p if p.is_absolute() else root_r / p).resolve()
    if p_r != root_r and root_r not in p_r.parents:
        raise LeverError(f"the file {p} it names would be outside the output folder {root_r}", where=where,
                         fix=fix or "use a plain name without '..' or an absolute path")  # fmt: skip
    return p_r


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


# A folder of finished stages shared by several run folders (``lever sweep`` grid points, ``lever ab --seeds``):
# a stage that another run of the same sweep finished with the same key is copied, not recomputed.
_STAGE_STORE: contextvars.ContextVar[Path | None] = contextvars.ContextVar("lever_stage_store", default=None)


@contextlib.contextmanager
def stage_store(folder: str | Path) -> Iterator[Path]:
    """Within the block, every :class:`Run` opened without its own ``store`` shares finished stages through
    ``folder`` (``<stage>/<key>/``: the artefacts and the stage's manifest record)."""
    token = _STAGE_STORE.set(Path(folder))
    try:
        yield Path(folder)
    finally:
        _STAGE_STORE.reset(token)


def _link_or_copy(src: Path, dst: Path) -> None:
    """``dst`` (absent) as a hard link to ``src``, a copy across file systems. Artefacts are only ever
    replaced by rename, never rewritten in place, so a link is a stable snapshot."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


class Run:
    """A run directory with ``manifest.json``: per-stage config hash, artefact checksums, wall time.

    ``with Run(dir) as run:`` holds an exclusive lock on ``dir/.lever/lock`` (``fcntl.flock``: the kernel
    drops it when the process dies, even by SIGKILL, so a crashed run never blocks the next one). While
    locked, temp files that a killed run left behind in ``dir/.lever/tmp`` are removed. Lever removes
    nothing else in ``dir``: every other name there may be the user's.
    """

    def __init__(self, root: str | Path, store: str | Path | None = None):
        self.root = Path(root)
        self.store = Path(store) if store is not None else _STAGE_STORE.get()
        self.timings: list[dict[str, Any]] = []  # each stage's {stage, seconds, cached} in this process, in order
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

        own = self.root / LEVER_DIR
        (own / TMP_DIR).mkdir(parents=True, exist_ok=True)
        path = own / LOCK_NAME
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
            (self.root / LEVER_DIR / LOCK_NAME).unlink(missing_ok=True)  # unlinked while still held (see lock)
            os.close(self._lock_fd)
            self._lock_fd = None

    def _remove_stale_temps(self) -> None:
        """Temp files and folders in ``.lever/tmp`` whose writer is gone (killed, or this process's pid
        reused). Temps of live processes stay: an orphaned worker of a killed run may still be writing."""
        tmp_dir = self.root / LEVER_DIR / TMP_DIR
        for p in tmp_dir.iterdir():
            pid = p.name.split(".", 1)[0]
            if not pid.isdigit() or int(pid) == os.getpid() or not _alive(int(pid)):
                remove_temp(p)

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
            m = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (ValueError, RecursionError):  # bad JSON or UTF-8 (both ValueErrors), absurd nesting
            return {"stages": {}}  # a corrupt manifest only costs a recompute
        if not isinstance(m, dict) or not isinstance(m.get("stages", {}), dict):
            return {"stages": {}}
        m.setdefault("stages", {})
        return m

    def update_manifest(self, **fields: Any) -> None:
        m = self.manifest()
        m.update(fields)
        write_json(self.manifest_path, m)

    def stage_done(self, stage: str, key: str, artifacts: list[str]) -> bool:
        """True when ``stage`` finished with config hash ``key`` and every artefact matches its checksum
        (in this folder, or in the shared stage store, from which it is then copied in)."""
        rec = self.manifest().get("stages", {}).get(stage)
        if self._intact(self.root, rec, key, artifacts):
            return True
        return self._from_store(stage, key, artifacts)

    @staticmethod
    def _intact(root: Path, rec: Any, key: str, artifacts: list[str]) -> bool:
        if not isinstance(rec, dict) or rec.get("key") != key or rec.get("status") != "done":
            return False
        sums = rec.get("sha256", {})
        for name in artifacts:
            p = root / name
            if not p.exists() or sums.get(name) != sha256_file(p):
                return False
        return True

    def _stored(self, stage: str, key: str) -> Path | None:
        if self.store is None or not key.replace("-", "").isalnum():
            return None
        return self.store / stage / key

    def _from_store(self, stage: str, key: str, artifacts: list[str]) -> bool:
        folder = self._stored(stage, key)
        if folder is None or not (folder / "record.json").is_file():
            return False
        try:
            rec = json.loads((folder / "record.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        if not self._intact(folder / "files", rec, key, artifacts):
            return False
        for name in artifacts:  # each artefact atomically: a crash leaves a stage that is simply not done
            dst = self.root / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = new_temp_file(dst)
            remove_temp(tmp)
            _link_or_copy(folder / "files" / name, tmp)
            os.replace(tmp, dst)
        m = self.manifest()
        m.setdefault("stages", {})[stage] = {**rec, "from_store": str(folder)}
        write_json(self.manifest_path, m)
        return True

    def _to_store(self, stage: str, key: str, artifacts: list[str], rec: dict[str, Any]) -> None:
        folder = self._stored(stage, key)
        if folder is None:
            return
        with contextlib.suppress(OSError, ValueError):
            if self._intact(folder / "files", json.loads((folder / "record.json").read_text(encoding="utf-8")),
                            key, artifacts):
                return  # already stored (a damaged entry is replaced)
        with atomic_dir(folder, replace=True) as tmp:
            for name in artifacts:
                (tmp / "files" / name).parent.mkdir(parents=True, exist_ok=True)
                _link_or_copy(self.root / name, tmp / "files" / name)
            (tmp / "record.json").write_text(json.dumps(rec, indent=2, sort_keys=True, default=str), encoding="utf-8")

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
        self._to_store(stage, key, artifacts, m["stages"][stage])


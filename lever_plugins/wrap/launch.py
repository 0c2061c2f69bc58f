"""Start the upstream entry point in a child Python with the adapter's patches active in every process."""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lever_plugins.errors import UpstreamError
from lever_plugins.runs import atomic_write, write_json
from lever_plugins.wrap import boot


def write_boot(workdir: Path, spec: dict[str, Any], name: str = "upstream") -> tuple[Path, Path]:
    """The run's spec file and the folder holding the generated sitecustomize.py."""
    boot_dir = workdir / "boot"
    boot_dir.mkdir(parents=True, exist_ok=True)
    with atomic_write(boot_dir / "sitecustomize.py", "w", encoding="utf-8") as fh:
        fh.write(boot.SITECUSTOMIZE)
    spec_path = workdir / ("wrap-spec.json" if name == "upstream" else f"wrap-spec.{name}.json")
    write_json(spec_path, spec)
    return spec_path, boot_dir


def launch(
    spec: dict[str, Any],
    workdir: Path,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    log: Callable[[str], Any] | None = None,
    name: str = "upstream",
    processes: int = 1,
    launcher: str = "",
) -> Path:
    """Run ``spec["script"]`` of ``spec["upstream"]`` with ``spec["argv"]``; its output is echoed through
    ``log`` and kept in ``workdir/<name>.log``. A non-zero exit is an :class:`UpstreamError` quoting
    the last lines. Returns the log's path.

    ``processes`` > 1 starts that many ranks through ``launcher`` (:func:`command`): ``"accelerate"``
    (``accelerate launch``, for upstreams built on an ``Accelerator``) or ``"torchrun"``
    (``torch.distributed.run``, for upstreams that call ``init_process_group`` themselves). Every rank
    runs :mod:`lever_plugins.wrap.run` and so has the patches active."""
    workdir.mkdir(parents=True, exist_ok=True)
    spec_path, boot_dir = write_boot(workdir, spec, name)
    full_env = {**os.environ, **(env or {})}
    full_env[boot.SPEC_ENV] = str(spec_path.resolve())
    full_env["PYTHONPATH"] = os.pathsep.join(
        [str(boot_dir.resolve()), *([full_env["PYTHONPATH"]] if full_env.get("PYTHONPATH") else [])]
    )
    full_env["PYTHONUNBUFFERED"] = "1"
    if processes > 1:
        for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
            full_env.pop(k, None)  # a launch inside a launched process starts its own group
        full_env.setdefault("OMP_NUM_THREADS", "1")  # K ranks on K cores: no oversubscription
    log_path = workdir / f"{name}.log"
    cmd = command(spec_path.resolve(), processes, launcher)
    with open(log_path, "w", encoding="utf-8") as fh:
        rc, tail = _run_logged(cmd, cwd or workdir, full_env, fh, log)
    if rc != 0:
        raise UpstreamError(
            f"{spec['adapter']} upstream {spec['script']} {_exit_words(rc)}: {tail}",
            where=str(log_path),
            fix="read the upstream log; the patches and targets are in " + str(workdir),
        )
    return log_path


LAUNCHERS = ("accelerate", "torchrun")


def check_processes(value: Any, where: str = "[trainer.options] processes") -> int:
    """``processes`` as a positive integer (booleans and fractions refused): a ConfigError otherwise."""
    from lever_plugins.errors import ConfigError

    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"processes = {value!r} must be an integer >= 1", where=where,
                          fix="e.g. processes = 2 (one per GPU; gloo on the CPU)")
    return int(value)


def free_port() -> int:
    """A TCP port free on this machine now (for the rendezvous of one multi-process launch)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def command(spec_path: Path, processes: int = 1, launcher: str = "") -> list[str]:
    """The command line that runs the spec: one ``python -m lever_plugins.wrap.run SPEC``, or
    ``processes`` of them under ``accelerate launch --multi_gpu`` / ``torchrun --standalone``
    (rendezvous on a free local port; on a machine without CUDA the adapter sets ``ACCELERATE_USE_CPU``
    so accelerate takes gloo on the CPU)."""
    entry = ["lever_plugins.wrap.run", str(spec_path)]
    if processes <= 1:
        return [sys.executable, "-m", *entry]
    if launcher == "accelerate":
        return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "1",
                "--num_processes", str(int(processes)), "--main_process_port", str(free_port()),
                "--dynamo_backend", "no", "--module", *entry]  # fmt: skip
    if launcher == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
                f"--nproc-per-node={int(processes)}", "--master-addr", "127.0.0.1",
                "--master-port", str(free_port()), "-m", *entry]  # fmt: skip
    raise UpstreamError(f"unknown multi-process launcher {launcher!r} (known: {', '.join(LAUNCHERS)})")


def _run_logged(
    cmd: list[str], cwd: Path, env: dict[str, str], fh: Any, log: Callable[[str], Any] | None
) -> tuple[int, str]:
    """Run ``cmd`` with stdout and stderr into ``fh`` (and ``log``); its exit code and last lines."""
    tail: collections.deque[str] = collections.deque(maxlen=15)
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        fh.write(line)
        tail.append(line.rstrip())
        if log:
            log(line.rstrip())
    rc = proc.wait()
    return rc, " | ".join(t for t in tail if t)[-600:]


def _exit_words(rc: int) -> str:
    if rc < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-rc).name}"
    return f"exited with code {rc}"


def run_commands(
    adapter: str,
    commands: list[list[str]],
    workdir: Path,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    log: Callable[[str], Any] | None = None,
) -> Path:
    """Run a native upstream's commands in order (``LaunchSpec.commands``), output echoed through ``log``
    and kept in ``workdir/upstream.log``. The first that fails (non-zero exit, a signal, a missing
    executable) is an :class:`UpstreamError` quoting its last lines; the rest do not run."""
    workdir.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **(env or {})}
    log_path = workdir / "upstream.log"
    with open(log_path, "w", encoding="utf-8") as fh:
        for cmd in commands:
            name = Path(cmd[0]).name
            fh.write(f"$ {subprocess.list2cmdline(cmd)}\n")
            fh.flush()
            try:
                rc, tail = _run_logged(cmd, cwd or workdir, full_env, fh, log)
            except OSError as exc:  # not found, not executable
                raise UpstreamError(
                    f"{adapter}: cannot run {name}: {exc.strerror or exc}",
                    where=cmd[0],
                    fix="rebuild the upstream binaries (remove the adapter's build cache)",
                ) from None
            if rc != 0:
                raise UpstreamError(
                    f"{adapter} upstream {name} {_exit_words(rc)}: {tail}",
                    where=str(log_path),
                    fix="read the upstream log; the command line and the files it read are in " + str(workdir),
                )
    return log_path

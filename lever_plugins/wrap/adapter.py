"""The base class of adapters that run an upstream trainer (``lever wrap NAME``, ``lever ab --adapter NAME``)."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from lever_plugins.adapter import Arm, LossFn
from lever_plugins.errors import UpstreamError
from lever_plugins.wrap.contract import Problem, Requirement, check_contract, identify_commit
from lever_plugins.wrap.patching import Patch


@dataclass
class LaunchSpec:
    """How to start the upstream: ``script`` (relative to the checkout) with ``argv``, in ``cwd``
    (default: the arm's workdir, so nothing is written into the checkout); ``payload`` reaches
    :meth:`WrapAdapter.patches` in the launched processes (JSON: paths and numbers, not arrays).

    ``then``: further upstream scripts run after this one, in order, with the same patch mechanism (an
    evaluation script after training); each logs to ``<workdir>/<its name>.log``. The ``-- upstream args``
    of ``lever wrap`` go to the first script only.

    Upstreams that are not Python (C++ command-line trainers) set ``commands`` instead of ``script``:
    argv lists run one after the other in ``cwd`` with ``env`` added (no patches, nothing to import);
    the adapter places ``arm.upstream_args`` in them itself. ``info`` is merged into the arm's stats.

    ``processes`` > 1 runs this step in that many processes through ``launcher`` (``"accelerate"`` or
    ``"torchrun"``, see :func:`lever_plugins.wrap.launch.command`), each with the patches active.
    """

    script: str = ""
    argv: list[str] = field(default_factory=list)
    payload: dict[str, Any] = field(default_factory=dict)
    cwd: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    pythonpath: list[str] = field(default_factory=list)
    commands: list[list[str]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    name: str = "upstream"
    then: list[LaunchSpec] = field(default_factory=list)
    processes: int = 1
    launcher: str = ""


@dataclass
class DoctorReport:
    adapter: str
    upstream: Path
    problems: list[Problem]
    commit: str | None
    differs: list[str]
    tested: list[str]
    symbols: list[Requirement]

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        out = [f"{self.adapter}: upstream {self.upstream}"]
        if self.commit and not self.differs:
            out.append(f"  version: tested commit {self.commit}")
        else:
            out.append(
                f"  version: not a tested commit (tested: {', '.join(c[:12] for c in self.tested) or 'none'})"
                + (f"; differs in {', '.join(self.differs)}" if self.differs else "")
            )
        for s in self.symbols:
            bad = next((p for p in self.problems if p.symbol == s), None)
            out.append(f"  {'FAIL' if bad else 'ok  '} {s}" + (f": {bad.what}" if bad else "") + f"  — {s.why}")
        return out


class WrapAdapter:
    """An :class:`lever_plugins.adapter.Adapter` for an upstream trainer. Subclass per upstream: declare
    ``name``, ``upstream`` (its URL), ``tested`` (commit → {file: sha256}) and implement :meth:`contract`,
    :meth:`prepare`, :meth:`patches`, :meth:`collect`; override :meth:`preflight` (calling ``super()``) for
    runtime checks of your own.

    :meth:`train_predict` does the rest: contract check, files, launch with the patches active in
    every upstream process, scores back as CSR for ``evaluate``. ``prepare`` and ``collect`` get the
    :class:`~lever_plugins.adapter.Arm` with ``workdir`` set to ``OUT/<arm>/upstream``.
    """

    name = "wrap"
    upstream = ""
    tested: dict[str, dict[str, str]] = {}
    needs_features = False  # upstream trainers encode text themselves
    takes_sparse = False
    supports_finetune = False
    takes_loss_hook = False  # True where the adapter's patches call the lever_loss hook in the upstream's loss

    def __init__(self, **options: Any):
        self.options = options  # ``[trainer] options``; re-created from these in launched processes

    # -- to implement ---------------------------------------------------------------------------
    def contract(self) -> list[Requirement]:
        """The upstream symbols this adapter patches or calls, with their signatures (``SourceText`` for
        option flags and names in non-Python sources)."""
        return []

    def prepare(self, ctx: Arm) -> LaunchSpec:
        """Write the arm's data in the upstream's formats under ``ctx.workdir``; say how to launch."""
        raise NotImplementedError

    def patches(self, payload: dict[str, Any]) -> list[Patch]:
        """The patches to apply in each launched process (called there, with the LaunchSpec's payload)."""
        return []

    def collect(self, ctx: Arm, spec: LaunchSpec) -> sp.csr_matrix:
        """Read the upstream's test scores back: CSR, test documents × L."""
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------------
    def doctor(self, upstream: str | Path) -> DoctorReport:
        root = Path(upstream)
        if not root.is_dir():
            raise UpstreamError(
                f"{self.name} upstream checkout not found",
                where=str(upstream),
                fix=f"point --upstream (or [trainer] upstream) at a checkout of {self.upstream or self.name}",
            )
        symbols = self.contract()
        commit, differs = identify_commit(root, self.tested)
        return DoctorReport(
            self.name, root, check_contract(root, symbols), commit, differs, list(self.tested), symbols
        )

    def check_upstream_args(self, args: list[str]) -> None:
        """Check the ``-- upstream args`` of ``lever wrap`` before any stage runs; raise ConfigError on a
        bad one (an adapter that sets some upstream flags itself refuses them here). Default: any."""

    def check_upstream(self, upstream_dir: str | Path | None) -> DoctorReport:
        """The checkout's contract (:meth:`doctor`); raises an UpstreamError on the first problem."""
        if not upstream_dir:
            raise UpstreamError(
                f"adapter {self.name!r} needs the upstream checkout",
                where="--upstream / [trainer] upstream",
                fix=f"clone {self.upstream or 'the upstream repository'} and pass its folder",
            )
        report = self.doctor(upstream_dir)
        if report.problems:
            first = report.problems[0]
            tested = ", ".join(c[:12] for c in self.tested) or "none"
            n = len(report.problems)
            more = f" (+{n - 1} more, see `lever doctor {self.name}`)" if n > 1 else ""
            raise UpstreamError(
                f"upstream drift: {first.symbol}: {first.what}{more}; tested commit(s): {tested}",
                where=str(Path(upstream_dir) / first.symbol.path),
                fix=f"check out a tested commit of {self.upstream or self.name}, or update the adapter",
            )
        return report

    def preflight(self, config: Any) -> None:
        """Before any stage: the ``[trainer] upstream`` checkout fits the contract and the ``-- upstream
        args`` pass :meth:`check_upstream_args`; a plugin loss can reach the launched upstream."""
        self.check_upstream(config.upstream)
        if config.upstream_args:
            self.check_upstream_args(list(config.upstream_args))
        if self.takes_loss_hook:
            from lever_plugins import plugins

            local = [n for n in plugins.loss_plugins() if not plugins.installed(n)]
            if local:
                raise UpstreamError(
                    f"lever_loss plugin(s) {', '.join(local)} are registered in this process only; the "
                    f"{self.name} upstream runs in its own process and would train without them",
                    where="lever_loss hook",
                    fix="install the plugin as a distribution (entry point group 'lever', see `lever new-plugin`)",
                )

    def plugin_loss(self) -> LossFn | None:
        """For :meth:`patches` of adapters with ``takes_loss_hook``: in a launched upstream process, the
        ``lever_loss`` hook bound to the run's TrainerConfig when a plugin answers it; None when the loss is
        the default BCE (the patches then keep the upstream's own fast path) and outside a launch."""
        from lever_plugins.wrap import boot

        return boot.plugin_loss()

    def train_predict(self, arm: Arm, config: Any, loss: LossFn) -> tuple[sp.csr_matrix, dict[str, Any]]:
        """Prepare the upstream's files under ``OUT/<arm>/upstream``, launch it with the patches active
        and read its scores back. ``loss`` runs in this process only: adapters with ``takes_loss_hook``
        call the ``lever_loss`` hook from their patches inside the launched processes."""
        from lever_plugins.wrap.launch import launch, run_commands

        self.preflight(config)
        report = self.check_upstream(config.upstream)
        ctx = dataclasses.replace(
            arm,
            workdir=Path(arm.workdir) / "upstream",
            targets=sp.csr_matrix(arm.targets, dtype=np.float32),
            upstream=Path(config.upstream).resolve(),
            upstream_args=list(config.upstream_args),
        )
        ctx.workdir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        spec = self.prepare(ctx)
        t1 = time.perf_counter()
        loss_info = None
        if self.takes_loss_hook:
            from lever_plugins import plugins

            if plugins.loss_plugins():  # else the upstream keeps its own (default BCE) loss
                loss_info = {"plugins": plugins.loss_plugins(), "config": dataclasses.asdict(config)}
        if spec.commands:
            run_commands(
                self.name, spec.commands, ctx.workdir, cwd=spec.cwd, env=spec.env, log=print
            )
        else:
            for i, step in enumerate([spec, *spec.then]):
                launch(
                    {
                        "adapter": self.name,
                        "options": self.options,
                        "upstream": str(ctx.upstream),
                        "script": step.script,
                        "argv": [*step.argv, *(ctx.upstream_args if i == 0 else [])],
                        "payload": step.payload,
                        "pythonpath": step.pythonpath,
                        **({"loss": loss_info} if loss_info else {}),
                    },
                    ctx.workdir,
                    cwd=step.cwd,
                    env={"LEVER_ARM": ctx.name, **step.env},
                    log=print,
                    name=step.name,
                    processes=step.processes,
                    launcher=step.launcher,
                )
        t2 = time.perf_counter()
        scores = self.collect(ctx, spec).tocsr()
        if scores.shape != (len(ctx.tst_texts), ctx.y_train.shape[1]):
            raise UpstreamError(
                f"{self.name} scores have shape {scores.shape}, expected {(len(ctx.tst_texts), ctx.y_train.shape[1])}",
                where=str(ctx.workdir),
                fix="the upstream wrote predictions for another label space; check its label padding",
            )
        return scores, {
            "upstream_commit": report.commit,
            "upstream_differs": report.differs,
            "prepare_seconds": t1 - t0,
            "upstream_seconds": t2 - t1,
            "rows": arm.targets.shape[0],
            "processes": spec.processes,
            **spec.info,
        }

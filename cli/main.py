"""The ``lever`` command: thin click wrappers over lever_plugins functions.

Every user error is one line on stderr and exit code 2; tracebacks are for bugs only.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import click
from lever_cli.data_build import build_grp

from lever_plugins import __version__
from lever_plugins.errors import LeverError


def _load_cfg(config: str | None, **overrides: Any) -> Any:
    """``config`` with the command's ``--set`` items applied, then its own options (``--data``, ``--seed``,
    ...; None = not given), which are the more specific."""
    from lever_plugins import config as cfgmod

    given = cfgmod.nest({k: v for k, v in overrides.items() if v is not None})
    nested = cfgmod.merge(cfgmod.parse_sets(_sets()), given)
    return cfgmod.load(config, nested)


def _overrides(config: str | None, **overrides: Any) -> dict[str, Any]:
    """The command's ``--set`` items and its own options as one nested dict (checked like :func:`_load_cfg`)."""
    from lever_plugins import config as cfgmod

    given = cfgmod.nest({k: v for k, v in overrides.items() if v is not None})
    nested = cfgmod.merge(cfgmod.parse_sets(_sets()), given)
    cfgmod.load(config, nested)  # a bad key or value: one line before anything runs
    return nested


def _sets() -> tuple[str, ...]:
    ctx = click.get_current_context(silent=True)
    return tuple(ctx.meta.get("lever.sets", ())) if ctx else ()


def with_set(f):
    """Add ``--set section.key=value`` (repeatable) to a command that takes ``--config``; the items reach
    :func:`_load_cfg` through the click context, so the command's signature stays as it is."""

    @functools.wraps(f)
    def wrapper(*args: Any, sets: tuple[str, ...] = (), **kwargs: Any) -> Any:
        click.get_current_context().meta["lever.sets"] = sets
        return f(*args, **kwargs)

    return click.option(
        "--set", "sets", multiple=True, metavar="SECTION.KEY=VALUE",
        help="Override one config key, typed like TOML (repeatable): --set trainer.l2=3e-6 --set eval.k=[1,10].",
    )(wrapper)  # fmt: skip


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lever")
def cli() -> None:
    """LEVER for extreme classification: teacher, soft labels, trainers, A/B."""


# ------------------------------------------------------------------ plugins


@cli.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins_cmd(as_json: bool) -> None:
    """List loaded plugins and what each registers."""
    from lever_plugins import plugins

    infos = plugins.list_plugins()
    regs = {
        "teachers": plugins.teachers(),
        "soft_label_providers": plugins.soft_label_providers(),
        "adapters": plugins.adapters(),
        "baselines": plugins.baselines(),
    }
    if as_json:
        out = {
            "plugins": [vars(i) | {"hooks": list(i.hooks)} for i in infos],
            **{k: {n: {"dist": r.dist, "version": r.version} for n, r in v.items()} for k, v in regs.items()},
        }
        click.echo(json.dumps(out, indent=2))
        return
    click.echo("plugins:")
    for i in infos:
        click.echo(f"  {i.name}  ({i.dist} {i.version})  hooks: {', '.join(i.hooks)}")
    for kind, reg in regs.items():
        click.echo(f"{kind.replace('_', ' ')}:")
        for name, r in sorted(reg.items()):
            click.echo(f"  {name}  ({r.dist} {r.version})")


@cli.command("new-plugin")
@click.argument("name")
@click.option("--kind", required=True, type=click.Choice(["teacher", "soft-labels", "adapter", "baseline", "loss",
                                                          "observer"]), help="What the plugin provides.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="New folder for the distribution.")
def new_plugin_cmd(name: str, kind: str, out: str) -> None:
    """Write a ready plugin distribution NAME (e.g. lever-myteacher): pyproject with the `lever` entry
    point, the hook implemented and documented, a passing test."""
    from lever_plugins.scaffold import scaffold

    for f in scaffold(name, kind, out):
        click.echo(str(f))
    click.echo(f"next: pip install {out} && lever plugins")


# ------------------------------------------------------------------ data


@cli.group("data")
def data_grp() -> None:
    """Validate and convert XC data files."""


@data_grp.command("validate")
@click.argument("path", type=click.Path())
def data_validate(path: str) -> None:
    """Check a data file or folder; print a one-line summary or the first problem."""
    from lever_plugins.data import validate_path

    info = validate_path(path)
    click.echo(f"ok: {path}: " + ", ".join(f"{k} {v}" for k, v in info.items()))


@data_grp.command("convert")
@click.argument("src", type=click.Path())
@click.argument("dst", type=click.Path())
@click.option("--force", is_flag=True, help="Replace a non-empty destination folder (as a whole, once complete).")
def data_convert(src: str, dst: str, force: bool) -> None:
    """Convert between XC sparse text, .npz, and LF json.gz / raw text folders."""
    from lever_plugins.data import convert

    convert(src, dst, force=force)
    click.echo(f"wrote {dst}")


data_grp.add_command(build_grp)


# ------------------------------------------------------------------ eval


@cli.command("eval")
@click.option("--scores", "scores_path", required=True, type=click.Path(), help="Predicted scores (.npz or XC text).")
@click.option("--truth", "truth_path", required=True, type=click.Path(), help="Test labels (.npz or XC text).")
@click.option("--train", "train_path", type=click.Path(),
              help="Train labels, for propensity-scored metrics (PSP, PSnDCG: left out without it).")
@click.option("--filter", "filter_path", type=click.Path(), help="Filter file of 'row label' pairs.")
@click.option("-k", "ks", multiple=True, type=int, default=(1, 3, 5), show_default=True)
@click.option("--name", default="", help="Data-set name, picks propensity A/B (Amazon, Wiki, other).")
@click.option("-A", "A", type=float, help="Propensity A (overrides --name).")
@click.option("-B", "B", type=float, help="Propensity B (overrides --name).")
@click.option("--out", "out_path", type=click.Path(), help="Write metrics JSON here.")
@click.option("--rows", "rows_path", type=click.Path(),
              help="rows.json of a sliced run (max_train, max_test, hold-out): evaluate those rows of --truth "
                   "(and take the run's train rows of --train).")
def eval_cmd(scores_path, truth_path, train_path, filter_path, ks, name, A, B, out_path, rows_path) -> None:
    """Evaluate a score matrix: P, nDCG, PSP, PSnDCG, R, coverage, macro P/R/F1 at k."""
    from lever_plugins import api
    from lever_plugins.errors import ConfigError
    from lever_plugins.metrics.propensity import check_ab

    check_ab(A, B, where=("lever eval -A", "lever eval -B"))
    for flag, v in (("-A", A), ("-B", B)):
        if v is not None and not train_path:
            raise ConfigError(f"{flag} sets a propensity, which needs the train labels", where=f"lever eval {flag}",
                              fix="pass --train TRAIN_LABELS, or drop it")  # fmt: skip

    m = api.evaluate(scores_path, truth_path, train=train_path, filter=filter_path, k=ks, name=name, A=A, B=B,
                     out=out_path, rows=rows_path).metrics  # fmt: skip
    if not train_path:
        click.echo("note: no --train: PSP and PSnDCG need the train labels' propensities, left out", err=True)
    width = max(len(k) for k in m)
    for key, v in m.items():
        click.echo(f"{key:<{width}}  {100 * v:7.2f}")


# ------------------------------------------------------------------ pipeline

_common = [
    click.option("--data", type=click.Path(), help="Data folder (LF json.gz or XC text layout)."),
    click.option("--out", required=True, type=click.Path(), help="Run directory (artefacts are cached here)."),
    click.option("--config", "config", type=click.Path(), help="TOML config; see configs/."),
    click.option("--seed", type=int, help="Run seed (overrides the config)."),
]


def common(f):
    for opt in reversed(_common):
        f = opt(f)
    return with_set(f)


@cli.command("ab")
@common
@click.option("--adapter", help="Trainer adapter (default: builtin).")
@click.option("--reference", type=click.Choice(["plt"]), help="Add a reference row: napkinXC PLT on TF-IDF.")
@click.option("--upstream", type=click.Path(), help="Upstream checkout, for wrapping adapters (renee, elias, ...).")
@click.option("--baseline", "baselines", multiple=True,
              help="Add a baseline row: rerank, ensemble, label_rows, lever_rerank, lever_ensemble.")
@click.option("--seeds", help="Comma-separated seeds (e.g. 13,14,15): one run each in OUT/seed-S, tables with "
              "mean ± sd over the seeds.")
def ab_cmd(data, out, config, seed, adapter, reference, upstream, baselines, seeds) -> None:
    """Base vs +LEVER: same seed and settings, metrics, paired-bootstrap tables (md, csv, tex), decile plots."""
    from lever_plugins import api

    if seeds is not None and seed is not None:
        raise click.UsageError("--seed and --seeds together: give one of them")
    nested = _overrides(
        config,
        **{
            "data.path": data,
            "seed": seed,
            "trainer.adapter": adapter,
            "eval.reference": reference,
            "trainer.upstream": upstream,
            "eval.baselines": list(baselines) or None,
        },
    )
    res = api.ab(out=out, config=config, overrides=nested, seeds=seeds, log=lambda s: click.echo(s, err=False))
    click.echo(f"\nwrote {', '.join(str(f) for f in res.files if f.suffix in ('.md', '.csv', '.tex', '.png'))}")


@cli.command("sweep")
@click.option("--data", type=click.Path(),
              help="Data folder (a sweep evaluates on a hold-out of its train split only).")
@click.option("--out", required=True, type=click.Path(), help="Sweep folder: points/<i>/ runs, sweep.csv, sweep.md.")
@click.option("--config", "config", type=click.Path(), help="TOML config the grid changes; see configs/.")
@click.option("--grid", "grid", multiple=True, required=True, metavar="SECTION.KEY=V1,V2",
              help="A setting and its values, typed like TOML (repeatable: the grid is their product).")
@click.option("--select", metavar="METRIC", help="Pick the winner by this +LEVER metric (e.g. psp@5): best.toml.")
@click.option("--holdout", type=float, help="Fraction of train held out as test when [data] holdout is 0 (0.2).")
@with_set
def sweep_cmd(data, out, config, grid, select, holdout) -> None:
    """Tune settings on a held-out slice of train (never the test split): every point of the grid, stages
    shared across points; sweep.csv, a sorted sweep.md and, with --select, the winner as best.toml."""
    from lever_plugins import api
    from lever_plugins import config as cfgmod

    points = dict(cfgmod.parse_grid(g) for g in grid)
    res = api.sweep(data=data, out=out, config=config, grid=points, overrides=_overrides(config),
                    select=select, holdout=holdout, log=click.echo)  # fmt: skip
    written = [Path(out) / "sweep.csv", Path(out) / "sweep.md"] + ([res.best_config] if res.best_config else [])
    click.echo(f"\nwrote {', '.join(map(str, written))}")


@cli.command("teach")
@common
@click.option("--nproc", type=click.IntRange(min=1), default=1, show_default=True,
              help="Processes: >1 launches torchrun (DDP teacher; NCCL on GPUs, gloo on CPU).")
def teach_cmd(data, out, config, seed, nproc) -> None:
    """Train the Siamese teacher alone (resumes from its last checkpoint)."""
    from lever_cli.distributed import relaunch_args, teach

    cfg = _load_cfg(config, **{"data.path": data, "seed": seed})
    sets = [x for item in _sets() for x in ("--set", item)]  # every torchrun process reads the same config
    teach(cfg, out, nproc, relaunch_args(data, out, config, seed) + sets, log=click.echo)


@cli.command("soften")
@common
def soften_cmd(data, out, config, seed) -> None:
    """Teacher (cached) then soft labels and blended targets into OUT/soft/."""
    from lever_plugins.runs import Run
    from lever_plugins.stages import data_signature, load_data, soft_stage, teacher_stage

    cfg = _load_cfg(config, **{"data.path": data, "seed": seed})
    ds = load_data(cfg)
    with Run(out) as run:
        temb, tkey = teacher_stage(run, ds, cfg, data_signature(ds), log=click.echo)
        t, _ = soft_stage(run, ds, cfg, temb, tkey, log=click.echo)
        click.echo(f"targets: {t.shape[0]} rows x {t.shape[1]} labels, {t.nnz} entries -> {Path(out) / 'soft'}")


@cli.command("train")
@common
@click.option("--no-lever", is_flag=True, help="Train on the original binary targets (the base arm).")
def train_cmd(data, out, config, seed, no_lever) -> None:
    """Train the built-in OvA classifier (+LEVER unless --no-lever) and evaluate it on the test split."""
    from lever_plugins.runner import train_one

    cfg = _load_cfg(config, **{"data.path": data, "seed": seed})
    m = train_one(cfg, out, lever=not no_lever, log=click.echo)
    for key, v in m.items():
        click.echo(f"{key:<12} {100 * v:7.2f}")


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """LEVER's own warnings as one ``warning: ...`` line; everyone else's as Python prints them."""
    from lever_plugins.errors import LeverWarning

    if issubclass(category, LeverWarning):
        click.echo(f"warning: {message}", err=True)
    else:
        _python_showwarning(message, category, filename, lineno, file, line)


_python_showwarning = warnings.showwarning


def main(argv: list[str] | None = None) -> None:
    from lever_cli import wrap  # noqa: F401  (registers `wrap` and `doctor`)

    warnings.showwarning = _show_warning
    try:
        cli.main(args=argv, prog_name="lever", standalone_mode=False)
    except LeverError as exc:
        if os.environ.get("LEVER_DEBUG", "") not in ("", "0") and exc.__cause__ is not None:
            import traceback

            traceback.print_exception(exc.__cause__)
        click.echo(f"error: {exc.line()}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.UsageError as exc:  # one line, like every other user error
        where = f"{exc.ctx.command_path}: " if exc.ctx else ""
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
        click.echo(f"error: {where}{exc.format_message()}{hint}", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2 if exc.exit_code == 2 else exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 (the last resort: never a wall of text)
        sys.exit(_last_resort(exc))
    sys.exit(0)


def _last_resort(exc: Exception) -> int:
    """One line for any exception no command turned into a LeverError; returns the exit code.

    OS errors (read-only or full disk, a file where a folder goes, permissions) and running out of
    memory are the user's environment: exit 2 with what to do. Anything else is a bug in lever or a
    plugin: exit 3, never disguised as a user error; ``LEVER_DEBUG=1`` prints its traceback."""
    import os
    import traceback

    from lever_plugins.errors import BUG_EXIT_CODE, environment_error

    debug = os.environ.get("LEVER_DEBUG", "") not in ("", "0")
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    env = environment_error(exc)
    if env is not None:
        click.echo(f"error: {env.line()}", err=True)
        return env.exit_code
    what = " ".join(f"{type(exc).__name__}: {exc}".split())
    if len(what) > 300:
        what = what[:297] + "..."
    hint = "" if debug else "; run with LEVER_DEBUG=1 for the traceback"
    click.echo(f"error: internal error (a bug, not your input): {what}{hint}", err=True)
    return BUG_EXIT_CODE


if __name__ == "__main__":
    main()

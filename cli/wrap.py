"""``lever wrap`` and ``lever doctor``: run or check an upstream trainer through its adapter."""

from __future__ import annotations

import click
from lever_cli.main import _load_cfg, cli, common


@cli.command("wrap", context_settings={"ignore_unknown_options": True})
@click.argument("adapter")
@common
@click.option("--upstream", required=True, type=click.Path(), help="Your checkout of the upstream trainer.")
@click.option("--no-lever", is_flag=True, help="The base arm: original binary targets, no patches' soft values.")
@click.argument("upstream_args", nargs=-1, type=click.UNPROCESSED)
def wrap_cmd(adapter, data, out, config, seed, upstream, no_lever, upstream_args) -> None:
    """Run ADAPTER's upstream trainer with LEVER's targets (args after `--` go to the upstream)."""
    from lever_plugins.runner import train_one

    overrides = {"data.path": data, "seed": seed, "trainer.adapter": adapter, "trainer.upstream": upstream}
    if upstream_args:
        overrides["trainer.upstream_args"] = list(upstream_args)
    cfg = _load_cfg(config, **overrides)
    m = train_one(cfg, out, lever=not no_lever, log=click.echo)
    for key, v in m.items():
        click.echo(f"{key:<12} {100 * v:7.2f}")


@cli.command("doctor")
@click.argument("adapter")
@click.option("--upstream", required=True, type=click.Path(), help="The upstream checkout to check.")
def doctor_cmd(adapter, upstream) -> None:
    """Check, from the source alone, that UPSTREAM has every symbol ADAPTER patches (exit 2 if not)."""
    from lever_plugins import plugins
    from lever_plugins.errors import UpstreamError
    from lever_plugins.wrap import WrapAdapter

    obj = plugins.lookup(plugins.adapters(), adapter, "adapter", "ADAPTER").factory()
    if not isinstance(obj, WrapAdapter):  # only upstream trainers have a contract to check
        click.echo(f"{adapter}: runs in-process, no upstream to check")
        return
    report = obj.doctor(upstream)
    for line in report.lines():
        click.echo(line)
    if not report.ok:
        raise UpstreamError(
            f"{len(report.problems)} contract problem(s); first: {report.problems[0].line()}",
            where=upstream,
            fix=f"use a tested commit of {obj.upstream or adapter}, or update the adapter",
        )

"""``lever data build``: LF json.gz data sets from a label hierarchy or a query log."""

from __future__ import annotations

import click


@click.group("build")
def build_grp() -> None:
    """Build LF json.gz data sets (trn/tst/lbl.json.gz, filter files, stats.json)."""


@build_grp.command("hierarchy")
@click.option(
    "--source",
    required=True,
    help="wordnet:PATH/data.noun, wikipedia:DUMP_FOLDER (page + categorylinks SQL dumps) or jsonl:NODES.jsonl.",
)
@click.option("--depth", type=int, default=2, show_default=True, help="Ancestor levels that become labels.")
@click.option("--seed", type=int, default=13, show_default=True, help="Seed of the train/test shuffle.")
@click.option("--test-fraction", type=float, default=0.3, show_default=True)
@click.option("--out", required=True, type=click.Path(), help="New output folder.")
def hierarchy_cmd(source: str, depth: int, seed: int, test_fraction: float, out: str) -> None:
    """Documents = nodes with text and a parent; labels = their ancestors up to DEPTH levels up."""
    from lever_plugins.data.builders.hierarchy import build_hierarchy, read_source, write_built

    built = build_hierarchy(read_source(source), depth=depth, seed=seed, test_fraction=test_fraction)
    write_built(out, built)
    s = built.stats
    click.echo(
        f"wrote {out}: {s['n_trn']} train, {s['n_tst']} test documents, {s['n_labels']} labels, "
        f"{s['avg_labels_per_doc']} labels/doc, {s['labels_with_le5_trn_docs']} labels with <= 5 train docs"
    )

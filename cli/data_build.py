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


@build_grp.command("prefix-suffix")
@click.option(
    "--log", "log_path", required=True, type=click.Path(), help="Query log: 'query' or 'query<TAB>count' a line."
)
@click.option("--seed", type=int, default=13, show_default=True, help="Seed of the split and the prefix sampling.")
@click.option("--test-fraction", type=float, default=0.3, show_default=True, help="Share of distinct queries in test.")
@click.option("--min-label-freq", type=int, default=2, show_default=True, help="Least train frequency of a suffix.")
@click.option("--max-labels", type=int, default=0, show_default=True, help="Keep the most frequent suffixes (0: all).")
@click.option("--max-label-chars", type=int, default=100, show_default=True)
@click.option("--out", required=True, type=click.Path(), help="New output folder.")
def prefix_suffix_cmd(
    log_path: str, seed: int, test_fraction: float, min_label_freq: int, max_labels: int, max_label_chars: int, out: str
) -> None:
    """Query auto-completion as XC (LF-AOL-270K): prefixes are documents, word-level suffixes labels."""
    from lever_plugins.data.builders.hierarchy import write_built
    from lever_plugins.data.builders.prefix_suffix import build_prefix_suffix, read_query_log

    built, _ = build_prefix_suffix(
        read_query_log(log_path),
        seed=seed,
        test_fraction=test_fraction,
        min_label_freq=min_label_freq,
        max_labels=max_labels,
        max_label_chars=max_label_chars,
    )
    write_built(out, built)
    s = built.stats
    click.echo(
        f"wrote {out}: {s['queries']} distinct queries -> {s['n_trn']} train, {s['n_tst']} test prefixes, "
        f"{s['n_labels']} suffix labels, {s['avg_labels_per_doc']} labels/doc"
    )

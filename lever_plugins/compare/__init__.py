"""A/B comparison of two runs: paired bootstrap confidence intervals and Markdown tables."""

from lever_plugins.compare.bootstrap import DEFAULT_METRICS, bootstrap_weights, format_table, paired_bootstrap

__all__ = ["DEFAULT_METRICS", "bootstrap_weights", "format_table", "paired_bootstrap"]

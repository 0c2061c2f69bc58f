"""Data-set builders: LF json.gz folders from a label hierarchy (WordNet, Wikipedia categories) or a query log."""

from lever_plugins.data.builders.hierarchy import Built, Node, build_hierarchy, write_built

__all__ = ["Built", "Node", "build_hierarchy", "write_built"]

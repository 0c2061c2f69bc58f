"""LEVER for CascadeXML: a third-party adapter distribution (``lever-cascadexml``).

CascadeXML (Kharbanda et al., NeurIPS 2022) trains a transformer with one classifier per level of a
label tree and keeps only label indices. ``lever wrap cascadexml`` writes an arm's data in its files,
launches its ``src/main.py`` unmodified and patches, in that process: the dataset (blended soft
targets for the leaf level, hard+soft support for the coarse levels), the leaf loss (BCE-with-logits
against the blended target), and shims for its environment traps. See :mod:`lever_cascadexml.shims`.
"""

__version__ = "0.1.0"

"""LEVER for Renée: a third-party adapter distribution (``lever-renee``).

Renée's code is never shipped here (its licence forbids it): point ``--upstream`` at your own
checkout. The adapter writes Renée's input files, patches four of its symbols at run time (plus two
pyxclib functions) and reads its score matrix back.
"""

__version__ = "0.1.0"

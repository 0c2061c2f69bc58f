"""LEVER for napkinXC: a third-party adapter distribution (``lever-napkinxc``).

napkinXC learns from binary labels only, so LEVER reaches it as a binarised augmented matrix:
the (N + L) rows of the blended target, a pair positive when its target is >= a threshold.
"""

__version__ = "0.1.0"

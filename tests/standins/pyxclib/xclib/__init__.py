"""Test stand-in for pyxclib (``xclib``): the two functions Renée and the renee adapter use, written here
from their documented behaviour (pyxclib is not on PyPI, so CI has no real one)."""

"""Entry point of group ``lever``: registers the ``elias`` adapter (imports numpy/scipy only)."""

from __future__ import annotations

from lever_elias.adapter import EliasAdapter
from lever_plugins import hookimpl


@hookimpl
def lever_register_adapters(register):
    register("elias", EliasAdapter)

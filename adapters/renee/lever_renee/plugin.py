"""Entry point of group ``lever``: registers the ``renee`` adapter (imports numpy/scipy only)."""

from __future__ import annotations

from lever_plugins import hookimpl
from lever_renee.adapter import ReneeAdapter


@hookimpl
def lever_register_adapters(register):
    register("renee", ReneeAdapter)
